"""Sequential vs Ray evaluation of the same N subnets of a trained run, side by side.

    python experiments/bench_ray_executor.py --run runs/quickstart --n 32
    python experiments/bench_ray_executor.py --run runs/quickstart --n 32 --workers 2 --threads 1 2

Draws N distinct subnets from the run's space (seeded, as the search's random subnets are),
then times their evaluation (inherited weights, BN recalibration, validation error: what a
search pays per subnet) three ways, in batches of the run's `search.batch` as the search
asks them: in this process with 1 torch thread, in this process with each `--threads`
value, and on `--workers` Ray actors with one thread each (`search.executor: ray`). No
evaluation cache is read or written. Ray's start (workers loading the supernet and data)
is timed apart from the evaluation. Prints the times, the speed-up and the measured cost per
subnet, the figures behind the README's estimate for a cluster: evaluation time ~
N * cost / workers + start. Checks that both ways give the same errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run folder holding supernet.pt")
    p.add_argument("--n", type=int, default=32, help="subnets to evaluate")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (one CPU each)")
    p.add_argument("--threads", type=int, nargs="*", default=[],
                   help="also time the in-process evaluation with these torch thread counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, help="archs per ask (default: the run's search.batch)")
    p.add_argument("--address", help="a Ray cluster to join (default: a private local Ray)")
    a = p.parse_args(argv)

    import torch

    from nas.config import config_from_dict
    from nas.distributed import RayConfig
    from nas.distributed.executor import RayExecutor
    from nas.gaze.tasks import get_task
    from nas.pipeline import build_evaluator, evaluator_spec, splits_from
    from nas.space import SearchSpace
    from nas.train import load_checkpoint

    run = Path(a.run)
    cfg = config_from_dict(json.loads((run / "run_config.json").read_text()),
                           str(run / "run_config.json"))
    meta = load_checkpoint(run / "supernet.pt")
    space = SearchSpace.from_dict(json.loads(meta["space"]))
    err_key = get_task(space.task).error_key
    batch = a.batch or cfg.search.batch
    rng = np.random.default_rng(a.seed)
    archs, seen = [], set()
    while len(archs) < a.n:
        arch = space.sample(rng)
        if arch.arch_id not in seen:
            seen.add(arch.arch_id)
            archs.append(arch)
    batches = [archs[i:i + batch] for i in range(0, len(archs), batch)]
    spec = evaluator_spec(run / "supernet.pt", cfg, meta["data"], threads=1)
    splits = splits_from(spec.data, spec.seed, spec.source, lambda _m: None)
    print(f"run {run}: {space.name}, {len(archs)} subnets in batches of {batch}, "
          f"{cfg.search.recal_images} recalibration + {cfg.search.val_images} validation "
          f"images each; {os.cpu_count()} CPUs here")

    def sequential(threads: int) -> tuple[float, dict[str, float]]:
        ev = build_evaluator(run / "supernet.pt", splits, recal_images=spec.recal_images,
                             val_images=spec.val_images, threads=threads, space=space,
                             cache=False, head_refit_images=spec.head_refit_images)
        ev.evaluate(space.smallest())  # warm-up: first-call costs are not per subnet
        ev.cache.clear()
        t0 = time.perf_counter()
        errs = {arch.arch_id: ev.evaluate(arch)[err_key] for arch in archs}
        return time.perf_counter() - t0, errs

    rows = []
    t_seq, errs_seq = sequential(1)
    rows.append(("sequential, 1 thread", t_seq, None))
    for th in a.threads:
        if th != 1:
            t, _ = sequential(th)
            rows.append((f"sequential, {th} threads", t, None))
    torch.set_num_threads(1)

    ex = RayExecutor(spec, lambda arch, row: row, workers=a.workers,
                     ray=RayConfig(address=a.address), log=lambda _m: None)
    try:
        t0 = time.perf_counter()
        ex.start()
        start = time.perf_counter() - t0
        import ray  # warm-up of every actor, as above

        ray.get([actor.evaluate.remote(space.smallest().to_string()) for actor in ex.actors])
        t0 = time.perf_counter()
        errs_ray = {}
        for b in batches:
            for arch, row in zip(b, ex.imap(b)):
                errs_ray[arch.arch_id] = row[err_key]
        t_ray = time.perf_counter() - t0
    finally:
        ex.close()
    rows.append((f"ray, {a.workers} workers x 1 thread", t_ray, start))

    cost = t_seq / len(archs)
    print(f"\n{'evaluation of ' + str(len(archs)) + ' subnets':<34} {'time (s)':>9} "
          f"{'per subnet (s)':>15} {'speed-up':>9} {'+ start (s)':>12}")
    for name, t, st in rows:
        print(f"{name:<34} {t:9.2f} {t / len(archs):15.3f} {t_seq / t:8.2f}x "
              f"{'' if st is None else f'{st:12.1f}'}")
    same = errs_seq == errs_ray
    print(f"\nmeasured cost per subnet (1 thread): {cost:.3f} s; Ray overhead per subnet "
          f"{max(t_ray - t_seq / a.workers, 0) / len(archs) * 1000:.0f} ms beyond perfect "
          f"scaling; worker start {start:.1f} s")
    print(f"same errors sequential vs ray: {same}")
    print(f"cluster estimate, evaluation only: N x {cost:.3f} s / min(workers, search.batch)"
          " + worker start")
    for w in (8, 32):
        print(f"  {w} workers, search.batch >= {w}: 160 subnets in {160 * cost / w:.1f} s "
              f"(one thread: {160 * cost:.1f} s)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
