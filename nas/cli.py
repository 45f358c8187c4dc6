"""`gaze-nas` command line. User mistakes exit 2 with one line; Ctrl-C exits 130 after the
running stage has saved what it finished."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from nas import __version__
from nas.errors import UserError

_T0 = time.time()


def log(msg: str) -> None:
    """Progress goes to stderr so `--json` output on stdout stays machine-readable."""
    print(f"[{time.time() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- commands
def cmd_run(a: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.pipeline import run

    cfg = getattr(a, "config_obj", None) or load_config(a.config)
    out = Path(a.out or Path("runs") / cfg.name)
    m = run(cfg, out, log)  # locks `out`, then writes run_config.json
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in m["stage_seconds"].items())
          + f"; total {m['total_seconds']:.1f}")
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.io import atomic_write_json
    from nas.pipeline import StageClock, ensure_supernet, load_splits
    from nas.rundir import RunLock
    from nas.space import SearchSpace

    cfg = load_config(a.config)
    out = Path(a.out or Path("runs") / cfg.name)
    with RunLock(out):
        atomic_write_json(out / "run_config.json", cfg.to_dict())
        space = SearchSpace.load(cfg.space)
        clock = StageClock(log)
        with clock.stage("data"):
            splits = load_splits(cfg, log)
        with clock.stage("train") as info:
            path = ensure_supernet(cfg, space, splits, out, log, info)
    print(path)
    return 0


def cmd_space_show(a: argparse.Namespace) -> int:
    from nas.latency.keys import all_keys
    from nas.models import GazeNet, count_macs
    from nas.space import SearchSpace

    sp = SearchSpace.load(a.file)
    print(f"space {sp.name} (version {sp.version}, task {sp.task}, hash {sp.space_hash()})")
    print(f"input: {sp.in_channels} channel(s), resolutions "
          + ", ".join(f"{h}x{w}" for h, w in sp.resolutions))
    print(f"stem: conv{sp.stem_kernel}x{sp.stem_kernel} -> {sp.stem_width}, stride "
          f"{'/'.join(map(str, sp.stem_strides))}, {sp.stem_act}")
    for i, st in enumerate(sp.stages):
        print(f"stage {i + 1}: widths {list(st.widths)}, depths {list(st.depths)}, "
              f"stride {st.stride}")
    for fam, b in sp.blocks.items():
        print(f"block {fam}: " + ", ".join(f"{k} {list(v)}" for k, v in b.items()))
    print(f"head: conv1x1 -> {sp.head_width} ({sp.head_act}), pool, dropout {sp.head_dropout}, "
          f"linear -> {sp.outputs}")
    opts = sp.layer_options()
    print(f"per-layer choices: {len(opts)} ({', '.join(sorted({o.family for o in opts}))})")
    macs = {}
    for name, arch in (("smallest", sp.smallest()), ("largest", sp.largest())):
        macs[name] = count_macs(GazeNet(sp, arch), (1, sp.in_channels, *arch.resolution))
    print(f"MACs: {macs['smallest'] / 1e6:.2f} M (smallest) to {macs['largest'] / 1e6:.2f} M "
          "(largest)")
    print(f"size: {sp.size():.3e} distinct subnets; {len(all_keys(sp))} LUT keys")
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    from nas.latency import profile_space
    from nas.space import SearchSpace

    sp = SearchSpace.load(a.space)
    t = profile_space(sp, Path(a.out), device=a.device, workers=a.workers, rounds=a.rounds,
                      log=log)
    print(f"{t.path}: {len(t.entries)} entries for device {t.meta.get('device')}")
    return 0


def cmd_lut_validate(a: argparse.Namespace) -> int:
    from nas.latency import LatencyTable, validate_table
    from nas.space import SearchSpace

    sp = SearchSpace.load(a.space)
    t = LatencyTable.load(a.lut)
    t.check_space(sp)
    rep = validate_table(t, sp, samples=a.samples, seed=a.seed, rounds=a.rounds, log=log)
    keys = ("mape", "within_5", "within_10", "kendall_tau", "n")
    if a.json:
        print(json.dumps({k: rep[k] for k in keys} | {"correction": t.correction}))
    else:
        print(f"{a.lut}: n={rep['n']} MAPE {rep['mape']:.2f}% within 5% {rep['within_5']:.0%} "
              f"within 10% {rep['within_10']:.0%} Kendall tau {rep['kendall_tau']:.3f} "
              "(leave-one-out)")
    return 0


def _run_context(run_dir: Path):
    """Supernet path, its space, and the data splits a run was trained with."""
    from nas.pipeline import splits_from
    from nas.space import SearchSpace
    from nas.train import load_checkpoint

    sup = run_dir / "supernet.pt"
    if not sup.is_file():
        raise UserError("no supernet.pt here (run `gaze-nas train` or `gaze-nas run` first)",
                        source=str(run_dir))
    cfg_path = run_dir / "run_config.json"
    if not cfg_path.is_file():
        raise UserError("missing run_config.json (not a gaze-nas run folder)", source=str(run_dir))
    cfg = json.loads(cfg_path.read_text())
    meta = load_checkpoint(sup)
    space = SearchSpace.from_dict(json.loads(meta["space"]), source=f"{sup}:space")
    splits = splits_from(cfg["data"], cfg["seed"], str(cfg_path), log)
    if splits.fingerprint != meta.get("data"):
        raise UserError(f"the data ({splits.fingerprint}) is not what the supernet was trained "
                        f"on ({meta.get('data')})", source=str(cfg_path), field="data")
    return sup, space, splits, cfg


def cmd_search(a: argparse.Namespace) -> int:
    from nas.latency import LatencyTable
    from nas.pipeline import auto_budgets, run_search_stage
    from nas.rundir import RunLock

    run_dir = Path(a.run)
    sup, space, splits, cfg = _run_context(run_dir)
    table = LatencyTable.load(a.lut)
    table.check_space(space)
    budgets = a.budget_ms or auto_budgets(space, table, a.seed)
    s = cfg.get("search", {})
    out = Path(a.out or run_dir / f"search-{Path(a.lut).stem}-{a.strategy}")
    t0 = time.perf_counter()
    with ExitStack() as locks:  # the run folder (its evaluation cache) and the output folder
        locks.enter_context(RunLock(run_dir))
        if not out.resolve().is_relative_to(run_dir.resolve()):
            locks.enter_context(RunLock(out))
        res = run_search_stage(space, sup, splits, table, out, strategy=a.strategy,
                               evals=a.evals, budgets=budgets, seed=a.seed,
                               batch=s.get("batch", 8), recal_images=s.get("recal_images", 512),
                               val_images=s.get("val_images", 2000),
                               threads=s.get("threads", 2), log=log)
    print(f"{out / 'pareto.json'}: {len(res['front'])} Pareto-optimal subnets in "
          f"{time.perf_counter() - t0:.1f} s")
    for b in res["best_per_budget"]:
        if b.get("arch_id"):
            print(f"  <= {b['budget_ms']} ms: {b['arch_id']} error {b['error_deg']:.2f} deg, "
                  f"{b['latency_ms']:.3f} ms")
        else:
            print(f"  <= {b['budget_ms']} ms: none ({b.get('reason', '')})")
    return 0


def _run_subnet(run_dir: Path, arch_text: str):
    """(arch, evaluator, supernet path, space, splits, run config) for one subnet of a run,
    evaluated as the run's search evaluated it."""
    from nas.evaluation import SubnetEvaluator
    from nas.pipeline import find_arch
    from nas.train import load_supernet

    sup, space, splits, cfg = _run_context(run_dir)
    arch = find_arch(run_dir, space, arch_text)
    net, _ = load_supernet(sup)
    s = cfg.get("search", {})
    ev = SubnetEvaluator(net, space, splits, recal_images=s.get("recal_images", 512),
                         val_images=s.get("val_images", 2000))
    return arch, ev, sup, space, splits, cfg


