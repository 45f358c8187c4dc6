"""Drive a Strategy against an evaluate callable, resumably, and write the search artifacts.

The runner knows objective *names*, never how they are computed: `evaluate(arch)` returns a
dict holding the objective keys plus any extra columns (params, macs, ...), which are carried
into every artifact untouched.

Resume protocol: after every batch, `trials.csv` and then `strategy_state.json` are written
atomically; finished trials of an interrupted batch are flushed too. On restart the strategy
state (taken at the last batch boundary) is reloaded and asked again; since a strategy gives
the same asks from the same state, archs whose rows are already in `trials.csv` are taken
from there instead of being evaluated again, and the run ends exactly as an uninterrupted
one would.

Evaluation goes through an *executor* (as pymoo's elementwise runner): an object whose
`imap(archs)` yields one result dict per arch, in the order given. The default,
`SequentialExecutor(evaluate)`, calls `evaluate` lazily one arch at a time, so the runner
tells each result as soon as it exists and flushes finished trials of an interrupted batch.
A parallel executor (`nas.distributed.RayExecutor`) may evaluate a batch concurrently, but
must still yield in ask order, so the strategy is told exactly what a sequential run tells
it. Archs already in the resume cache (rows of an interrupted batch) are never sent to the
executor. A result may carry `_seconds` (evaluation time measured where it ran); otherwise
the runner times the wait for it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from nas.errors import UserError
from nas.io import atomic_write_bytes, atomic_write_json, atomic_write_text, json_hash
from nas.search.pareto import best_under_budget, hypervolume_2d, non_dominated_mask
from nas.search.strategy import Strategy
from nas.space import Arch, SearchSpace

TRIALS = "trials.csv"
STATE = "strategy_state.json"
_RESERVED = ("trial", "arch_id", "arch", "seconds")
_HV_RULE = "1.1 x the worst feasible value of each objective over all trials"


# ---------------------------------------------------------------------- rows and CSV
def _scalar(v: Any) -> Any:
    """numpy scalars -> Python, so rows go to CSV and JSON unchanged."""
    return v.item() if isinstance(v, np.generic) else v


def _make_row(trial: int, arch: Arch, result: dict, seconds: float,
              objectives: Sequence[str]) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise TypeError(f"evaluate() must return a dict, got {type(result).__name__}")
    missing = [k for k in objectives if k not in result]
    if missing:
        raise ValueError(f"evaluate() returned no {', '.join(missing)} "
                         f"(got {', '.join(map(str, result)) or 'nothing'})")
    row: dict[str, Any] = {"trial": trial, "arch_id": arch.arch_id, "arch": arch.to_string()}
    for k in objectives:
        row[k] = _scalar(result[k])
    for k, v in result.items():  # keys starting with "_" are signals, not columns
        if k not in row and k not in _RESERVED and not str(k).startswith("_"):
            row[k] = _scalar(v)
    row["seconds"] = round(seconds, 6)
    return row


def _objective_values(row: dict, objectives: Sequence[str]) -> tuple[float, ...]:
    out = []
    for k in objectives:
        v = row.get(k)
        try:
            out.append(float("nan") if v is None else float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return tuple(out)


def _is_feasible(row: dict, objectives: Sequence[str]) -> bool:
    """Feasible unless evaluate said `feasible: False` or an objective is not finite."""
    flag = row.get("feasible", True)
    if flag in (False, "False", "false", 0):
        return False
    return all(math.isfinite(v) for v in _objective_values(row, objectives))


def _columns(rows: Iterable[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, None)
    if "seconds" in cols:  # keep the timing column last even when later rows add metrics
        del cols["seconds"]
        cols["seconds"] = None
    return list(cols)


def _csv_line(values: Iterable[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    return _csv_line(columns) + "".join(_csv_line(r.get(k) for k in columns) for r in rows)


class _TrialsWriter:
    """Rewrites trials.csv atomically, formatting only rows it has not formatted before
    (a full rewrite per batch would cost O(n^2) formatting over a long search)."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        self.lines: list[str] = []
        self.rows: list[dict] = []  # the rows `lines` were formatted from

    def write(self, rows: list[dict]) -> None:
        columns = _columns(rows)
        n_same = 0
        if columns == self.columns:
            while (n_same < min(len(rows), len(self.rows))
                   and rows[n_same] is self.rows[n_same]):
                n_same += 1
        self.columns, self.rows = columns, list(rows)
        self.lines = self.lines[:n_same] + [_csv_line(r.get(k) for k in columns)
                                            for r in rows[n_same:]]
        atomic_write_text(self.path, _csv_line(columns) + "".join(self.lines))


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_trials(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a trials.csv with numbers parsed back (floats round-trip exactly)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read trials ({exc})", source=str(path)) from None
    out = []
    for i, r in enumerate(rows):
        if not r.get("arch_id") or not r.get("arch"):
            raise UserError(f"row {i + 2} has no arch_id/arch", source=str(path))
        out.append({k: (v if k in ("arch_id", "arch") else _parse_cell(v or ""))
                    for k, v in r.items() if k is not None})
    return out


# ---------------------------------------------------------------------- executors
class Executor(Protocol):
    """Evaluates archs for the runner: `imap(archs)` yields one result dict per arch, in
    the order of `archs` (whatever order they were computed in)."""

    def imap(self, archs: Sequence[Arch]) -> Iterator[dict]: ...


class SequentialExecutor:
    """The default executor: `evaluate(arch)` one arch at a time, lazily, in this process."""

    def __init__(self, evaluate: Callable[[Arch], dict]):
        self.evaluate = evaluate

    def imap(self, archs: Sequence[Arch]) -> Iterator[dict]:
        for arch in archs:
            yield self.evaluate(arch)


def _to_send(archs: Sequence[Arch], cache: dict[str, dict]) -> list[Arch]:
    """The archs of a batch the executor must evaluate: those not served by the resume
    cache (each cached row serves the first ask of its arch, as `cache.pop` does)."""
    cached, send = set(cache), []
    for arch in archs:
        if arch.arch_id in cached:
            cached.discard(arch.arch_id)
        else:
            send.append(arch)
    return send


# ---------------------------------------------------------------------- the loop
def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _meta_hash(space: SearchSpace, strategy: Strategy, objectives: Sequence[str],
               meta: dict | None) -> str:
    return json_hash({"meta": meta or {}, "strategy": strategy.name,
                      "objectives": list(objectives), "space": space.space_hash()})


def _restore(out_dir: Path, strategy: Strategy, meta_hash: str, resume: bool,
             log: Callable[[str], Any], restart_if_changed: bool = False
             ) -> tuple[list[dict], dict[str, dict]]:
    """Rows already told, and rows of an interrupted batch keyed by arch_id."""
    trials, state = out_dir / TRIALS, out_dir / STATE
    if not resume:
        for p in (trials, state):
            p.unlink(missing_ok=True)
        return [], {}
    if not state.exists():
        if trials.exists() and read_trials(trials):
            raise UserError("holds trials but no strategy_state.json, so the search cannot "
                            "resume; use another output folder or start afresh",
                            source=str(trials))
        return [], {}
    try:
        st = json.loads(state.read_text())
        n_told = int(st["n_told"])
        saved_hash = st["meta_hash"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"unreadable search state ({exc})", source=str(state)) from None
    if saved_hash != meta_hash and restart_if_changed:
        log(f"search: {out_dir} holds a search with other settings (another table, budgets "
            "or strategy); starting it afresh (evaluated errors are cached elsewhere)")
        return [], {}
    if saved_hash != meta_hash:
        raise UserError(f"was written by a search with other settings (meta hash {saved_hash} "
                        f"!= {meta_hash}); use another output folder or start afresh",
                        source=str(state))
    rows = read_trials(trials) if trials.exists() else []
    if len(rows) < n_told:
        raise UserError(f"has {len(rows)} trials but the saved state has told {n_told}",
                        source=str(trials))
    strategy.load_state_dict(st["strategy_state"])
    cache = {r["arch_id"]: r for r in rows[n_told:]}
    log(f"search: resuming in {out_dir} after {n_told} trials"
        + (f" ({len(cache)} more already evaluated)" if cache else ""))
    return rows[:n_told], cache


def run_search(space: SearchSpace, strategy: Strategy,
               evaluate: Callable[[Arch], dict] | None, *,
               evals: int, budgets: Sequence[float], out_dir: str | Path,
               objectives: Sequence[str] = ("error_deg", "latency_ms"), batch: int = 8,
               log: Callable[[str], Any] = print, meta: dict | None = None,
               resume: bool = True, hv_ref: Sequence[float] | None = None,
               progress_every: float = 5.0, restart_if_changed: bool = False,
               hv_rule: str | None = None, executor: Executor | None = None
               ) -> dict[str, Any]:
    """Search until `evals` trials exist in `out_dir`, then write the Pareto artifacts.

    `objectives` are two minimised keys of evaluate()'s dict: error first, latency second
    (budgets apply to the second). A trial is infeasible when evaluate returns
    `feasible: False` or a non-finite objective; it is kept in trials.csv but never on the
    front. A result with `_reused: True` came from the evaluator's own cache and is not
    counted as evaluated now (keys starting with "_" are never stored). `resume=False` discards an earlier run in `out_dir`; `restart_if_changed` does
    so only when that run had other settings (instead of refusing). `executor` evaluates
    each batch (default: `SequentialExecutor(evaluate)`; `evaluate` may then be None); it
    yields results in ask order, so any executor gives the same trials. Returns
    {"front", "best_per_budget", "summary"} as written to disk, plus "meta" and
    "resumed_complete" (True when `out_dir` already held all `evals` trials).
    """
    objectives = tuple(objectives)
    if len(objectives) != 2:
        raise ValueError(f"run_search needs exactly two objectives (error, latency), "
                         f"got {objectives}")
    if batch < 1:
        raise UserError(f"expected an integer >= 1, got {batch!r}", field="search.batch")
    if evals < 0:
        raise UserError(f"expected an integer >= 0, got {evals!r}", field="search.evals")
    if executor is None:
        if evaluate is None:
            raise ValueError("run_search needs an evaluate callable or an executor")
        executor = SequentialExecutor(evaluate)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mhash = _meta_hash(space, strategy, objectives, meta)
    strategy.attach(out_dir, budgets)
    rows, cache = _restore(out_dir, strategy, mhash, resume, log, restart_if_changed)
    writer = _TrialsWriter(out_dir / TRIALS)
    if not (out_dir / STATE).exists():  # so an interrupted first batch can resume too
        _save_state(out_dir, mhash, strategy, 0, objectives, meta)

    t_start = time.perf_counter()
    n_new, last_log, last_write = 0, t_start, t_start
    done = len(rows)
    resumed_complete = done > 0 and done >= evals  # nothing left to do but rewrite outputs
    while done < evals:
        archs = strategy.ask(min(batch, evals - done))
        if not archs:
            log(f"search: strategy {strategy.name} has no unseen archs left; "
                f"stopping at {done} trials")
            break
        results = executor.imap(_to_send(archs, cache))
        try:
            for arch in archs:
                row = cache.pop(arch.arch_id, None)
                if row is None:
                    t0 = time.perf_counter()
                    result = next(results, None)
                    if result is None:
                        raise RuntimeError(f"executor {type(executor).__name__} yielded fewer "
                                           "results than the archs it was given")
                    seconds = result.get("_seconds", time.perf_counter() - t0)
                    row = _make_row(done, arch, result, seconds, objectives)
                    n_new += not result.get("_reused", False)  # served from a cache: not new
                row["trial"] = done
                rows.append(row)
                done += 1
                strategy.tell(arch, _objective_values(row, objectives),
                              _is_feasible(row, objectives))
                now = time.perf_counter()
                if now - last_write >= 2.0:
                    _write_trials(writer, rows, cache)
                    last_write = now
                if now - last_log >= progress_every:
                    last_log = now
                    log(_progress(rows, done, evals, n_new, now - t_start, objectives))
        except BaseException:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # a generator executor stops its outstanding work now
            _write_trials(writer, rows, cache)
            if done < evals:
                log(f"search: interrupted after {done}/{evals} trials; "
                    f"run again with the same settings to resume")
            raise
        _write_trials(writer, rows, cache)
        last_write = time.perf_counter()
        _save_state(out_dir, mhash, strategy, done, objectives, meta)
    if cache:
        log(f"search: {len(cache)} results of the interrupted run were not asked again "
            f"and are dropped")
        cache = {}
        _write_trials(writer, rows, cache)
    elapsed = time.perf_counter() - t_start
    result = write_outputs(out_dir, rows, budgets=budgets, objectives=objectives, meta=meta,
                           hv_ref=hv_ref, hv_rule=hv_rule,
                           extra={"strategy": strategy.name, "meta_hash": mhash,
                                  "evals": evals, "evaluated_this_run": n_new,
                                  "seconds_this_run": round(elapsed, 3)})
    result["meta"] = meta or {}
    result["resumed_complete"] = resumed_complete
    s = result["summary"]
    log(f"search: done, {s['n_trials']} trials ({n_new} evaluated now) in {elapsed:.1f} s; "
        f"front of {s['front_size']}; outputs in {out_dir}")
    return result


def _save_state(out_dir: Path, mhash: str, strategy: Strategy, n_told: int,
                objectives: Sequence[str], meta: dict | None) -> None:
    state = {"meta_hash": mhash, "strategy": strategy.name, "n_told": n_told,
             "objectives": list(objectives), "meta": meta or {},
             "strategy_state": strategy.state_dict()}
    # compact: the state grows with the archive and is rewritten after every batch
    atomic_write_text(out_dir / STATE, json.dumps(state, separators=(",", ":"),
                                                  default=str) + "\n")


def _write_trials(writer: _TrialsWriter, rows: list[dict], cache: dict[str, dict]) -> None:
    """All finished trials, plus not-yet-re-asked rows of an interrupted batch (so a second
    interruption during resume loses nothing)."""
    writer.write(rows + list(cache.values()))


def _progress(rows: list[dict], done: int, evals: int, n_new: int, elapsed: float,
              objectives: Sequence[str]) -> str:
    rate = n_new / elapsed if elapsed > 0 else float("nan")
    eta = (evals - done) / rate if rate and rate > 0 else float("inf")
    F = _feasible_matrix(rows, objectives)[1]
    front = int(non_dominated_mask(F).sum()) if len(F) else 0
    best = f", best {objectives[0]} {F[:, 0].min():.3f}" if len(F) else ""
    return (f"search: {done}/{evals} trials, {rate:.2f}/s, ETA {_fmt_eta(eta)}, "
            f"front {front}{best}")


# ---------------------------------------------------------------------- outputs
def _feasible_matrix(rows: list[dict], objectives: Sequence[str]
                     ) -> tuple[list[dict], np.ndarray]:
    feas = [r for r in rows if _is_feasible(r, objectives)]
    F = np.array([_objective_values(r, objectives) for r in feas], dtype=float).reshape(-1, 2)
    return feas, F


def _entry(row: dict) -> dict[str, Any]:
    """A front / budget entry: identity first, then every metric, then the trial number."""
    out = {"arch_id": row["arch_id"], "arch": row["arch"]}
    out.update({k: v for k, v in row.items() if k not in _RESERVED})
    out["trial"] = row["trial"]
    return out


def write_outputs(out_dir: str | Path, rows: list[dict], *, budgets: Sequence[float],
                  objectives: Sequence[str] = ("error_deg", "latency_ms"),
                  meta: dict | None = None, hv_ref: Sequence[float] | None = None,
                  hv_rule: str | None = None, extra: dict | None = None) -> dict[str, Any]:
    """pareto.{json,csv,png}, best_per_budget.json and summary.json from trial rows."""
    out_dir = Path(out_dir)
    err_key, lat_key = objectives
    feas, F = _feasible_matrix(rows, objectives)
    idx = np.flatnonzero(non_dominated_mask(F)) if len(F) else np.zeros(0, dtype=int)
    idx = sorted(idx, key=lambda i: (F[i, 1], F[i, 0]))
    front = [_entry(feas[i]) for i in idx]

    best: list[dict[str, Any]] = []
    picks = best_under_budget(F[:, 0], F[:, 1], budgets)
    for b in budgets:
        i = picks[b]
        if i is None:
            fastest = f"{F[:, 1].min():g}" if len(F) else "none"
            best.append({"budget_ms": b, "arch_id": None,
                         "reason": f"no feasible trial has {lat_key} <= {b:g} "
                                   f"(fastest: {fastest})"})
        else:
            best.append({"budget_ms": b, **_entry(feas[i])})

    if hv_ref is not None:
        ref, rule = [float(v) for v in hv_ref], hv_rule or "given"
    elif len(F):
        ref, rule = [float(v) for v in 1.1 * F.max(axis=0)], _HV_RULE
    else:
        ref, rule = None, _HV_RULE
    hv = hypervolume_2d(F, ref) if ref is not None else 0.0
    summary = {"n_trials": len(rows), "n_feasible": len(feas), "front_size": len(front),
               "objectives": list(objectives), "budgets_ms": list(budgets),
               "hypervolume": {"value": hv,
                               "reference": (dict(zip(objectives, ref)) if ref else None),
                               "rule": rule},
               "meta": meta or {}}
    summary.update(extra or {})

    cols = _columns(front) if front else ["arch_id", "arch", *objectives, "trial"]
    atomic_write_json(out_dir / "pareto.json", front)
    atomic_write_text(out_dir / "pareto.csv", _csv_text(front, cols))
    atomic_write_json(out_dir / "best_per_budget.json", best)
    atomic_write_json(out_dir / "summary.json", summary)
    _plot(out_dir / "pareto.png", F, front, best, objectives, meta or {})
    return {"front": front, "best_per_budget": best, "summary": summary}


def replot(out_dir: str | Path, markers: Sequence[dict],
           retrained: Sequence[dict] = ()) -> Path:
    """Redraw a finished search's pareto.png with extra labelled points (e.g. hand-designed
    baselines: dicts with `name` and the two objective keys) and, optionally, the front's
    subnets re-measured another way (e.g. trained from scratch, timed end to end)."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    objectives = summary["objectives"]
    _, F = _feasible_matrix(read_trials(out_dir / "trials.csv"), objectives)
    front = json.loads((out_dir / "pareto.json").read_text())
    best = json.loads((out_dir / "best_per_budget.json").read_text())
    path = out_dir / "pareto.png"
    _plot(path, F, front, best, objectives, summary.get("meta") or {}, markers, retrained)
    return path


def _plot(path: Path, F: np.ndarray, front: list[dict], best: list[dict],
          objectives: Sequence[str], meta: dict, markers: Sequence[dict] = (),
          retrained: Sequence[dict] = ()) -> None:
    """Every trial light, the front as a step line, budgets dashed with their pick circled,
    `markers` (baselines) as labelled crosses. Uses the Agg canvas directly: no pyplot
    state, no switch of the caller's backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    err_key, lat_key = objectives
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(F):
        ax.scatter(F[:, 1], F[:, 0], s=9, color="0.78", label=f"trials ({len(F)})", zorder=1)
    if front:
        fl = [e[lat_key] for e in front]
        fe = [e[err_key] for e in front]
        ax.step(fl, fe, where="post", color="C0", lw=1.4, zorder=2)
        ax.plot(fl, fe, "o", color="C0", ms=4.5, label=f"Pareto front ({len(front)})",
                zorder=3)
    for j, b in enumerate(best):
        color = f"C{(j % 9) + 1}"
        ax.axvline(b["budget_ms"], ls="--", lw=1, color=color, zorder=1)
        if b.get("arch_id") is None:
            continue
        x, y = b[lat_key], b[err_key]
        ax.scatter([x], [y], s=170, facecolors="none", edgecolors=color, linewidths=1.8,
                   zorder=4)
        ax.annotate(f"\u2264 {b['budget_ms']:g} ms: {y:.2f}\u00b0\n{b['arch_id']}", (x, y),
                    xytext=(8, 8), textcoords="offset points", fontsize=7, color=color,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                          "alpha": 0.85}, zorder=5)
    if retrained:
        pts = sorted((m[lat_key], m[err_key]) for m in retrained)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color="C2", ms=4, lw=1,
                mfc="none", label="front subnets trained from scratch (measured)", zorder=3)
    for j, m in enumerate(markers):
        ax.plot([m[lat_key]], [m[err_key]], "X", color="C3", ms=7,
                label="hand-designed baselines" if j == 0 else None, zorder=4)
        ax.annotate(m["name"], (m[lat_key], m[err_key]), xytext=(5, -9),
                    textcoords="offset points", fontsize=6.5, color="C3", zorder=5)
    if markers:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)" if lat_key == "latency_ms" else lat_key)
    ax.set_ylabel("angular error (deg)" if err_key == "error_deg" else err_key)
    where = [f"{k} {meta[k]}" for k in ("space", "device") if meta.get(k)]
    ax.set_title("Pareto front" + (": " + ", ".join(where) if where else ""))
    ax.grid(alpha=0.3)
    if len(F):
        ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def load_front(out_dir: str | Path) -> list[dict[str, Any]]:
    """The Pareto front a finished search wrote (sorted by latency)."""
    path = Path(out_dir) / "pareto.json"
    if not path.is_file():
        raise UserError("file not found (expected the pareto.json of a finished search)",
                        source=str(path))
    try:
        front = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable Pareto front ({exc})", source=str(path)) from None
    if not isinstance(front, list):
        raise UserError("expected a list of front entries", source=str(path))
    return front
