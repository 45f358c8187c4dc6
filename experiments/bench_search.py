"""Search strategies side by side on one trained supernet and one latency table.

Every strategy runs with several seeds up to the largest evaluation count; each is judged
at every count (first N trials of its own log) by the hypervolume against the run's fixed
reference point (mean-gaze error, 1.1x the largest subnet's latency), checked against
pymoo's HV indicator where installed, by its share of the reference hypervolume (the
union of every strategy's front at the largest count), by the best error under budgets at
25 / 50 / 75 % of the latency range, and by how many distinct subnets those budgets pick.
Subnet errors are cached per supernet, so strategies that meet the same subnet pay once.

    python experiments/bench_search.py --run runs/quickstart --evals 80 160 320 --seeds 3
    python experiments/bench_search.py ... --strategies evolution evolution+screen8  # screened
    python experiments/bench_search.py ... --strategies evolution evolution+fill2    # gap filling

Besides hypervolume it prints each front's size and its largest latency step (the ratio
between neighbouring front points), medians over seeds.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nas.io import atomic_write_json  # noqa: E402
from nas.search import hypervolume_2d, read_trials  # noqa: E402
from nas.search.pareto import best_under_budget, non_dominated_mask  # noqa: E402

DEFAULT = ["evolution", "random", "optuna-tpe", "optuna-nsga2", "nni-tpe", "nni-evolution"]


def _pymoo_hv(F: np.ndarray, ref: tuple[float, float]) -> float | None:
    try:
        from pymoo.indicators.hv import HV
    except ImportError:
        return None
    F = F[(F[:, 0] < ref[0]) & (F[:, 1] < ref[1])]
    return float(HV(ref_point=np.array(ref))(F)) if len(F) else 0.0


def _matrix(rows: list[dict], err_key: str) -> np.ndarray:
    """(error, latency) of every trial in order, infeasible ones included (so [:n] is the
    first n trials); `err_key` is the task's error key (`error_deg`, pog2d `error_cm`)."""
    F = np.array([[float(r[err_key]), float(r["latency_ms"])] for r in rows], dtype=float)
    return F if len(F) else F.reshape(0, 2)


def _variant(label: str) -> tuple[str, int, float]:
    """`evolution+screen8` -> ("evolution", 8, 0): a strategy screened by the error
    predictor (learning only from its own results: no warm start, so every strategy sees
    the same); `evolution+fill2` -> ("evolution", 0, 2.0): with gap filling at ratio 2."""
    name, *extras = re.split(r"\+(?=screen|fill)", label)
    screen, fill = 0, 0.0
    for e in extras:
        if e.startswith("screen"):
            screen = int(e[len("screen"):])
        else:
            fill = float(e[len("fill"):])
    return name, screen, fill


def largest_step(F: np.ndarray) -> float:
    """The widest latency ratio between neighbouring points of the front of F."""
    P = F[non_dominated_mask(F)] if len(F) else F
    lat = np.sort(P[:, 1])
    return float(np.max(lat[1:] / lat[:-1])) if len(lat) > 1 else 1.0