def cmd_export(a: argparse.Namespace) -> int:
    from nas.export import export_subnet

    arch, ev, _, space, _, _ = _run_subnet(Path(a.run), a.arch)
    row = ev.evaluate(arch)
    card = export_subnet(ev.subnet(arch), space, Path(a.out), extra={"error_deg": row["error_deg"]})
    print(f"{a.out}: model.onnx, model.pt, card.json ({card['arch_id']}, error "
          f"{row['error_deg']:.2f} deg, {card['macs'] / 1e6:.2f} MMAC)")
    return 0


def cmd_finetune(a: argparse.Namespace) -> int:
    from nas.export import export_subnet
    from nas.finetune import FinetuneConfig, finetune_subnet
    from nas.train import supernet_id

    if a.epochs < 1 or a.lr <= 0 or not 0 <= a.kd <= 1:
        raise UserError("expected --epochs >= 1, --lr > 0 and --kd in [0, 1]", field="finetune")
    out = Path(a.out)
    arch, ev, sup, space, splits, cfg = _run_subnet(Path(a.run), a.arch)
    ft = FinetuneConfig(epochs=a.epochs, lr=a.lr, kd_weight=a.kd)
    tuned, rec = finetune_subnet(ev, arch, splits, ft, cfg["seed"], out / "finetune",
                                 supernet_id(sup), log)
    better = rec["error_finetuned"] < rec["error_inherited"]
    model = tuned if better else ev.subnet(arch)
    card = export_subnet(model, space, out, extra={
        "error_deg": min(rec["error_finetuned"], rec["error_inherited"]),
        "error_inherited_deg": rec["error_inherited"],
        "error_finetuned_deg": rec["error_finetuned"],
        "weights": "finetuned" if better else "inherited", "finetune": vars(ft)})
    print(f"{out}: {card['arch_id']} inherited {rec['error_inherited']:.2f} -> fine-tuned "
          f"{rec['error_finetuned']:.2f} deg; exported {card['weights']} weights")
    return 0


