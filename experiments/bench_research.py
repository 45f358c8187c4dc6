"""Re-search in seconds, without retraining (issue 7): is a warm-started re-search of a
trained run on a NEW latency table as good as a fresh search, and fast enough?

In one invocation, on this machine:

  re-search  what a user runs when the hardware changes, timed end to end as one process:
             `gaze-nas search --run RUN --lut NEW --warm-start --screen S --evals E --export
             DIR --json` (the search, then every distinct best-per-budget pick exported);
             wall clock from the start to the last exported file, split into startup + data
             load, search (evaluator build, warm-start re-ranking, loop, outputs) and export.
  fresh      the reference: `gaze-nas search --no-warm-start --evals 160` on the same table,
             strategy, seed and (automatic) budgets, with a COLD error cache.

Both run on copies of the run folder under `--out/work/` (supernet.pt + run_config.json,
plus eval_cache.jsonl for the re-search only), so the user's run is never modified and a
rerun measures the same thing. Both hypervolumes use the run's fixed reference point
(`nas.pipeline.hv_reference`, rule `HV_RULE`) over (error, latency_ms on NEW). Also
reported: the hypervolume of the cached errors alone re-ranked on NEW (zero evaluations),
and whether the cached errors equal those the cold search measured anew (same subnets).

Criteria (issue 7, "Done when"): re-search wall time <= 60 s and hypervolume >= 99 % of
the fresh 160-evaluation search's. Figures go to `--out/bench_research.json`.

    python experiments/bench_research.py                       # full size (~3-5 min here)
    python experiments/bench_research.py --evals 16 --fresh-evals 16   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nas.io import atomic_write_json  # noqa: E402

DEFAULT_LUT = "runs/bench_adapt/gaze_eye-ed8ca21075aa9253/torch.yaml"
ISSUE_FRESH_EVALS = 160
MAX_WALL_S = 60.0
MIN_HV_RATIO = 0.99
_DONE = re.compile(r"search: done, (\d+) trials \((\d+) evaluated now\) in ([\d.]+) s")


def cli_command() -> list[str]:
    """The `gaze-nas` a user types: the console script next to this interpreter if there is
    one, else the same module run by this interpreter."""
    script = Path(sys.executable).parent / "gaze-nas"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nas.cli"]


def run_cli(args: list[str], log_path: Path, ok: tuple[int, ...] = (0,)) -> tuple[str, float]:
    """Run `gaze-nas ARGS`; stdout returned, stderr kept in `log_path`; wall seconds."""
    t0 = time.perf_counter()
    p = subprocess.run(cli_command() + args, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(p.stderr)
    if p.returncode not in ok:
        tail = "\n".join(p.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"bench_research: `gaze-nas {' '.join(args)}` exited "
                         f"{p.returncode}:\n{tail}")
    return p.stdout, dt


def copy_run(run_dir: Path, dest: Path, *, with_cache: bool, threads: int | None) -> Path:
    """A run folder holding only what `gaze-nas search/export` read: the supernet, the run
    config (search.threads overridden if asked) and, if `with_cache`, the error cache."""
    dest.mkdir(parents=True)
    shutil.copyfile(run_dir / "supernet.pt", dest / "supernet.pt")
    cfg = json.loads((run_dir / "run_config.json").read_text())
    if threads:
        cfg["search"]["threads"] = threads
    (dest / "run_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if with_cache and (run_dir / "eval_cache.jsonl").is_file():
        shutil.copyfile(run_dir / "eval_cache.jsonl", dest / "eval_cache.jsonl")
    return dest


def front_hv(front: list[dict], ref: tuple[float, float], err_key: str) -> float:
    """Hypervolume of (error, latency_ms) points against the fixed reference; `err_key` is
    the task's error key (`error_deg`, pog2d `error_cm`)."""
    from nas.search import hypervolume_2d

    F = np.array([[float(p[err_key]), float(p["latency_ms"])] for p in front],
                 dtype=float).reshape(-1, 2)
    return hypervolume_2d(F[np.isfinite(F).all(axis=1)], ref)


