"""The search loop: drive a Strategy against an executor until `evals` trials exist,
resumably, then hand the trial rows to the outputs.

The loop knows objective *names*, never how they are computed: `evaluate(arch)` (or the
executor) returns a dict holding the objective keys plus any extra columns (params, macs,
...), which are carried into every artifact untouched.

Resume protocol: after every batch, `trials.csv` and then `strategy_state.json` are written
atomically; finished trials of an interrupted batch are flushed too. On restart the strategy
state (taken at the last batch boundary) is reloaded and asked again; since a strategy gives
the same asks from the same state, archs whose rows are already in `trials.csv` are taken
from there instead of being evaluated again (never sent to the executor), and the run ends
exactly as an uninterrupted one would. A result without `_seconds` is timed by the wait for
it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas.errors import UserError
from nas.gaze.tasks import get_task
from nas.io import atomic_write_text, json_hash
from nas.search.devices import LATENCY, write_device_outputs
from nas.search.executors import Executor, SequentialExecutor
from nas.search.outputs import write_outputs
from nas.search.pareto import non_dominated_mask
from nas.search.strategy import Strategy
from nas.search.trials import (TRIALS, TrialsWriter, feasible_matrix, is_feasible, make_row,
                               objective_values, read_trials)
from nas.space import Arch, SearchSpace

STATE = "strategy_state.json"


def run_search(space: SearchSpace, strategy: Strategy,
               evaluate: Callable[[Arch], dict] | None, *,
               evals: int, budgets: Sequence[float] | Mapping[str, Sequence[float]],
               out_dir: str | Path,
               objectives: Sequence[str] | None = None, batch: int = 8,
               log: Callable[[str], Any] = print, meta: dict | None = None,
               resume: bool = True, hv_ref: Sequence[float] | None = None,
               progress_every: float = 5.0, restart_if_changed: bool = False,
               hv_rule: str | None = None, executor: Executor | None = None
               ) -> dict[str, Any]:
    """Search until `evals` trials exist in `out_dir`, then write the Pareto artifacts.

    `objectives` are minimised keys of evaluate()'s dict: error first, then latency (budgets
    apply to it); default the space's task's error key (`error_deg`, pog2d `error_cm`) and
    `latency_ms`. Several latencies (one per device, `nas.search.devices`) make a
    k-objective search: `budgets` then maps each latency key to its budgets, and the outputs
    are each device's front and picks plus the joint Pareto set (`write_device_outputs`).
    A trial is infeasible when evaluate returns `feasible: False` or a non-finite objective;
    it is kept in trials.csv but never on the front. A result with `_reused: True` came
    from the evaluator's own cache and is not counted as evaluated now (keys starting with
    "_" are never stored). `resume=False` discards an earlier run in `out_dir`;
    `restart_if_changed` does so only when that run had other settings (instead of
    refusing). `executor` evaluates each batch (default:
    `SequentialExecutor(evaluate)`; `evaluate` may then be None); it yields results in ask
    order, so any executor gives the same trials. Returns {"front", "best_per_budget",
    "summary"} as written to disk, plus "meta" and "resumed_complete" (True when `out_dir`
    already held all `evals` trials).
    """
    task = get_task(space.task)
    objectives = tuple(objectives or (task.error_key, LATENCY))
    by_objective = budgets_by_objective(objectives, budgets)
    if len(objectives) == 2 and isinstance(budgets, Mapping):
        budgets = by_objective[objectives[1]]
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
    strategy.set_objectives(objectives, by_objective)
    strategy.attach(out_dir, budgets if len(objectives) == 2 else by_objective[objectives[1]])
    rows, cache = _restore(out_dir, strategy, mhash, resume, log, restart_if_changed)
    writer = TrialsWriter(out_dir / TRIALS)
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
                    row = make_row(done, arch, result, seconds, objectives)
                    n_new += not result.get("_reused", False)  # served from a cache: not new
                row["trial"] = done
                rows.append(row)
                done += 1
                strategy.tell(arch, objective_values(row, objectives),
                              is_feasible(row, objectives))
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
    write = write_outputs if len(objectives) == 2 else write_device_outputs
    result = write(out_dir, rows, budgets=budgets if len(objectives) == 2 else by_objective,
                   objectives=objectives, meta=meta, hv_ref=hv_ref, hv_rule=hv_rule, task=task,
                   extra={"strategy": strategy.name, "meta_hash": mhash,
                          "evals": evals, "evaluated_this_run": n_new,
                          "seconds_this_run": round(elapsed, 3)})
    result["meta"] = meta or {}
    result["resumed_complete"] = resumed_complete
    s = result["summary"]
    log(f"search: done, {s['n_trials']} trials ({n_new} evaluated now) in {elapsed:.1f} s; "
        f"front of {s['front_size']}; outputs in {out_dir}")
    return result


def budgets_by_objective(objectives: Sequence[str],
                         budgets: Sequence[float] | Mapping[str, Sequence[float]]
                         ) -> dict[str, list[float]]:
    """Each latency objective's budgets: a plain sequence belongs to the one latency of a
    two-objective search; with several latencies a mapping must say whose is whose."""
    if len(objectives) < 2:
        raise ValueError(f"run_search needs an error and at least one latency objective, "
                         f"got {tuple(objectives)}")
    lat = list(objectives[1:])
    if not isinstance(budgets, Mapping):
        if len(lat) > 1:
            raise ValueError(f"with several latency objectives ({', '.join(lat)}) budgets must "
                             "map each of them to its budgets")
        return {lat[0]: [float(b) for b in budgets]}
    unknown = [k for k in budgets if k not in lat]
    if unknown:
        raise ValueError(f"budgets for {', '.join(map(str, unknown))}, which is not one of the "
                         f"latency objectives {', '.join(lat)}")
    return {k: [float(b) for b in budgets.get(k, ())] for k in lat}


# ---------------------------------------------------------------------- resume
def _meta_hash(space: SearchSpace, strategy: Strategy, objectives: Sequence[str],
               meta: dict | None) -> str:
    """What a resumed search must share with the saved one (space, strategy, objectives,
    the caller's meta: table, budgets, ...)."""
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


def _save_state(out_dir: Path, mhash: str, strategy: Strategy, n_told: int,
                objectives: Sequence[str], meta: dict | None) -> None:
    state = {"meta_hash": mhash, "strategy": strategy.name, "n_told": n_told,
             "objectives": list(objectives), "meta": meta or {},
             "strategy_state": strategy.state_dict()}
    # compact: the state grows with the archive and is rewritten after every batch
    atomic_write_text(out_dir / STATE, json.dumps(state, separators=(",", ":"),
                                                  default=str) + "\n")


def _write_trials(writer: TrialsWriter, rows: list[dict], cache: dict[str, dict]) -> None:
    """All finished trials, plus not-yet-re-asked rows of an interrupted batch (so a second
    interruption during resume loses nothing)."""
    writer.write(rows + list(cache.values()))


# ---------------------------------------------------------------------- progress
def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _progress(rows: list[dict], done: int, evals: int, n_new: int, elapsed: float,
              objectives: Sequence[str]) -> str:
    rate = n_new / elapsed if elapsed > 0 else float("nan")
    eta = (evals - done) / rate if rate and rate > 0 else float("inf")
    F = feasible_matrix(rows, objectives)[1]
    front = int(non_dominated_mask(F).sum()) if len(F) else 0
    best = f", best {objectives[0]} {F[:, 0].min():.3f}" if len(F) else ""
    return (f"search: {done}/{evals} trials, {rate:.2f}/s, ETA {_fmt_eta(eta)}, "
            f"front {front}{best}")