def _finite(F: np.ndarray) -> np.ndarray:
    return F[np.isfinite(F).all(axis=1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a trained run folder")
    ap.add_argument("--lut", help="latency table (default: the run's)")
    ap.add_argument("--strategies", nargs="+", default=DEFAULT)
    ap.add_argument("--evals", nargs="+", type=int, default=[80, 160, 320])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--full", nargs="*", default=None, metavar="STRATEGY",
                    help="only these strategies run to the largest --evals count, the others "
                         "to the next one (default: all to the largest); the reference front "
                         "is the union of every strategy's own last count")
    ap.add_argument("--out", default="runs/bench_search")
    args = ap.parse_args()

    import torch

    from nas.cli import _run_context, _run_splits
    from nas.gaze.tasks import get_task
    from nas.latency import LatencyTable
    from nas.pipeline import HV_RULE, hv_reference, run_search_stage
    from nas.search import check_strategy

    torch.set_num_threads(1)
    for s in args.strategies:
        check_strategy(_variant(s)[0])
    run_dir = Path(args.run)
    sup, space, cfg, meta = _run_context(run_dir)
    task = get_task(space.task)
    best_key = task.key("best_error")  # best_error_deg, or best_error_cm for pog2d
    splits = _run_splits(run_dir, cfg, meta)
    lut = Path(args.lut) if args.lut else next((run_dir / "latency").glob("*.yaml"))
    table = LatencyTable.load(lut)
    table.check_space(space)
    ref = hv_reference(space, table, splits)
    lo, hi = table.predict(space, space.smallest()), table.predict(space, space.largest())
    budgets = [round(lo + f * (hi - lo), 5) for f in (0.25, 0.5, 0.75)]
    s_cfg = {"batch": cfg.search.batch, "recal_images": cfg.search.recal_images,
             "val_images": cfg.search.val_images}
    out, top = Path(args.out), max(args.evals)
    below = max([n for n in args.evals if n < top], default=top)
    runs_to = {s: top if args.full is None or s in args.full else below
               for s in args.strategies}
    print(f"bench_search: {len(args.strategies)} strategies x {args.seeds} seeds up to {top} "
          f"evaluations on {sup} with {lut}; HV reference {ref} ({HV_RULE}); budgets "
          f"{budgets} ms (25/50/75 % of the latency range)", flush=True)
    logs: dict[tuple[str, int], np.ndarray] = {}  # trials as (error, latency) rows
    for name in args.strategies:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            d = out / name / f"seed{seed}"
            base, screen, fill = _variant(name)
            res = run_search_stage(space, sup, splits, table, d, strategy=base, screen=screen,
                                   fill_gaps=fill,
                                   evals=runs_to[name],
                                   budgets=budgets, seed=seed, batch=s_cfg.get("batch", 8),
                                   recal_images=s_cfg.get("recal_images", 512),
                                   val_images=s_cfg.get("val_images", 2000), threads=1,
                                   head_refit_images=cfg.search.head_refit_images,
                                   log=lambda m: None)
            logs[(name, seed)] = _matrix(read_trials(d / "trials.csv"), task.error_key)
            print(f"  {name} seed {seed}: {res['summary']['evaluated_this_run']} evaluated "
                  f"now, {time.perf_counter() - t0:.0f} s", flush=True)

    union = np.vstack([_finite(F[:runs_to[name]]) for (name, _), F in logs.items()])
    ref_hv = hypervolume_2d(union, ref)
    table_rows, worst_check = [], 0.0
    for name in args.strategies:
        for n in [n for n in args.evals if n <= runs_to[name]]:
            hvs, errs, picks, sizes, steps = [], {b: [] for b in budgets}, [], [], []
            for seed in range(args.seeds):
                F = _finite(logs[(name, seed)][:n])
                hv = hypervolume_2d(F, ref)
                other = _pymoo_hv(F[non_dominated_mask(F)], ref) if len(F) else None
                if other is not None:
                    worst_check = max(worst_check, abs(hv - other) / max(abs(other), 1e-12))
                hvs.append(hv)
                sizes.append(int(non_dominated_mask(F).sum()) if len(F) else 0)
                steps.append(largest_step(F))
                chosen = best_under_budget(F[:, 0], F[:, 1], budgets)
                for b in budgets:
                    errs[b].append(F[chosen[b], 0] if chosen[b] is not None else np.nan)
                picks.append(len({chosen[b] for b in budgets if chosen[b] is not None}))
            table_rows.append({
                "strategy": name, "evals": n, "hv_median": float(np.median(hvs)),
                "hv_min": float(np.min(hvs)), "hv_max": float(np.max(hvs)),
                "hv_share_median": float(np.median(hvs) / ref_hv) if ref_hv else None,
                best_key: {str(b): float(np.nanmedian(v)) for b, v in errs.items()},
                "distinct_picks_median": float(np.median(picks)),
                "front_size_median": float(np.median(sizes)),
                "largest_step_median": float(np.median(steps)),
                "largest_steps": [round(s, 3) for s in steps]})
    to99 = {name: _evals_to_share(logs, name, args.seeds, runs_to[name], ref, ref_hv, 0.99)
            for name in args.strategies}
    print(f"\nreference hypervolume (union of every strategy's front at its last count): "
          f"{ref_hv:.4f}; ours vs pymoo HV: max relative difference {worst_check:.1e}")
    print("evaluations to reach 99% of the reference (median over seeds; - = not within its "
          "run): " + ", ".join(f"{k} {v if v is not None else '-'}" for k, v in to99.items()))
    hdr = "  ".join(f"err<={b:g}" for b in budgets)
    print(f"\n{'strategy':<15}{'evals':>6}{'HV median':>11}{'[min, max]':>18}{'% ref':>7}  "
          f"{hdr}  picks  front  largest step (each seed)")
    for r in table_rows:
        e = "  ".join(f"{v:>{len(f'err<={b:g}')}.2f}" for b, v in
                      zip(budgets, r[best_key].values()))
        span = f"[{r['hv_min']:.3f}, {r['hv_max']:.3f}]"
        print(f"{r['strategy']:<15}{r['evals']:>6}{r['hv_median']:>11.4f}{span:>18}"
              f"{100 * (r['hv_share_median'] or 0):>7.1f}  {e}  "
              f"{r['distinct_picks_median']:.0f}  {r['front_size_median']:5.0f}  "
              + "/".join(f"{s:.2f}x" for s in r["largest_steps"]))
    _plot(out / "hv_vs_evals.png", logs, args, ref, ref_hv)
    atomic_write_json(out / "bench_search.json", {
        "run": str(run_dir), "lut": str(lut), "reference_point": ref, "rule": HV_RULE,
        "reference_hv": ref_hv, "budgets_ms": budgets, "seeds": args.seeds,
        "pymoo_max_rel_diff": worst_check, "runs_to": runs_to, "evals_to_99": to99,
        "rows": table_rows})
    print(f"\nwritten {out / 'bench_search.json'} and {out / 'hv_vs_evals.png'}")
    return 0


def _evals_to_share(logs: dict, name: str, seeds: int, n_max: int, ref, ref_hv: float,
                    share: float) -> int | None:
    """Median over seeds of the first evaluation count (step 8) whose front reaches `share`
    of the reference hypervolume; None if the median seed never does within `n_max`."""
    firsts = []
    for s in range(seeds):
        hit = next((n for n in range(8, n_max + 1, 8)
                    if hypervolume_2d(_finite(logs[(name, s)][:n]), ref) >= share * ref_hv),
                   None)
        firsts.append(np.inf if hit is None else hit)
    med = float(np.median(firsts))
    return int(med) if np.isfinite(med) else None


def _plot(path: Path, logs: dict, args, ref, ref_hv: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for name in args.strategies:
        top = len(min((logs[(name, s)] for s in range(args.seeds)), key=len))
        xs = list(range(8, top + 1, 8))
        curves = np.array([[hypervolume_2d(_finite(logs[(name, s)][:n]), ref) / ref_hv
                            for n in xs] for s in range(args.seeds)])
        ax.plot(xs, 100 * np.median(curves, axis=0), label=name)
    ax.axhline(99, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("evaluated subnets")
    ax.set_ylabel("hypervolume, % of reference (median over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
