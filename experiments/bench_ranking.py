"""Ranking fidelity of one or more trained supernets against training from scratch.

Picks K archs spread over the space's MAC range (at least half mixing block families),
trains each from scratch on the config's data with the config's epochs and schedule
(cached: an interrupted run keeps every finished net), evaluates each supernet's inherited
weights + BN recalibration on the same validation images, and prints Kendall tau,
Spearman rho and the median gap, plus every pair.

    python experiments/bench_ranking.py --config experiments/quickstart.yaml \\
        --supernet base=runs/quickstart/supernet.pt [--supernet new=runs/x/supernet.pt] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nas.config import load_config  # noqa: E402
from nas.io import atomic_write_json, file_hash, json_hash  # noqa: E402
from nas.parallel import map_spawned  # noqa: E402
from nas.pipeline import load_splits  # noqa: E402
from nas.ranking import (ScratchCache, fidelity, inherited_errors, mix_kind,  # noqa: E402
                         scratch_error, select_archs)
from nas.space import SearchSpace  # noqa: E402
from nas.train import StandaloneConfig, scratch_schedule  # noqa: E402


def _scratch_job(config_path: str, arch_string: str, sched: dict, seed: int, val_images: int):
    """One from-scratch training in a worker process (one torch thread)."""
    cfg = load_config(config_path)
    space = SearchSpace.load(cfg.space)
    splits = load_splits(cfg, lambda _m: None)
    return scratch_error(space, space.parse(arch_string), splits, StandaloneConfig(**sched),
                         seed, val_images)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    ap.add_argument("--supernet", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--k", type=int, default=14, help="number of archs (default 14)")
    ap.add_argument("--quick", action="store_true", help="6 archs: a smaller check")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="arch selection seed")
    ap.add_argument("--scratch-seeds", type=int, default=1,
                    help="train each arch from scratch with this many seeds; the ground "
                         "truth is their mean and seed-vs-seed tau is the noise ceiling")
    ap.add_argument("--archs", help="reuse the arch list of an earlier ranking.json")
    ap.add_argument("--out", default="runs/bench_ranking")
    args = ap.parse_args()
    k = 6 if args.quick else args.k
    cfg = load_config(args.config)
    space = SearchSpace.load(cfg.space)
    splits = load_splits(cfg, print)
    sched = asdict(scratch_schedule(cfg.train))
    val_images = cfg.search.val_images
    if args.archs:
        listed = json.loads(Path(args.archs).read_text())["archs"]
        archs = [space.parse(a["arch"]) for a in listed]
        k = len(archs)
    else:
        archs = select_archs(space, k, args.seed)
    out = Path(args.out)
    cache = ScratchCache(out / "scratch.jsonl")
    seeds = [cfg.seed + i for i in range(args.scratch_seeds)]
    jobs = {(a, sd): json_hash([a.to_string(), splits.fingerprint, sched, sd, val_images])
            for a in archs for sd in seeds}
    todo = [(a, sd) for (a, sd), key in jobs.items() if cache.get(key) is None]
    print(f"bench_ranking: {k} archs ({sum(mix_kind(a) != 'single' for a in archs)} mixing "
          f"families); {len(todo)} from-scratch trainings to run ({cfg.train.epochs} epochs "
          f"each, seeds {seeds})")
    t0, done = time.time(), [0]

    def keep(job: tuple, row: dict) -> None:
        a, sd = space.parse(job[1]), job[3]
        row["key"], row["seed"] = jobs[(a, sd)], sd
        cache.put(row)
        done[0] += 1
        el = time.time() - t0
        print(f"  scratch {done[0]}/{len(todo)}: {a.arch_id} seed {sd} "
              f"{row['scratch_error']:.2f} deg ({row['train_s']:.0f} s) "
              f"ETA {el / done[0] * (len(todo) - done[0]) / 60:.1f} min", flush=True)

    # largest first: the pool's tail is then short jobs, so both workers finish together
    order = sorted(todo, key=lambda j: -sum(j[0].depths) * sum(j[0].widths) * j[0].resolution[0])
    map_spawned(_scratch_job, [(args.config, a.to_string(), sched, sd, val_images)
                               for a, sd in order], args.workers, keep)
    per_seed = {sd: [cache.get(jobs[(a, sd)])["scratch_error"] for a in archs] for sd in seeds}
    truth = [float(np.mean([per_seed[sd][i] for sd in seeds])) for i in range(len(archs))]
    macs = [cache.get(jobs[(a, seeds[0])])["macs"] for a in archs]
    report = {"config": args.config, "k": k, "seed": args.seed, "schedule": sched,
              "data": splits.fingerprint, "val_images": val_images, "scratch_seeds": seeds,
              "archs": [{"arch": a.to_string(), "arch_id": a.arch_id, "mix": mix_kind(a),
                         "macs": m, "scratch_error": round(t, 4),
                         "scratch_by_seed": [per_seed[sd][i] for sd in seeds]}
                        for i, (a, m, t) in enumerate(zip(archs, macs, truth))],
              "supernets": {}}
    if len(seeds) > 1:
        # The ceiling: how well one from-scratch training ranks another (seed noise).
        ceil = fidelity(per_seed[seeds[1]], per_seed[seeds[0]])
        report["seed_vs_seed"] = ceil
        print(f"noise ceiling (from scratch, seed {seeds[0]} vs {seeds[1]}): Kendall tau "
              f"{ceil['kendall_tau']:.3f}, Spearman rho {ceil['spearman_rho']:.3f}, "
              f"median |gap| {ceil['median_abs_gap_deg']:.2f} deg; ground truth = mean of "
              f"{len(seeds)} seeds")
    scratch = [{"scratch_error": t, "macs": m} for t, m in zip(truth, macs)]
    # The zero-cost baseline a supernet has to beat: "bigger is better", by MACs alone.
    size = fidelity([-m for m in macs], truth)
    report["macs_only"] = {k: size[k] for k in ("n", "kendall_tau", "spearman_rho")}
    print(f"MACs alone (bigger = better): Kendall tau {size['kendall_tau']:.3f}, Spearman rho "
          f"{size['spearman_rho']:.3f}")
    for spec in args.supernet:
        label, _, path = spec.partition("=")
        if not path:
            label, path = Path(spec).parent.name, spec
        inherited = inherited_errors(path, space, splits, cfg.search, archs)
        fid = fidelity(inherited, [r["scratch_error"] for r in scratch])
        report["supernets"][label] = {"path": path, "hash": file_hash(path), **fid,
                                      "inherited": inherited}
        print(f"\n[{label}] {path}")
        print(f"  {'arch_id':<11}{'mix':<7}{'MMAC':>6}{'scratch':>9}{'inherited':>10}")
        for a, r, e in sorted(zip(archs, scratch, inherited), key=lambda z: z[1]["macs"]):
            print(f"  {a.arch_id:<11}{mix_kind(a):<7}{r['macs'] / 1e6:>6.2f}"
                  f"{r['scratch_error']:>9.2f}{e:>10.2f}")
        print(f"  Kendall tau {fid['kendall_tau']:.3f}  Spearman rho {fid['spearman_rho']:.3f}  "
              f"median gap {fid['median_gap_deg']:+.2f} deg (|gap| {fid['median_abs_gap_deg']:.2f})")
    if not args.supernet:
        for a, r in zip(archs, scratch):
            print(f"  {a.arch_id} {mix_kind(a):<6} {r['macs'] / 1e6:6.2f} MMAC "
                  f"{r['scratch_error']:.2f} deg  {a.to_string()}")
    if len(args.supernet) > 1:
        print("\nside by side: " + "  ".join(
            f"{lb}: tau {v['kendall_tau']:.3f} rho {v['spearman_rho']:.3f} "
            f"gap {v['median_gap_deg']:+.2f}" for lb, v in report["supernets"].items()))
    atomic_write_json(out / "ranking.json", report)
    print(f"\nwritten {out / 'ranking.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
