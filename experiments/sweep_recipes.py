"""Supernet training recipes side by side, each trained with several seeds, ranked against
cached from-scratch ground truth.

One supernet per recipe says little: two supernets of the same recipe differ by up to
0.05 in Kendall tau on a 14-arch set. This trains every recipe (a config plus `train:`
overrides) with `--seeds` training seeds, evaluates each supernet's inherited errors on the
arch sets of one or more `bench_ranking` reports (their from-scratch errors, the mean over
the seeds trained there, are the ground truth), and prints per recipe the mean and spread
of Kendall tau per set, the pooled tau, and the median gap. Supernets are cached per
(recipe, seed) in the output folder, so an interrupted sweep resumes.

    python experiments/sweep_recipes.py --config experiments/quickstart.yaml \\
        --ranking runs/bench_ranking_set0/ranking.json \\
        --ranking runs/bench_ranking_set1/ranking.json \\
        --recipe base= --recipe nokd=kd_weight=0,feature_kd=0 --seeds 3 \\
        [--device cuda --train-workers 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nas.config import load_config  # noqa: E402
from nas.io import atomic_write_json  # noqa: E402
from nas.parallel import map_spawned  # noqa: E402


def _value(text: str):
    """A `train:` override's value as YAML would read it (0.5, 3, true, per_family)."""
    import yaml

    return yaml.safe_load(text)


def parse_recipe(spec: str) -> tuple[str, dict]:
    """`name=key=value,key=value` -> (name, overrides); `name=` is the config as it is."""
    name, _, rest = spec.partition("=")
    over = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        over[k.strip()] = _value(v.strip())
    return name, over


def _train_job(config: str, overrides: dict, seed: int, out_dir: str, device: str,
               threads: int) -> dict:
    """Train one (recipe, seed) supernet in a worker process; returns its timing."""
    from nas.pipeline import load_splits
    from nas.space import SearchSpace
    from nas.train import train_supernet

    cfg = load_config(config)
    tcfg = replace(cfg.train, **overrides, device=device, threads=threads)
    space = SearchSpace.load(cfg.space)
    splits = load_splits(cfg, lambda _m: None)
    t0 = time.time()
    train_supernet(space, splits, tcfg, seed, out_dir, log=lambda _m: None)
    return {"train_s": round(time.time() - t0, 1)}


