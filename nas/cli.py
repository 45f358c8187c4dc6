"""`gaze-nas` command line. User mistakes exit 2 with one line; Ctrl-C exits 130 after the
running stage has saved what it finished."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from nas import __version__
from nas.distributed import EXECUTORS
from nas.errors import EXCERPT, UserError, excerpt, safe_name, with_source

_T0 = time.time()


def log(msg: str) -> None:
    """Progress goes to stderr so `--json` output on stdout stays machine-readable."""
    print(f"[{time.time() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- commands
@contextmanager
def _naming_config(cfg) -> Iterator[None]:
    """A stage's error about a config field (`train.device: cuda` without a GPU, found when
    training starts) names the config file as well as the field."""
    from nas.config import CONFIG_KEYS

    try:
        yield
    except UserError as exc:
        raise with_source(exc, cfg.source, CONFIG_KEYS) from None


def cmd_run(a: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.pipeline import run

    cfg = getattr(a, "config_obj", None) or load_config(a.config)
    out = _prepare_run(cfg, a.out)
    with _naming_config(cfg):
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
    out = _prepare_run(cfg, a.out)
    with _naming_config(cfg), RunLock(out):
        atomic_write_json(out / "run_config.json", cfg.to_dict())
        space = SearchSpace.load(cfg.space)
        clock = StageClock(log)
        with clock.stage("data"):
            splits = load_splits(cfg, log)
        with clock.stage("train") as info:
            if a.ray_workers:
                from nas.distributed.train import train_supernet_ray

                path = train_supernet_ray(cfg, out, workers=a.ray_workers, ray=cfg.ray,
                                          splits=splits, log=log)
            else:
                path = ensure_supernet(cfg, space, splits, out, log, info)
    print(path)
    return 0


def cmd_space_show(a: argparse.Namespace) -> int:
    from nas.latency.keys import all_keys
    from nas.models import build_net, count_macs, example_input
    from nas.space import SearchSpace

    sp = SearchSpace.load(a.file)
    print(f"space {sp.name} (version {sp.version}, task {sp.task}, hash {sp.space_hash()})")
    print(f"input: {sp.in_channels} channel(s), resolutions "
          + ", ".join(f"{h}x{w}" for h, w in sp.resolutions))
    for i in sp.inputs if not sp.layout.single else ():  # named inputs (input.inputs)
        what = (f"branch {i.branch}, " + ", ".join(f"{h}x{w}" for h, w in i.resolutions)
                if i.kind == "image" else f"size {i.size}, MLP -> {sp.head_width}")
        print(f"input {i.name}: {i.kind} ({what})")
    if not sp.layout.single:
        print(f"fusion: concatenated features -> {sp.head_fusion} -> linear -> {sp.outputs}")
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
        macs[name] = count_macs(build_net(sp, arch), example_input(sp, arch))
    print(f"MACs: {macs['smallest'] / 1e6:.2f} M (smallest) to {macs['largest'] / 1e6:.2f} M "
          "(largest)")
    print(f"size: {sp.size():.3e} distinct subnets; {len(all_keys(sp))} LUT keys")
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    from nas.latency import profile_space
    from nas.space import SearchSpace

    out = Path(a.out)
    if out.is_dir():
        raise UserError("expected a table file, found a folder", source=str(out), field="--out")
    _writable_dir(out.parent, "--out")
    sp = SearchSpace.load(a.space)
    t = profile_space(sp, out, device=a.device, workers=a.workers, rounds=a.rounds, log=log)
    print(f"{t.path}: {len(t.entries)} entries for device {t.meta.get('device')}")
    return 0


def cmd_lut_validate(a: argparse.Namespace) -> int:
    from nas.latency import LatencyTable, validate_table
    from nas.space import SearchSpace

    sp = SearchSpace.load(a.space)
    t = LatencyTable.load(a.lut)
    t.check_space(sp, correction=False)  # validation fits the correction anew
    rep = validate_table(t, sp, samples=a.samples, seed=a.seed, rounds=a.rounds, log=log)
    keys = ("mape", "within_5", "within_10", "kendall_tau", "n")
    if a.json:
        print(json.dumps({k: rep[k] for k in keys} | {"correction": t.correction}))
    else:
        print(f"{a.lut}: n={rep['n']} MAPE {rep['mape']:.2f}% within 5% {rep['within_5']:.0%} "
              f"within 10% {rep['within_10']:.0%} Kendall tau {rep['kendall_tau']:.3f} "
              "(leave-one-out)")
    return 0


def _writable_dir(path: Path, flag: str) -> Path:
    """`path` is (or can be made) a folder we may write: else a one-line UserError, before
    any work."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise UserError("expected a folder, found a file" if p == path else
                        f"cannot make a folder under the file {p}", source=str(path), field=flag)
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError("folder is not writable", source=str(p), field=flag)
    return path