def distinct_picks(best_per_budget: list[dict]) -> list[str]:
    """arch_ids the budgets picked, each once, in budget order."""
    return list(dict.fromkeys(b["arch_id"] for b in best_per_budget if b.get("arch_id")))


def split_search_log(stderr: str) -> dict[str, float | None]:
    """The search loop's own seconds, from its closing log line (None if absent)."""
    m = _DONE.search(stderr)
    return {"loop_s": float(m.group(3)) if m else None}


def research(warm: Path, lut: Path, out: Path, logs: Path,
             a: argparse.Namespace) -> dict[str, Any]:
    """The timed part: one `gaze-nas search --export` process (re-search, then each
    distinct pick exported in the same process)."""
    common = ["--lut", str(lut), "--evals", str(a.evals), "--seed", str(a.seed),
              "--strategy", a.strategy, "--screen", str(a.screen), "--json"]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    stdout, search_wall = run_cli(["search", "--run", str(warm), "--warm-start", "--out",
                                   str(out / "search"), "--export", str(out / "export"),
                                   *common], logs / "research-search.log", ok=(0, 3))
    js = json.loads(stdout)
    exports = []
    for e in js["exported"]:
        d = Path(e["path"])
        missing = [f for f in ("model.onnx", "model.pt", "card.json") if not (d / f).is_file()]
        if missing:
            raise SystemExit(f"bench_research: export of {e['arch_id']} wrote no {missing}")
        exports.append({"arch_id": e["arch_id"]})
    if {e["arch_id"] for e in exports} != set(distinct_picks(js["best_per_budget"])):
        raise SystemExit("bench_research: the exports are not the budgets' picks")
    wall = time.perf_counter() - t0
    loop = split_search_log((logs / "research-search.log").read_text())["loop_s"]
    seeds = json.loads((out / "search" / "seeds.json").read_text())["seeds"]
    search_s = round(js["seconds"] - js["export_seconds"], 2)
    return {
        "wall_s": round(wall, 2),
        "split_s": {"startup_and_data_load": round(search_wall - js["seconds"], 2),
                    "search": search_s,
                    "search_loop": loop,
                    "search_evaluator_warmstart_outputs": (round(search_s - loop, 2)
                                                           if loop is not None else None),
                    "export": js["export_seconds"]},
        "search_process_s": round(search_wall, 2), "exports": exports, "screen": a.screen,
        "n_trials": js["n_trials"], "evaluated_now": js["evaluated_now"],
        "reused": js["n_trials"] - js["evaluated_now"], "warm_start_seeds": len(seeds),
        "front_size": js["front_size"], "hv_reported": js["hypervolume"],
        "best_per_budget": js["best_per_budget"], "unmet_budgets_ms": js["unmet_budgets_ms"],
        "distinct_picks": len(exports), "loadavg_1min": [load0, os.getloadavg()[0]],
    }


def fresh(cold: Path, lut: Path, out: Path, logs: Path,
          a: argparse.Namespace) -> dict[str, Any]:
    """The reference: a cold-cache search without warm start, same table/strategy/seed."""
    load0 = os.getloadavg()[0]
    stdout, wall = run_cli(["search", "--run", str(cold), "--lut", str(lut), "--no-warm-start",
                            "--evals", str(a.fresh_evals), "--seed", str(a.seed), "--strategy",
                            a.strategy, "--out", str(out), "--json"], logs / "fresh-search.log",
                           ok=(0, 3))
    js = json.loads(stdout)
    return {"wall_s": round(wall, 2), "n_trials": js["n_trials"],
            "evaluated_now": js["evaluated_now"], "front_size": js["front_size"],
            "hv_reported": js["hypervolume"], "best_per_budget": js["best_per_budget"],
            "unmet_budgets_ms": js["unmet_budgets_ms"],
            "distinct_picks": len(distinct_picks(js["best_per_budget"])),
            "loadavg_1min": [load0, os.getloadavg()[0]]}


def uncommitted() -> list[str] | None:
    """Files of the package and the experiments that differ from the commit (git_sha)."""
    try:
        p = subprocess.run(["git", "status", "--porcelain", "--", "nas", "experiments"],
                           cwd=Path(__file__).resolve().parents[1], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line[3:] for line in p.stdout.splitlines()] if p.returncode == 0 else None