def _eval_job(config: str, supernet: str, archs: list[str]) -> list[float]:
    """Inherited errors in a worker process (one thread), as the search scores them."""
    from dataclasses import replace as with_fields

    from nas.pipeline import load_splits
    from nas.ranking import inherited_errors
    from nas.space import SearchSpace

    cfg = load_config(config)
    space = SearchSpace.load(cfg.space)
    splits = load_splits(cfg, lambda _m: None)
    return inherited_errors(supernet, space, splits, with_fields(cfg.search, threads=1),
                            [space.parse(a) for a in archs])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    ap.add_argument("--recipe", action="append", required=True, metavar="NAME=K=V,K=V",
                    help="a recipe: train overrides on the config (`base=`: none)")
    ap.add_argument("--ranking", action="append", required=True,
                    help="a bench_ranking report: its archs and from-scratch errors")
    ap.add_argument("--seeds", type=int, default=2, help="training seeds per recipe")
    ap.add_argument("--device", default="cpu", help="training device (cpu or cuda)")
    ap.add_argument("--train-workers", type=int, default=1,
                    help="supernets trained at once (processes; on a GPU they share it)")
    ap.add_argument("--train-threads", type=int, default=2)
    ap.add_argument("--eval-workers", type=int, default=2)
    ap.add_argument("--skip-training", action="store_true",
                    help="evaluate the supernets already trained (e.g. after a time limit)")
    ap.add_argument("--out", default="runs/sweep_recipes")
    args = ap.parse_args()
    from nas.ranking import fidelity

    cfg = load_config(args.config)
    recipes = dict(parse_recipe(s) for s in args.recipe)
    for name, over in recipes.items():  # unknown keys fail here, before any training
        replace(cfg.train, **over)
    sets = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in args.ranking}
    out = Path(args.out)
    jobs = [(name, seed) for name in recipes for seed in range(cfg.seed, cfg.seed + args.seeds)]
    todo = [j for j in jobs if not (out / j[0] / f"seed{j[1]}" / "supernet.pt").is_file()]
    print(f"sweep_recipes: {len(recipes)} recipes x {args.seeds} seeds; {len(todo)} supernets "
          f"to train on {args.device}; ground truth: " + ", ".join(
              f"{k} ({len(v['archs'])} archs, scratch seeds {v['scratch_seeds']})"
              for k, v in sets.items()), flush=True)
    t0, done = time.time(), [0]

    def trained(job: tuple, res: dict) -> None:
        done[0] += 1
        el = time.time() - t0
        print(f"  trained {Path(job[3]).parent.name}/{Path(job[3]).name} in {res['train_s']:.0f} s"
              f" ({done[0]}/{len(todo)}, ETA {el / done[0] * (len(todo) - done[0]) / 60:.1f} min)",
              flush=True)

    if not args.skip_training:
        map_spawned(_train_job, [(args.config, recipes[n], s, str(out / n / f"seed{s}"),
                                  args.device, args.train_threads) for n, s in todo],
                    args.train_workers, trained)
    missing = [j for j in jobs if not (out / j[0] / f"seed{j[1]}" / "supernet.pt").is_file()]
    if missing:
        print(f"  not trained (left out below): {missing}")
    jobs = [j for j in jobs if j not in missing]
    all_archs = [a["arch"] for v in sets.values() for a in v["archs"]]
    cache = out / "inherited.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    need = [(n, s) for n, s in jobs if f"{n}/seed{s}" not in known]

    def evaluated(job: tuple, res: list[float]) -> None:
        known[str(Path(job[1]).parent.parent.name) + "/" + Path(job[1]).parent.name] = res
        atomic_write_json(cache, known)

    map_spawned(_eval_job, [(args.config, str(out / n / f"seed{s}" / "supernet.pt"), all_archs)
                            for n, s in need], args.eval_workers, evaluated)
    report = {"config": args.config, "recipes": recipes, "seeds": args.seeds,
              "device": args.device, "results": {},
              "sets": {k: {"archs": len(v["archs"]), "scratch_seeds": v["scratch_seeds"]}
                       for k, v in sets.items()}}
    truth = {k: [a["scratch_error"] for a in v["archs"]] for k, v in sets.items()}
    print(f"\n{'recipe':<14}" + "".join(f"{k[-12:]:>22}" for k in sets) +
          f"{'pooled tau':>14}{'median gap':>12}")
    for name in recipes:
        per_set, pooled, gaps = {}, [], []
        if not any(n == name for n, _ in jobs):
            continue
        for n, s in jobs:
            if n != name:
                continue
            errs_all = known[f"{n}/seed{s}"]
            i = 0
            inh_all, gt_all = [], []
            for k, v in sets.items():
                inh = errs_all[i:i + len(v["archs"])]
                i += len(v["archs"])
                fid = fidelity(inh, truth[k])
                per_set.setdefault(k, []).append(fid["kendall_tau"])
                gaps.append(fid["median_gap_deg"])
                inh_all += inh
                gt_all += truth[k]
            pooled.append(fidelity(inh_all, gt_all)["kendall_tau"])
        report["results"][name] = {"tau_per_set": per_set, "tau_pooled": pooled,
                                   "median_gap": gaps}
        cells = "".join(f"{np.mean(t):>12.3f} +- {np.std(t):.3f}" for t in per_set.values())
        print(f"{name:<14}{cells}{np.mean(pooled):>8.3f} +- {np.std(pooled):.3f}"
              f"{np.median(gaps):>+9.2f}")
    atomic_write_json(out / "sweep.json", report)
    print(f"\nwritten {out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