def _check_run_folder(run_dir: Path, full: bool) -> None:
    """What a run folder holds is ours, or a one-line UserError: the supernet (`full`:
    also any training checkpoint) and the evaluation cache."""
    from nas.io import iter_jsonl, load_torch_dict
    from nas.train import SUPERNET_FORMAT

    if full and (run_dir / "supernet.pt").is_file():
        load_torch_dict(run_dir / "supernet.pt", "supernet", SUPERNET_FORMAT,
                        ("space", "state_dict"))
    if full and (run_dir / "train" / "checkpoint.pt").is_file():
        load_torch_dict(run_dir / "train" / "checkpoint.pt", "training checkpoint")
    if (run_dir / "eval_cache.jsonl").is_file():
        for _ in iter_jsonl(run_dir / "eval_cache.jsonl", ("arch_id", "arch")):
            pass


def _prepare_run(cfg, out_flag: str | None) -> Path:
    """The run folder of `run` / `train` / `baselines`, every input checked before the
    folder is touched: the config's other files, and what the folder already holds."""
    from nas.config import check_inputs

    out = _writable_dir(Path(out_flag or Path("runs") / cfg.name), "--out")
    check_inputs(cfg)
    _check_run_folder(out, full=True)
    return out


def _run_context(run_dir: Path):
    """Supernet path, its space, the run's validated config and the supernet's metadata; no
    data is loaded (see `_run_splits`), so every check here comes before any work."""
    from nas.config import config_from_dict
    from nas.io import load_torch_dict
    from nas.space import SearchSpace
    from nas.train import SUPERNET_FORMAT

    if not run_dir.is_dir():
        raise UserError("no such run folder", source=str(run_dir), field="--run")
    sup = run_dir / "supernet.pt"
    if not sup.is_file():
        raise UserError("no supernet.pt here (run `gaze-nas train` or `gaze-nas run` first)",
                        source=str(run_dir))
    cfg_path = run_dir / "run_config.json"
    if not cfg_path.is_file():
        raise UserError("missing run_config.json (not a gaze-nas run folder)", source=str(run_dir))
    try:
        raw = json.loads(cfg_path.read_text())
    except (ValueError, RecursionError) as exc:
        raise UserError(f"malformed JSON ({type(exc).__name__}: {str(exc)[:EXCERPT]})",
                        source=str(cfg_path)) from None
    cfg = config_from_dict(raw, str(cfg_path))
    meta = load_torch_dict(sup, "supernet", SUPERNET_FORMAT, ("space", "state_dict", "data"))
    try:
        space_dict = json.loads(meta["space"])
    except (TypeError, ValueError, RecursionError):
        raise UserError("the stored space is not JSON", source=str(sup), field="space") from None
    space = SearchSpace.from_dict(space_dict, source=f"{sup}:space")
    _check_run_folder(run_dir, full=False)
    return sup, space, cfg, meta


def _run_splits(run_dir: Path, cfg, meta: dict):
    """The data splits the run's supernet was trained on (rendered or from the cache)."""
    from dataclasses import asdict

    from nas.pipeline import splits_from

    cfg_path = run_dir / "run_config.json"
    splits = splits_from(asdict(cfg.data), cfg.seed, str(cfg_path), log)
    if splits.fingerprint != meta.get("data"):
        raise UserError(f"the data ({splits.fingerprint}) is not what the supernet was trained "
                        f"on ({excerpt(meta.get('data'))})", source=str(cfg_path), field="data")
    return splits