def cmd_baselines(a: argparse.Namespace) -> int:
    from nas.config import load_config

    cfg = load_config(a.config)
    cfg.baselines.enabled = True
    a.config_obj = cfg
    return cmd_run(a)


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gaze-nas", description=(
        "Hardware-aware NAS for gaze estimation: train a supernet once, profile a device, "
        "search the accuracy-latency Pareto front."))
    p.add_argument("--version", action="version", version=f"gaze-nas {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run every stage of an experiment config")
    r.add_argument("config")
    r.add_argument("--out", help="run folder (default runs/<name>)")
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("train", help="render data and train the supernet (resumable)")
    t.add_argument("config")
    t.add_argument("--out")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("space", help="inspect a search space")
    ss = s.add_subparsers(dest="space_cmd", required=True)
    show = ss.add_parser("show", help="layers, choices, MAC range and size")
    show.add_argument("file")
    show.set_defaults(fn=cmd_space_show)

    pr = sub.add_parser("profile", help="build a latency table for this machine")
    pr.add_argument("--space", required=True)
    pr.add_argument("--out", required=True, help="LUT file, e.g. latency_tables/<device>.yaml")
    pr.add_argument("--device", help="device name (default: from the CPU model)")
    pr.add_argument("--workers", type=int, default=2, help="ONNX export processes")
    pr.add_argument("--rounds", type=int, default=5)
    pr.set_defaults(fn=cmd_profile)

    lut = sub.add_parser("lut", help="latency-table tools")
    ls = lut.add_subparsers(dest="lut_cmd", required=True)
    v = ls.add_parser("validate", help="measure K random subnets end to end, fit the correction")
    v.add_argument("lut")
    v.add_argument("--space", required=True)
    v.add_argument("--samples", type=int, default=40)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--rounds", type=int, default=5)
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(fn=cmd_lut_validate)

    se = sub.add_parser("search", help="multi-objective search over a trained run")
    se.add_argument("--run", required=True, help="run folder holding supernet.pt")
    se.add_argument("--lut", required=True)
    se.add_argument("--budget-ms", type=float, nargs="*", default=[])
    se.add_argument("--strategy", default="evolution")
    se.add_argument("--evals", type=int, default=160)
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--out")
    se.set_defaults(fn=cmd_search)

    ex = sub.add_parser("export", help="export one subnet (ONNX + torch + card)")
    ex.add_argument("--run", required=True)
    ex.add_argument("--arch", required=True, help="arch_id from the run, or a canonical string")
    ex.add_argument("--out", required=True)
    ex.set_defaults(fn=cmd_export)

    ft = sub.add_parser("finetune", help="fine-tune one subnet from its inherited weights, "
                        "then export it")
    ft.add_argument("--run", required=True)
    ft.add_argument("--arch", required=True, help="arch_id from the run, or a canonical string")
    ft.add_argument("--epochs", type=int, default=2)
    ft.add_argument("--lr", type=float, default=1e-3)
    ft.add_argument("--kd", type=float, default=0.0,
                    help="weight of distillation from the supernet's largest subnet (0-1)")
    ft.add_argument("--out", required=True)
    ft.set_defaults(fn=cmd_finetune)

    bl = sub.add_parser("baselines", help="run a config with the seed study's hand-designed "
                        "baselines (reuses finished stages), writes baselines.json")
    bl.add_argument("config")
    bl.add_argument("--out", help="run folder (default runs/<name>)")
    bl.set_defaults(fn=cmd_baselines)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as exc:
        print(f"gaze-nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gaze-nas: interrupted; finished work is saved, run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