def cached_rows(path: Path, tag: str, err_key: str) -> dict[str, dict]:
    """The error-cache rows of one evaluator tag with a finite `err_key`, by arch_id."""
    from nas.io import iter_jsonl

    if not path.is_file():
        return {}
    return {r["arch_id"]: r for r in iter_jsonl(path, ("arch_id", "arch"))
            if r.get("tag") == tag and np.isfinite(r.get(err_key, np.nan))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a trained run folder")
    ap.add_argument("--lut", default=DEFAULT_LUT, help="the NEW latency table")
    ap.add_argument("--evals", type=int, default=40, help="re-search evaluations")
    ap.add_argument("--fresh-evals", type=int, default=ISSUE_FRESH_EVALS,
                    help="evaluations of the fresh reference search (the issue's: 160)")
    ap.add_argument("--strategy", default="evolution")
    ap.add_argument("--screen", type=int, default=8,
                    help="the re-search's --screen (0: no error predictor)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="override search.threads in the copies (default: the run's)")
    ap.add_argument("--out", default="runs/bench_research")
    a = ap.parse_args()

    run_dir, lut, out = Path(a.run).resolve(), Path(a.lut).resolve(), Path(a.out).resolve()
    for p, what in ((run_dir / "supernet.pt", "--run"), (lut, "--lut")):
        if not p.is_file():
            raise SystemExit(f"bench_research: {what}: no such file {p}")
    for sub in ("work", "research", "fresh", "logs"):  # ours: every invocation starts clean
        shutil.rmtree(out / sub, ignore_errors=True)
    from nas.io import file_hash

    hashes = {"supernet_file": file_hash(run_dir / "supernet.pt"),
              "run_config_file": file_hash(run_dir / "run_config.json"),
              "eval_cache_file": (file_hash(run_dir / "eval_cache.jsonl")
                                  if (run_dir / "eval_cache.jsonl").is_file() else None),
              "lut_file": file_hash(lut)}
    warm = copy_run(run_dir, out / "work" / "warm", with_cache=True, threads=a.threads)
    cold = copy_run(run_dir, out / "work" / "cold", with_cache=False, threads=a.threads)

    print(f"bench_research: re-search of {run_dir} on {lut} ({a.evals} evals, warm start), "
          f"then a fresh {a.fresh_evals}-eval search (cold cache); {a.strategy}, seed {a.seed}",
          flush=True)
    rs = research(warm, lut, out / "research", out / "logs", a)
    print(f"re-search: {rs['wall_s']:.1f} s wall, {rs['reused']} reused + "
          f"{rs['evaluated_now']} evaluated now; exporting {rs['distinct_picks']} pick(s)",
          flush=True)
    fr = fresh(cold, lut, out / "fresh", out / "logs", a)
    print(f"fresh: {fr['wall_s']:.1f} s wall, {fr['evaluated_now']} evaluated", flush=True)

    # Figures: after the timed part, in this process.
    from nas import __version__
    from nas.cli import _run_context, _run_splits
    from nas.gaze.tasks import get_task
    from nas.io import git_sha, package_versions
    from nas.latency import LatencyTable
    from nas.latency.runtime import device_info
    from nas.pipeline import HV_RULE, build_evaluator, hv_reference, table_hash
    from nas.search import load_front

    sup, space, cfg, meta = _run_context(run_dir)
    task = get_task(space.task)
    err_key = task.error_key
    splits = _run_splits(run_dir, cfg, meta)
    table = LatencyTable.load(lut)
    table.check_space(space)
    ref = hv_reference(space, table, splits)
    budgets = [b["budget_ms"] for b in rs["best_per_budget"]]
    if budgets != [b["budget_ms"] for b in fr["best_per_budget"]]:
        raise SystemExit("bench_research: the two searches used different budgets")
    hv_re = front_hv(load_front(out / "research" / "search"), ref, err_key)
    hv_fr = front_hv(load_front(out / "fresh"), ref, err_key)
    tag = build_evaluator(sup, splits, recal_images=cfg.search.recal_images,
                          val_images=cfg.search.val_images, space=space, cache=False,
                          head_refit_images=cfg.search.head_refit_images).cache_tag
    cache = cached_rows(run_dir / "eval_cache.jsonl", tag, err_key)
    free = [{err_key: r[err_key],
             "latency_ms": table.predict(space, space.parse(r["arch"]))} for r in cache.values()]
    anew = cached_rows(cold / "eval_cache.jsonl", tag, err_key)
    diffs = [abs(anew[k][err_key] - cache[k][err_key]) for k in anew.keys() & cache]
    ratio = hv_re / hv_fr if hv_fr > 0 else None
    criteria = {"wall_le_60s": rs["wall_s"] <= MAX_WALL_S,
                "hv_ge_99pct": ratio is not None and ratio >= MIN_HV_RATIO,
                "fresh_is_issue_reference": a.fresh_evals == ISSUE_FRESH_EVALS}
    report = {
        "args": vars(a), "run": str(run_dir), "lut": str(lut), "device": table.meta.get("device"),
        "lut_runtime": table.meta.get("runtime"), "budgets_ms": budgets,
        "hv": {"reference": {err_key: ref[0], "latency_ms": ref[1]}, "rule": HV_RULE,
               "research": hv_re, "fresh": hv_fr, "ratio": ratio,
               "cache_only": front_hv(free, ref, err_key), "cache_only_n": len(free)},
        "research": rs, "fresh": fr,
        "cache_check": {"tag": tag, "n_compared": len(diffs),
                        task.key("max_abs_diff"): max(diffs) if diffs else None},
        "criteria": criteria | {"all": all(criteria.values())},
        "seeds": {"search": a.seed, "experiment": cfg.seed},
        "hashes": hashes | {"space": space.space_hash(), "lut_table": table_hash(table),
                            "data": splits.fingerprint},
        "versions": package_versions(), "tool_version": __version__, "git_sha": git_sha(),
        "git_uncommitted": uncommitted(),
        "machine": {k: device_info()[k] for k in ("device", "cpu_model", "cores")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(out / "bench_research.json", report)

    sp = rs["split_s"]
    print(f"\nre-search ({a.evals} evals, warm start from {rs['warm_start_seeds']} cached "
          f"subnets) + export of {rs['distinct_picks']} distinct pick(s): {rs['wall_s']:.1f} s")
    print(f"  startup + data load {sp['startup_and_data_load']:.1f} s | search {sp['search']:.1f}"
          f" s (loop {sp['search_loop']} s: {rs['evaluated_now']} evaluated now, "
          f"{rs['reused']} reused from the cache; screen {rs['screen']}) | export "
          f"{sp['export']:.1f} s")
    print(f"  load average (1 min) {rs['loadavg_1min'][0]:.2f} -> {rs['loadavg_1min'][1]:.2f}"
          f" on {report['machine']['cores']} cores")
    print(f"fresh search ({a.fresh_evals} evals, cold cache): {fr['wall_s']:.1f} s, "
          f"{fr['distinct_picks']} distinct pick(s)")
    print(f"hypervolume (ref error {task.format(ref[0])}, latency {ref[1]} ms; {HV_RULE}):")
    pct = f"{ratio:.2%}" if ratio is not None else "n/a"
    print(f"  re-search {hv_re:.4f} | fresh {hv_fr:.4f} | ratio {pct} | cached errors "
          f"alone, re-ranked ({len(free)} subnets, 0 evaluations) "
          f"{report['hv']['cache_only']:.4f}")
    print(f"cached vs re-measured errors: {len(diffs)} subnets compared, max |diff| "
          f"{report['cache_check'][task.key('max_abs_diff')]} {task.unit}")
    ok = {True: "yes", False: "NO"}
    print(f"criteria: wall <= {MAX_WALL_S:.0f} s: {ok[criteria['wall_le_60s']]}; "
          f"HV >= {MIN_HV_RATIO:.0%} of fresh: {ok[criteria['hv_ge_99pct']]}"
          + ("" if criteria["fresh_is_issue_reference"] else
             f" (fresh search of {a.fresh_evals} evals, not the issue's {ISSUE_FRESH_EVALS})"))
    print(f"figures: {out / 'bench_research.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