def cmd_search(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from nas.multidevice import load_devices
    from nas.pipeline import evaluator_spec, run_search_stage
    from nas.rundir import RunLock

    run_dir = Path(a.run)
    sup, space, cfg, meta = _run_context(run_dir)
    devices = load_devices(a.lut, space)  # one table, or one search over several devices
    budgets = devices.budgets(a.budget_ms, space, a.seed)
    s = cfg.search
    executor = a.executor or s.executor
    if executor == "ray":
        from nas.distributed import require_ray

        require_ray("--executor ray")  # a one-line error before any data loads
    from nas.config import strategy_options

    same = a.strategy == s.strategy  # the run's options belong to the run's strategy
    opts = strategy_options(replace(s, strategy=a.strategy,
                                    options={**(s.options if same else {}), **dict(a.option)},
                                    storage=a.storage or (s.storage if same else None)),
                            space, a.seed, src="--option")
    tag = a.strategy.replace(":", "_").replace(".", "_")
    stem = "+".join(Path(p).stem for p in a.lut)
    out = _writable_dir(Path(a.out or run_dir / f"search-{stem}-{tag}"), "--out")
    export_dir = _writable_dir(Path(a.export), "--export") if a.export else None
    splits = _run_splits(run_dir, cfg, meta)
    t0 = time.perf_counter()
    with ExitStack() as locks:  # the run folder (its evaluation cache) and the output folder
        locks.enter_context(RunLock(run_dir))
        if not out.resolve().is_relative_to(run_dir.resolve()):
            locks.enter_context(RunLock(out))
        res = run_search_stage(space, sup, splits, devices, out, strategy=a.strategy,
                               options=opts, warm_start=a.warm_start,
                               screen=s.screen if a.screen is None else a.screen,
                               fill_gaps=s.fill_gaps if a.fill_gaps is None else a.fill_gaps,
                               fill_share=s.fill_share if a.fill_share is None else a.fill_share,
                               evals=a.evals, budgets=budgets, seed=a.seed, batch=s.batch,
                               recal_images=s.recal_images, val_images=s.val_images,
                               threads=s.threads, log=log, executor=executor,
                               workers=a.workers or s.workers,
                               head_refit_images=s.head_refit_images,
                               ray=replace(cfg.ray, address=a.ray_address or cfg.ray.address),
                               spec=(evaluator_spec(sup, cfg, splits.fingerprint)
                                     if executor == "ray" else None))
        t_export = time.perf_counter()
        exported = (_export_picks(space, res, export_dir, devices) if export_dir else None)
        t_export = time.perf_counter() - t_export
    unmet = [f"{b['device']}:{b['budget_ms']:g}" if "device" in b else b["budget_ms"]
             for b in res["best_per_budget"] if not b.get("arch_id")]
    if a.json:  # for pipelines: one JSON object on stdout; exit 3 if a budget was not met
        sm = res["summary"]
        print(json.dumps({"out": str(out), "front_size": sm["front_size"],
                          "hypervolume": sm["hypervolume"], "n_trials": sm["n_trials"],
                          "evaluated_now": sm.get("evaluated_this_run"),
                          "seconds": round(time.perf_counter() - t0, 2),
                          "best_per_budget": res["best_per_budget"], "unmet_budgets_ms": unmet,
                          **({"exported": exported, "export_seconds": round(t_export, 2)}
                             if exported is not None else {}),
                          **_devices_summary(res, out)}))
        return 3 if unmet else 0
    print(f"{out / 'pareto.json'}: {len(res['front'])} Pareto-optimal subnets in "
          f"{time.perf_counter() - t0:.1f} s")
    task = res["evaluator"].task
    for b in res["best_per_budget"]:
        where = f"{b['device']} " if "device" in b else ""
        if b.get("arch_id"):
            print(f"  {where}<= {b['budget_ms']} ms: {b['arch_id']} error "
                  f"{task.format(b[task.error_key])}, {b['latency_ms']:.3f} ms")
        else:
            print(f"  {where}<= {b['budget_ms']} ms: none ({b.get('reason', '')})")
    for e in exported or []:
        print(f"  exported {e['arch_id']} -> {e['path']}")
    if "good_on_all" in res:
        print(f"  good on all {len(res['devices'])} devices: "
              + (", ".join(g["arch_id"] for g in res["good_on_all"]) or "none")
              + f" ({out / 'good_on_all.json'})")
    return 0


def _export_picks(space, res: dict, root: Path, devices) -> list[dict]:
    """Each distinct best-per-budget subnet exported to ROOT/<arch_id>/ with its inherited
    weights (as `gaze-nas export` would, without a process and a data load per subnet)."""
    from nas.pipeline import export_best

    cards = export_best(space, res, root, devices, log)
    return [{"arch_id": c["arch_id"], "path": str(root / c["arch_id"]),
             "macs": c["macs"]} for c in cards]


def _devices_summary(res: dict, out: Path) -> dict:
    """The --json fields of a search over several devices (none for one table)."""
    if "devices" not in res:
        return {}
    return {"devices": {d: {"out": str(out / "devices" / d),
                            "front_size": r["summary"]["front_size"],
                            "hypervolume": r["summary"]["hypervolume"]}
                        for d, r in res["devices"].items()},
            "good_on_all": [g["arch_id"] for g in res["good_on_all"]]}


def _run_subnet(run_dir: Path, arch_text: str):
    """(arch, evaluator, supernet path, space, splits, run config) for one subnet of a run,
    evaluated as the run's search evaluated it."""
    from nas.pipeline import build_evaluator, find_arch

    sup, space, cfg, meta = _run_context(run_dir)
    arch = find_arch(run_dir, space, arch_text)
    splits = _run_splits(run_dir, cfg, meta)
    ev = build_evaluator(sup, splits, recal_images=cfg.search.recal_images,
                         val_images=cfg.search.val_images, space=space, cache=True,
                         head_refit_images=cfg.search.head_refit_images)
    ev.cache_path = None  # read the run's errors (same tag, same numbers), never write: the
    return arch, ev, sup, space, splits, cfg  # search owns the file


def cmd_export(a: argparse.Namespace) -> int:
    from nas.export import export_subnet

    out = _writable_dir(Path(a.out), "--out")
    arch, ev, _, space, _, _ = _run_subnet(Path(a.run), a.arch)
    err = ev.evaluate(arch)[ev.task.error_key]
    card = export_subnet(ev.subnet(arch), space, out, extra={ev.task.error_key: err})
    print(f"{a.out}: model.onnx, model.pt, card.json ({card['arch_id']}, error "
          f"{ev.task.format(err)}, {card['macs'] / 1e6:.2f} MMAC)")
    return 0


def cmd_finetune(a: argparse.Namespace) -> int:
    from nas.export import export_subnet
    from nas.finetune import FinetuneConfig, card_errors, finetune_subnet
    from nas.train import supernet_id

    out = _writable_dir(Path(a.out), "--out")
    if a.tune:
        from nas.distributed.tune import TuneSettings, tune_finetune

        _, _, cfg, _ = _run_context(Path(a.run))  # every check before any work
        (r,) = tune_finetune(a.run, [a.arch], out_dir=out, workers=a.workers, ray=cfg.ray,
                             settings=TuneSettings(samples=a.samples, max_epochs=a.epochs),
                             log=log)
        print(f"{out / r['arch_id']}: {r['arch_id']} chose lr {r['lr']:.2e}, {r['epochs']} "
              f"epoch(s), kd {r['kd_weight']:g}: inherited {r['error_inherited']:.2f} -> "
              f"fine-tuned {r['error_finetuned']:.2f} {r['error_unit']} ({r['n_trials']} trials)")
        return 0
    arch, ev, sup, space, splits, cfg = _run_subnet(Path(a.run), a.arch)
    ft = FinetuneConfig(epochs=a.epochs, lr=a.lr, kd_weight=a.kd)
    tuned, rec = finetune_subnet(ev, arch, splits, ft, cfg.seed, out / "finetune",
                                 supernet_id(sup), log)
    better = rec["error_finetuned"] < rec["error_inherited"]
    model = tuned if better else ev.subnet(arch)
    card = export_subnet(model, space, out, extra={
        **card_errors(ev.task, rec["error_inherited"], rec["error_finetuned"]),
        "weights": "finetuned" if better else "inherited", "finetune": vars(ft)})
    print(f"{out}: {card['arch_id']} inherited {rec['error_inherited']:.2f} -> fine-tuned "
          f"{ev.task.format(rec['error_finetuned'])}; exported {card['weights']} weights")
    return 0


def cmd_baselines(a: argparse.Namespace) -> int:
    from nas.config import load_config

    cfg = load_config(a.config)
    cfg.baselines.enabled = True
    a.config_obj = cfg
    return cmd_run(a)


# ---------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (no usage block), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message, source=self.prog.partition(" ")[2] or None)


def _number(key: str, kind: type = int):
    """argparse type for a flag: the rule of `nas.config.LIMITS[key]`, the config field the
    flag sets (or the flag's own entry there where its meaning differs)."""
    def parse(text: str):
        from nas.config import field_error

        try:
            v = kind(text)
        except ValueError:
            v = text
        err = field_error(key, v, kind)
        if err:
            raise argparse.ArgumentTypeError(err)
        return v

    return parse


def _budget(text: str):
    """--budget-ms: a number (every device), or DEVICE:B1,B2 (that device's own)."""
    from nas.multidevice import parse_budget

    try:
        return parse_budget(text, _number("search.budgets_ms", float))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(text: str) -> str:
    if not safe_name(text):
        raise argparse.ArgumentTypeError(f"expected a plain device name (a file name: no '/', "
                                         f"not starting with '.'), got {excerpt(text)}")
    return text


def _strategy(text: str) -> str:
    """--strategy, checked while the flags are parsed, so a typo costs no data loading. The
    UserError passes through argparse (which catches only ArgumentTypeError, TypeError and
    ValueError), so the line reads `--strategy: unknown strategy ...; did you mean ...?`."""
    from nas.search.strategy import check_strategy

    check_strategy(text, field="--strategy")
    return text


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value read as YAML (so 16 is a number, true a bool)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {excerpt(text)}")
    try:
        v = yaml.safe_load(value) if value else None
    except yaml.YAMLError:
        v = value
    if not (v is None or isinstance(v, (bool, int, float, str))):
        raise argparse.ArgumentTypeError(f"expected a plain value for {key}, got "
                                         f"{excerpt(value)}")
    return key, v


def _arch(text: str) -> str:
    if not text.strip() or len(text) > 2000 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"expected an arch_id or a canonical arch string, got "
                                         f"{excerpt(text)}")
    return text


