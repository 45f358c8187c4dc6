"""Few-shot device adaptation (`gaze-nas lut adapt`) against each target's own full profile.

Reference: this machine's onnxruntime table. Targets that really differ from it in more than
a constant factor, all on this machine: PyTorch eager (`torch`), onnxruntime with graph
optimizations off (`onnxruntime-noopt`) and onnxruntime with 2 threads (`onnxruntime-2t`).
For K = 5, 10, 20, 40 measured subnets (those `lut adapt --measure K --seed r` measures,
for r = 0 .. repeats-1), every table is judged on the same held-out subnets measured end to
end on the target (never used for fitting), by Kendall tau, the share within +-10 % and MAPE:

  adapted    the reference adapted to the K subnets (`nas.latency.adapt`)
  ref+corr   the reference table, only its correction (a, b, c) refitted on the K subnets
  own+corr   the target's OWN full profile, its correction fitted on the same K subnets:
             what a full profile buys over adaptation (and the noise floor of this machine)

Tables, whole-subnet timings and key features are cached per space and backend under
`--out`, so a rerun only measures what is missing.

    python experiments/bench_adapt.py --space search_spaces/tiny.yaml      # ~3 min here
    python experiments/bench_adapt.py                                      # default space
    python experiments/bench_adapt.py --keys subnets     # only the keys of the subnets used
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nas.io import atomic_write_json  # noqa: E402

TARGETS = ["torch", "onnxruntime-noopt", "onnxruntime-2t"]
TEST_SEED = 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/gaze_eye.yaml")
    ap.add_argument("--reference", default="onnxruntime")
    ap.add_argument("--targets", nargs="+", default=TARGETS)
    ap.add_argument("--ks", nargs="+", type=int, default=[5, 10, 20, 40])
    ap.add_argument("--repeats", type=int, default=3, help="training sets per K (seeds 0..)")
    ap.add_argument("--test", type=int, default=40, help="held-out subnets per target")
    ap.add_argument("--keys", choices=["all", "subnets"], default="all",
                    help="profile every key of the space, or only the keys of the subnets "
                         "used here (a stratified subset: enough to judge, not a full table)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="runs/bench_adapt")
    args = ap.parse_args()

    from nas.latency import profile_space
    from nas.latency.adapt import adapt_table, key_features
    from nas.latency.backends import get_backend
    from nas.latency.export import cache_dir
    from nas.latency.fit import apply_correction, fidelity, fit_correction
    from nas.latency.keys import all_keys, arch_keys
    from nas.latency.validate import measure_archs, sample_archs
    from nas.space import SearchSpace

    t_start = time.perf_counter()
    space = SearchSpace.load(args.space)
    folder = Path(args.out) / f"{space.name}-{space.space_hash()}"
    folder.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    kmax = max(args.ks)
    pools = [sample_archs(space, kmax, seed=r) for r in range(args.repeats)]
    in_train = {a.arch_id for p in pools for a in p}
    test = [a for a in sample_archs(space, args.test + len(in_train), seed=TEST_SEED)
            if a.arch_id not in in_train][:args.test]
    subnets = list({a.arch_id: a for a in [*test, *(a for p in pools for a in p)]}.values())
    every = all_keys(space)
    if args.keys == "all":
        keys = list(every)
    else:
        keys = sorted({k for a in subnets for k in arch_keys(space, a)})
    print(f"space {space.name} ({space.space_hash()}): {len(keys)} of {len(every)} keys "
          f"({'all' if args.keys == 'all' else 'only the keys of the subnets used: a subset'}),"
          f" {len(test)} held-out subnets, {args.repeats} training sets of up to {kmax}")

    phases: dict[str, float] = {}
    tables, measured = {}, {}
    for name in [args.reference, *args.targets]:
        be = get_backend(name)
        t0 = time.perf_counter()
        tables[name] = profile_space(space, folder / f"{name}.yaml", keys=keys, backend=be,
                                     rounds=args.rounds, log=log)
        phases[f"profile {name}"] = time.perf_counter() - t0
        cache = folder / f"{name}-subnets.json"
        have = json.loads(cache.read_text()) if cache.is_file() else {}
        todo = [a.to_string() for a in subnets if a.to_string() not in have]
        t0 = time.perf_counter()
        if todo:
            timed, _, _ = measure_archs(space, todo, be, anchors_ref=None, rounds=args.rounds,
                                        max_wait=60.0, log=log,
                                        onnx_dir=cache_dir(folder / "x") / "subnets")
            have.update({n: timed[n]["p50_ms"] for n in todo})
            atomic_write_json(cache, have)
        phases[f"subnets {name}"] = time.perf_counter() - t0
        measured[name] = have
    t0 = time.perf_counter()
    feats = key_features(space, keys, folder / "key_features.json", log)
    phases["key features"] = time.perf_counter() - t0

    ref = tables[args.reference]
    rows = []
    t0 = time.perf_counter()
    for target in args.targets:
        own = tables[target]
        y_test = np.array([measured[target][a.to_string()] for a in test])
        for k in args.ks:
            for r, pool in enumerate(pools):
                train = pool[:k]
                y = np.array([measured[target][a.to_string()] for a in train])
                ada = adapt_table(ref, space, train, y, {"device": "bench", "backend": target},
                                  feats=feats, keys=keys)
                res = {"target": target, "k": k, "repeat": r,
                       "adapted": fidelity([ada.predict(space, a) for a in test], y_test)}
                for label, table in (("ref+corr", ref), ("own+corr", own)):
                    s, p = map(np.array, zip(*(table.raw_sum(space, a) for a in train)))
                    corr = fit_correction(s, p, y)
                    st, pt = map(np.array, zip(*(table.raw_sum(space, a) for a in test)))
                    res[label] = fidelity(apply_correction(corr, st, pt), y_test)
                res["lambda"] = ada.meta["adapted"]["model"]["lambda_counts_sizes"]
                rows.append(res)
    phases["fit + predict"] = time.perf_counter() - t0

    print(f"\n{'target':<18} {'K':>3} | {'adapted: tau':>12} {'w10':>5} {'MAPE':>6} "
          f"{'worst tau/w10':>14} | {'ref+corr: tau':>13} {'w10':>5} | "
          f"{'own+corr: tau':>13} {'w10':>5}")
    summary = []
    for target in args.targets:
        for k in args.ks:
            sel = [x for x in rows if x["target"] == target and x["k"] == k]

            def mean(label: str, key: str) -> float:
                return float(np.mean([x[label][key] for x in sel]))

            line = {"target": target, "k": k,
                    **{f"{lab}_{key}": mean(lab, key) for lab in ("adapted", "ref+corr",
                                                                  "own+corr")
                       for key in ("kendall_tau", "within_10", "mape")},
                    "adapted_worst_tau": min(x["adapted"]["kendall_tau"] for x in sel),
                    "adapted_worst_w10": min(x["adapted"]["within_10"] for x in sel)}
            summary.append(line)
            print(f"{target:<18} {k:>3} | {line['adapted_kendall_tau']:>12.3f} "
                  f"{line['adapted_within_10']:>5.0%} {line['adapted_mape']:>5.1f}% "
                  f"{line['adapted_worst_tau']:>8.3f}/{line['adapted_worst_w10']:<5.0%} | "
                  f"{line['ref+corr_kendall_tau']:>13.3f} {line['ref+corr_within_10']:>5.0%} | "
                  f"{line['own+corr_kendall_tau']:>13.3f} {line['own+corr_within_10']:>5.0%}")
    print(f"\n(means over {args.repeats} training sets; every figure on {len(test)} held-out "
          f"subnets measured end to end on the target; keys: {args.keys})")
    print("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
          + f"; total {time.perf_counter() - t_start:.0f}")
    atomic_write_json(folder / "results.json", {"space": space.name, "keys": args.keys,
                                                "n_keys": len(keys), "test": len(test),
                                                "rows": rows, "summary": summary,
                                                "phases_s": phases})
    return 0


if __name__ == "__main__":
    sys.exit(main())