def _strategy_names() -> list[str]:
    from nas.search.strategy import known_strategies

    return known_strategies()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gaze-nas", description=(
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
    t.add_argument("--ray-workers", type=_number("search.workers"),
                   help="train data-parallel on this many Ray Train workers (gloo, 1 CPU each; "
                   "the run's ray.address, else a private Ray on this machine)")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("space", help="inspect a search space")
    ss = s.add_subparsers(dest="space_cmd", required=True)
    show = ss.add_parser("show", help="layers, choices, MAC range and size")
    show.add_argument("file")
    show.set_defaults(fn=cmd_space_show)

    pr = sub.add_parser("profile", help="build a latency table for this machine")
    pr.add_argument("--space", required=True)
    pr.add_argument("--out", required=True, help="LUT file, e.g. latency_tables/<device>.yaml")
    pr.add_argument("--device", type=_device, help="device name (default: from the CPU model)")
    pr.add_argument("--workers", type=_number("latency.workers"), default=2,
                    help="ONNX export processes")
    pr.add_argument("--rounds", type=_number("latency.rounds"), default=5)
    pr.set_defaults(fn=cmd_profile)

    lut = sub.add_parser("lut", help="latency-table tools")
    ls = lut.add_subparsers(dest="lut_cmd", required=True)
    v = ls.add_parser("validate", help="measure K random subnets end to end, fit the correction")
    v.add_argument("lut")
    v.add_argument("--space", required=True)
    v.add_argument("--samples", type=_number("lut validate --samples"), default=40)
    v.add_argument("--seed", type=_number("seed"), default=0)
    v.add_argument("--rounds", type=_number("latency.rounds"), default=5)
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(fn=cmd_lut_validate)
    from nas.latency.commands import register as register_latency_commands  # lut bundle/import/adapt
    register_latency_commands(ls, pr)

    se = sub.add_parser("search", help="multi-objective search over a trained run")
    se.add_argument("--run", required=True, help="run folder holding supernet.pt")
    se.add_argument("--lut", required=True, action="append", help="latency table; repeat "
                    "it to search for several devices at once (error + each one's latency)")
    se.add_argument("--budget-ms", type=_budget, nargs="*", default=[], metavar="B|DEVICE:B,B",
                    help="latency budgets: plain numbers for every device, DEVICE:B1,B2 for "
                    "one (default: 3 per device, log-spaced over its latency range)")
    se.add_argument("--strategy", type=_strategy, default="evolution", help=(
        "one of " + ", ".join(_strategy_names()) + ", or module:attr for your own Strategy "
        "(nni-* need the [nni] extra)"))
    se.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                    help="strategy option, e.g. population=16 (repeatable; default: the "
                    "run's search.options)")
    se.add_argument("--json", action="store_true", help="print a JSON summary on stdout and "
                    "exit 3 when a budget could not be met (0 when all were)")
    se.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=True,
                    help="start from the subnets this supernet already evaluated, re-ranked "
                    "on the new table (their errors are free); on by default")
    se.add_argument("--screen", type=_number("search.screen"), metavar="N",
                    help="ask N x the candidates and measure those an error predictor "
                    "(fitted on the cache and every result) expects to improve the front; "
                    "0: off (default: the run's search.screen)")
    se.add_argument("--fill-gaps", type=_number("search.fill_gaps", float), metavar="RATIO",
                    help="while the front has a latency step wider than RATIO, spend up to "
                    "--fill-share of the evaluations on archs the table puts inside it; "
                    "0: off (default: the run's search.fill_gaps)")
    se.add_argument("--fill-share", type=_number("search.fill_share", float), metavar="S",
                    help="share of the evaluations gap filling may take (default: the run's "
                    "search.fill_share)")
    se.add_argument("--export", metavar="DIR", help="then export each budget's best subnet "
                    "(ONNX + torch + card) to DIR/<arch_id>/, in this process")
    se.add_argument("--storage", help="optuna-*: study storage URL, e.g. "
                    "sqlite:///study.db (default: optuna.db in the output folder)")
    se.add_argument("--evals", type=_number("search.evals"), default=160)
    se.add_argument("--seed", type=_number("seed"), default=0)
    se.add_argument("--out")
    se.add_argument("--executor", choices=EXECUTORS, help="sequential, or ray: each batch "
                    "on --workers Ray workers, same result (default: the run's search.executor)")
    se.add_argument("--workers", type=_number("search.workers"),
                    help="Ray workers with --executor ray (default: the run's search.workers)")
    se.add_argument("--ray-address", help="Ray cluster to join with --executor ray (default: "
                    "the run's ray.address, else a private Ray on this machine)")
    se.set_defaults(fn=cmd_search)

    ex = sub.add_parser("export", help="export one subnet (ONNX + torch + card)")
    ex.add_argument("--run", required=True)
    ex.add_argument("--arch", required=True, type=_arch,
                    help="arch_id from the run, or a canonical string")
    ex.add_argument("--out", required=True)
    ex.set_defaults(fn=cmd_export)

    ft = sub.add_parser("finetune", help="fine-tune one subnet from its inherited weights, "
                        "then export it")
    ft.add_argument("--run", required=True)
    ft.add_argument("--arch", required=True, type=_arch,
                    help="arch_id from the run, or a canonical string")
    ft.add_argument("--epochs", type=_number("finetune --epochs"), default=2)
    ft.add_argument("--lr", type=_number("finetune.lr", float), default=1e-3)
    ft.add_argument("--kd", type=_number("finetune.kd_weight", float), default=0.0,
                    help="weight of distillation from the supernet's largest subnet (0-1)")
    ft.add_argument("--tune", action="store_true", help="instead: let Ray Tune pick the "
                    "learning rate, epochs (1 to --epochs) and distillation weight, with ASHA "
                    "early stopping; exports the best to OUT/<arch_id>/, all trials in "
                    "OUT/summary.json")
    ft.add_argument("--samples", type=_number("search.workers"), default=8,
                    help="with --tune: trials")
    ft.add_argument("--workers", type=_number("search.workers"), default=2,
                    help="with --tune: concurrent trials (Ray workers, 1 CPU each)")
    ft.add_argument("--out", required=True)
    ft.set_defaults(fn=cmd_finetune)

    bl = sub.add_parser("baselines", help="run a config with the seed study's hand-designed "
                        "baselines (reuses finished stages), writes baselines.json")
    bl.add_argument("config")
    bl.add_argument("--out", help="run folder (default runs/<name>)")
    bl.set_defaults(fn=cmd_baselines)

    from nas.gaze.datasets.commands import add_data_commands

    add_data_commands(sub)
    return p


def _check_environment() -> None:
    cache = os.environ.get("GAZE_NAS_CACHE")
    if cache is not None and (not cache.strip() or Path(cache).is_file()):
        raise UserError(f"expected a folder for rendered datasets (unset it for "
                        f"~/.cache/gaze-nas), got {excerpt(cache)}", source="environment",
                        field="GAZE_NAS_CACHE")


def _os_error(exc: OSError) -> str:
    """One line for a file-system error: the path(s) and the reason."""
    paths = [str(f)[:200] for f in (exc.filename, exc.filename2) if f is not None]
    return f"{' -> '.join(paths) or 'file system'}: {exc.strerror or type(exc).__name__}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _check_environment()
        return args.fn(args)
    except UserError as exc:
        print(f"gaze-nas: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only folder, a file where a folder belongs, a full disk
        print(f"gaze-nas: error: {UserError(_os_error(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gaze-nas: interrupted; finished work is saved, run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
