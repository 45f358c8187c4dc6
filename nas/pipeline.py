"""Run an experiment config end to end: data -> supernet -> LUT -> validate -> search ->
export -> report. A stage whose outputs exist and were made from the same inputs is skipped,
so an interrupted run picks up where it stopped and a changed LUT re-runs only the search."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from nas import __version__
from nas.config import ExperimentConfig, strategy_options
from nas.distributed import EXECUTORS  # names only: no ray import
from nas.errors import UserError, excerpt
from nas.gaze.tasks import get_task
from nas.io import atomic_write_json, file_hash, git_sha, json_hash, package_versions
from nas.space import Arch, SearchSpace

Log = Callable[[str], None]


class StageClock:
    """Times each stage and remembers whether it ran or was reused."""

    def __init__(self, log: Log):
        self.log, self.times, self.status = log, {}, {}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        info = {"status": "ran"}
        self.log(f"== {name}")
        t0 = time.perf_counter()
        yield info
        dt = time.perf_counter() - t0
        self.times[name] = round(dt, 2)
        self.status[name] = info["status"]
        self.log(f"== {name}: {dt:.1f} s ({info['status']})")


def load_splits(cfg: ExperimentConfig, log: Log):
    """The config's data, checked against its space (input channels, named inputs) and as
    its network takes them (a head pose beside the face where the space asks for it)."""
    splits = splits_from(asdict(cfg.data), cfg.seed, cfg.source, log)
    return splits.for_space(SearchSpace.load(cfg.space), str(cfg.space))


def splits_from(data: dict, seed: int, source: str, log: Log):
    from nas.gaze.data import splits_from as _splits_from

    return _splits_from(data, seed, source, log)


def ensure_supernet(cfg: ExperimentConfig, space: SearchSpace, splits, out: Path, log: Log,
                    info: dict) -> Path:
    from nas.train import load_checkpoint, train_fingerprint, train_supernet

    path = out / "supernet.pt"
    want = train_fingerprint(space, splits, cfg.train, cfg.seed)
    if path.exists() and load_checkpoint(path).get("fingerprint") == want:
        info["status"] = "reused"
        return path
    return train_supernet(space, splits, cfg.train, cfg.seed, out, log)


def ensure_lut(cfg: ExperimentConfig, space: SearchSpace, out: Path, log: Log, info: dict):
    from nas.latency import LatencyTable, profile_space

    if cfg.latency.lut:
        table = LatencyTable.load(cfg.latency.lut)
        table.check_space(space)
        info["status"] = "given"
        return table
    from nas.latency.runtime import device_info

    device = cfg.latency.device or device_info()["device"]
    path = out / "latency" / f"{device}.yaml"
    if path.exists():
        table = LatencyTable.load(path)
        if table.meta.get("complete") and not table.missing(list(space.all_keys())):
            info["status"] = "reused"
            return table
    return profile_space(space, path, device=device, workers=cfg.latency.workers,
                         rounds=cfg.latency.rounds, log=log)


def ensure_validated(cfg: ExperimentConfig, space: SearchSpace, table, out: Path, log: Log,
                     info: dict):
    """Fit and check the table's correction on whole subnets measured here. A table the
    user named is an input and is never written: if it carries a validation it is used as
    given; if not, a validated copy is written into the run folder and used instead.
    Returns (table, report)."""
    from nas.latency import validate_table
    from nas.latency.runtime import device_info
    from nas.latency.validate import SAMPLER

    v = table.validation or {}
    if cfg.latency.lut:
        if v:
            info["status"] = "given"
            log(f"validate: {table.path} carries its own validation (n={v.get('n')}, "
                f"MAPE {v.get('mape')}%); used as given")
            return table, v
        here = device_info()
        if any(table.meta.get(f) not in (None, here[f]) for f in ("cpu_model", "cores")):
            info["status"] = "skipped"
            log(f"validate: {table.path} is for {table.device!r}, not this machine, and has "
                "no validation: its correction is used as given")
            return table, v
        table = copy_table(table, out / "latency" / "validated" / Path(table.path).name)
        log(f"validate: {cfg.latency.lut} has no validation; validating a copy at {table.path}")
        v = table.validation or {}
    if v.get("n") == cfg.latency.validate_samples and v.get("seed", cfg.seed) == cfg.seed \
            and v.get("space_hash", space.space_hash()) == space.space_hash() \
            and v.get("sampler") == SAMPLER:
        info["status"] = "reused"
        return table, v
    if cfg.latency.validate_samples < 4:
        info["status"] = "skipped"
        return table, v
    return table, validate_table(table, space, samples=cfg.latency.validate_samples,
                                 seed=cfg.seed, rounds=cfg.latency.rounds, log=log)


def copy_table(table, path: Path):
    """The same table bound to another file (reused if that file already holds it)."""
    from nas.latency import LatencyTable

    if path.exists():
        old = LatencyTable.load(path)
        if old.entries == table.entries and old.meta.get("device") == table.meta.get("device"):
            return old
    t = LatencyTable(meta=dict(table.meta), space_hashes=list(table.space_hashes),
                     entries=dict(table.entries), correction=dict(table.correction),
                     validation=table.validation, path=path)
    t.save()
    return t


def auto_budgets(space: SearchSpace, table, seed: int) -> list[float]:
    """Three budgets spread log-uniformly (at 1/4, 1/2, 3/4) between the smallest and the
    largest subnet's predicted latency on this device, so a default run asks something
    meaningful of any machine. `seed` is unused: the budgets depend only on the table."""
    del seed
    lo = table.predict(space, space.smallest())
    hi = table.predict(space, space.largest())
    return [float(f"{x:.3g}") for x in np.exp(np.log(lo) + np.array([0.25, 0.5, 0.75])
                                                  * (np.log(hi) - np.log(lo)))]


HV_RULE = ("fixed: error = the mean-gaze error on the validation set (a subnet worse than "
           "always predicting the mean gaze adds nothing), latency = 1.1 x the table's "
           "prediction for the space's largest subnet")


def hv_reference(space: SearchSpace, table, splits) -> tuple[float, float]:
    """The hypervolume reference point of every search of one (space, table, data): fixed
    by the problem, not by what a run happened to evaluate, so fronts of different runs and
    strategies compare."""
    from nas.evaluation import mean_gaze_error

    return (round(mean_gaze_error(splits, space.task), 4),
            round(1.1 * table.predict(space, space.largest()), 5))


def table_hash(table) -> str:
    return json_hash({"entries": table.entries, "correction": table.correction,
                      "device": table.meta.get("device")})


EVAL_CACHE = "eval_cache.jsonl"  # next to supernet.pt: every search of that supernet shares it


def build_evaluator(supernet_path: str | Path, splits, *, recal_images: int, val_images: int,
                    threads: int | None = None, space: SearchSpace | None = None,
                    cache: bool = True, head_refit_images: int = 0):
    """The subnet evaluator of a run: inherited weights of `supernet_path`, BN recalibrated
    on `recal_images` training images (and, if `head_refit_images`, the linear head refitted
    on that many), error on `val_images` validation images. The one
    place the evaluation-cache tag is made, so the search (in this process or on Ray
    workers), fine-tuning and Tune all evaluate alike and share `eval_cache.jsonl`.
    `cache=False` (Ray workers): no cache file is read or written; the driver records the
    rows it receives."""
    from nas.evaluation import SubnetEvaluator
    from nas.train import load_supernet, weights_hash

    supernet_path = Path(supernet_path)
    supernet, sup_meta = load_supernet(supernet_path)
    sup_hash = sup_meta.get("weights_hash") or weights_hash(supernet.state_dict())
    ev = SubnetEvaluator(supernet, space or supernet.space, splits, recal_images=recal_images,
                         val_images=val_images, threads=threads,
                         head_refit_images=head_refit_images,
                         cache_path=supernet_path.parent / EVAL_CACHE if cache else None,
                         cache_tag=json_hash([sup_hash, recal_images, val_images,
                                              splits.fingerprint]
                                             + ([head_refit_images] if head_refit_images
                                                else [])))
    ev.supernet_hash = sup_hash
    return ev


@dataclass(frozen=True)
class EvaluatorSpec:
    """What another process (a Ray worker, a Tune trial, on this machine or another one)
    needs to rebuild a run's evaluator with `evaluator_from_spec`: settings only,
    picklable. The data is rendered (or loaded from the worker's cache) from the run's
    `data` section and seed and must have the run's fingerprint."""

    supernet: str                 # the driver's supernet.pt (Ray ships its bytes to workers)
    data: dict
    seed: int
    data_fingerprint: str
    recal_images: int
    val_images: int
    threads: int = 1
    source: str = "<run>"
    cache_dir: str | None = None  # $GAZE_NAS_CACHE of the driver (None: the worker's own)
    head_refit_images: int = 0


def evaluator_spec(supernet_path: str | Path, cfg: ExperimentConfig, data_fingerprint: str,
                   *, threads: int = 1, source: str | None = None) -> EvaluatorSpec:
    """The spec of a run's evaluator, with the search settings of `cfg`."""
    return EvaluatorSpec(supernet=str(Path(supernet_path).resolve()), data=asdict(cfg.data),
                         seed=cfg.seed, data_fingerprint=data_fingerprint,
                         recal_images=cfg.search.recal_images,
                         val_images=cfg.search.val_images, threads=threads,
                         source=source or cfg.source,
                         cache_dir=os.environ.get("GAZE_NAS_CACHE"),
                         head_refit_images=cfg.search.head_refit_images)


def evaluator_from_spec(spec: EvaluatorSpec, log: Log = lambda _m: None):
    """(evaluator, splits) rebuilt from a spec, without an evaluation-cache file."""
    if spec.cache_dir:
        os.environ["GAZE_NAS_CACHE"] = spec.cache_dir
    splits = splits_from(spec.data, spec.seed, spec.source, log)
    if splits.fingerprint != spec.data_fingerprint:
        raise UserError(f"the data here ({splits.fingerprint}) is not the run's "
                        f"({spec.data_fingerprint})", source=spec.source, field="data")
    ev = build_evaluator(spec.supernet, splits, recal_images=spec.recal_images,
                         val_images=spec.val_images, threads=spec.threads, cache=False,
                         head_refit_images=spec.head_refit_images)
    return ev, splits.for_space(ev.space, spec.source)


def warm_start_seeds(ev, space: SearchSpace, table, out_dir: Path, cap: int) -> list[Arch]:
    """The subnets of the evaluation cache (errors are device-independent) that are on the
    first two Pareto fronts under `table`'s latency, fastest first, at most `cap`: the first
    front before the second, and a front longer than the room left spread evenly along it
    (both ends kept), so a cap never cuts off the accurate end. Written to
    `out_dir/seeds.json` the first time, so a resumed search uses the same seeds even though
    the cache has grown since."""
    from nas.search.pareto import nondominated_sort

    path, lut = out_dir / "seeds.json", table_hash(table)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if saved["lut"] == lut:
                return [space.parse(a) for a in saved["seeds"]]
        except (ValueError, TypeError, KeyError, UserError):
            pass  # unreadable: recompute
    err_key = get_task(space.task).error_key
    rows = [r for r in ev.cache.values() if np.isfinite(r.get(err_key, np.nan))]
    archs = [space.parse(r["arch"]) for r in rows]
    if archs:
        F = np.array([[r[err_key], table.predict(space, a)] for r, a in zip(rows, archs)])
        picked: list[int] = []
        for front in nondominated_sort(F)[:2]:
            room = cap - len(picked)
            if room <= 0:
                break
            front = sorted(front, key=lambda i: (F[i, 1], F[i, 0]))
            if len(front) > room:
                front = [front[j] for j in np.unique(np.linspace(0, len(front) - 1, room)
                                                     .round().astype(int))]
            picked += front
        archs = [archs[i] for i in sorted(picked, key=lambda i: (F[i, 1], F[i, 0]))]
    atomic_write_json(path, {"lut": lut, "seeds": [a.to_string() for a in archs]})
    return archs


def search_row(space: SearchSpace, table, arch: Arch, row: dict) -> dict:
    """What the search sees of an evaluator row: error, LUT latency, params, MACs, and
    the signals `_reused` (served from the cache) and `_seconds` (time to evaluate)."""
    row = {**row, "latency_ms": round(table.predict(space, arch), 5)}
    return {k: row[k] for k in (get_task(space.task).error_key, "latency_ms", "params", "macs",
                                "_reused", "_seconds") if k in row}


def run_search_stage(space: SearchSpace, supernet_path: Path, splits, table, out_dir: Path,
                     *, strategy: str, evals: int, budgets: list[float], seed: int,
                     batch: int, recal_images: int, val_images: int, threads: int,
                     log: Log, restart_if_changed: bool = False,
                     executor: str = "sequential", workers: int = 2, ray: Any = None,
                     spec: EvaluatorSpec | None = None, head_refit_images: int = 0,
                     options: dict | None = None, warm_start: bool = False,
                     screen: int = 0, fill_gaps: float = 0.0, fill_share: float = 0.25
                     ) -> dict:
    """Search with inherited-weight error and LUT latency; errors cached per supernet.

    `screen` > 0 asks the strategy for `screen` x as many candidates as each batch needs
    and evaluates those of largest predicted hypervolume gain (`nas.search.screening`),
    the predictor fitted on every error told so far and, with `warm_start`, on the whole
    error cache of the supernet. `fill_gaps` > 1 spends up to `fill_share` of the
    evaluations inside the front's latency steps wider than that ratio
    (`nas.search.gapfill`).

    `executor="ray"` evaluates each batch on `workers` Ray actors (`ray`: a
    `nas.distributed.RayConfig`; default a private local Ray) built from `spec` (the run's
    `EvaluatorSpec`); the cache file is written here only and results are told in ask
    order, so the trials, the front and a resume are those of a sequential search.
    `table` may be several tables (a list or `nas.multidevice.Devices`): one search over
    error and each device's latency, `budgets` then {device: budgets}."""
    from nas.multidevice import as_devices
    from nas.search import make_strategy, run_search

    devices = as_devices(table)
    if executor not in EXECUTORS:
        raise UserError(f"expected one of {', '.join(EXECUTORS)}, got {executor!r}",
                        field="search.executor")
    ev = build_evaluator(supernet_path, splits, recal_images=recal_images,
                         val_images=val_images, threads=threads, space=space,
                         head_refit_images=head_refit_images)

    def finish(arch: Arch, row: dict) -> dict:
        return devices.search_row(space, arch, row)

    def evaluate(arch: Arch) -> dict:
        return finish(arch, ev.evaluate(arch))

    meta = {"space": space.name, "space_hash": space.space_hash(),
            "supernet": ev.supernet_hash, **devices.meta(), "strategy": strategy,
            "seed": seed, "budgets_ms": budgets, "tool_version": __version__}
    from nas.search.strategy import Seeded

    strat = make_strategy(strategy, space, seed, **(options or {}))
    fast = devices.fastest(space)  # the device's fast end, which MACs do not find
    meta["device_fastest"] = [a.arch_id for a in fast]
    seeds = list(fast)
    if warm_start:
        warm = devices.warm_start(ev, space, Path(out_dir), cap=max(1, evals // 2))
        meta["warm_start"] = json_hash([a.arch_id for a in warm])
        seeds += warm
        log(f"search: warm start from {len(warm)} subnets already evaluated on this "
            f"supernet, re-ranked on {devices.device} (their errors are reused)")
    if screen:  # seeds are served first, unscreened
        strat = _screened(strat, ev, space, devices, splits, screen, warm_start, meta, log)
    if fill_gaps:
        from nas.search.gapfill import GapFilled

        strat = GapFilled(strat, lambda a: devices.latencies(space, a), fill_gaps, fill_share)
        meta["fill_gaps"] = [fill_gaps, fill_share]
    strat = Seeded(strat, seeds)
    runner = None
    if executor == "ray":
        from nas.distributed.executor import RayExecutor

        if spec is None:
            raise ValueError("executor='ray' needs the run's EvaluatorSpec (spec=...)")
        if (spec.recal_images, spec.val_images, spec.data_fingerprint,
                spec.head_refit_images) != (recal_images, val_images, splits.fingerprint,
                                            head_refit_images):
            raise ValueError("the EvaluatorSpec does not describe this search's evaluator")
        runner = RayExecutor(spec, finish, workers=workers, ray=ray, lookup=ev.cached,
                             record=ev.record, log=log)
    try:
        result = run_search(space, strat, evaluate, evals=evals,
                            budgets=devices.by_objective(budgets),
                            objectives=devices.objectives(space),
                            out_dir=out_dir, batch=batch, log=log, meta=meta,
                            restart_if_changed=restart_if_changed,
                            hv_ref=devices.hv_reference(space, splits), hv_rule=devices.hv_rule,
                            executor=runner)
    finally:
        if runner is not None:
            runner.close()
    result["evaluator"] = ev
    return result


def _screened(strat, ev, space: SearchSpace, devices, splits, oversample: int,
              from_cache: bool, meta: dict, log: Log):
    """`strat` screened by the error predictor. With `from_cache` the predictor also learns
    from the supernet's whole error cache, as a re-search does; a fresh search learns only
    from what it measures, so strategies compare on equal information."""
    from nas.search.screening import Screened

    key = ev.task.error_key
    rows = ([(space.parse(r["arch"]), r[key]) for r in ev.cache.values()
             if np.isfinite(r.get(key, np.nan))] if from_cache else [])
    screened = Screened(strat, rows, lambda a: devices.latencies(space, a),
                        devices.hv_reference(space, splits), oversample=oversample)
    meta["screen"] = {"oversample": oversample, "from_cache": from_cache}
    log(f"search: screening {oversample}x candidates with an error predictor"
        + (f" fitted on {len(rows)} cached errors" if rows else "") + " and every result")
    return screened


# What each stage leaves in the run folder, in pipeline order: when a stage's inputs change,
# its outputs and all later ones are moved aside (caches keyed on content stay: the
# evaluation cache, fine-tuned weights per subnet, the table, trained baselines).
STAGE_OUTPUTS = {
    "train": ["supernet.pt", "train"],
    "search": ["search"],
    "export": ["export"],
    "baselines": ["baselines.json"],
    "report": ["report.md", "manifest.json"],
}


def run(cfg: ExperimentConfig, out: str | Path, log: Log = print) -> dict:
    """Run every stage of `cfg` into `out` (locked for this process); returns the manifest."""
    from nas.config import check_inputs
    from nas.rundir import RunLock

    check_inputs(cfg)  # the same checks across files as the CLI, before any work
    with RunLock(out):
        atomic_write_json(Path(out) / "run_config.json", cfg.to_dict())
        return _run_locked(cfg, Path(out), log)


def _run_locked(cfg: ExperimentConfig, out: Path, log: Log) -> dict:
    from nas.rundir import StageLedger
    from nas.train import train_fingerprint

    clock = StageClock(log)
    ledger = StageLedger(out, STAGE_OUTPUTS, log)
    space = SearchSpace.load(cfg.space)
    t_all = time.perf_counter()
    with clock.stage("data") as info:
        splits = load_splits(cfg, log)
    want = train_fingerprint(space, splits, cfg.train, cfg.seed)
    if "train" not in ledger.keys and (out / "supernet.pt").exists():  # a folder from before
        from nas.train import load_checkpoint                          # the ledger existed

        ledger.keys["train"] = load_checkpoint(out / "supernet.pt").get("fingerprint") or "?"
    ledger.enter("train", want)
    with clock.stage("train") as info:
        sup_path = ensure_supernet(cfg, space, splits, out, log, info)
    from nas.multidevice import as_devices, ensure_devices

    if cfg.latency.luts:  # several devices: one search over all their tables
        table, fidelity = ensure_devices(cfg, space, out, log, clock)
    else:
        with clock.stage("latency") as info:
            table = ensure_lut(cfg, space, out, log, info)
        with clock.stage("validate") as info:
            table, fidelity = ensure_validated(cfg, space, table, out, log, info)
    devices = as_devices(table)
    budgets = devices.budgets(cfg.search.budgets_ms, space, cfg.seed, "search.budgets_ms",
                              cfg.source)
    from nas.train import supernet_id

    sup_id = supernet_id(sup_path)
    s = cfg.search
    ledger.enter("search", json_hash([sup_id, devices.hash, budgets, s.strategy, s.evals,
                                      s.batch, s.recal_images, s.val_images, cfg.seed,
                                      splits.fingerprint]
                                     + ([s.head_refit_images] if s.head_refit_images else [])
                                     + ([s.options, s.storage] if s.options or s.storage
                                        else [])
                                     + ([s.screen] if s.screen else [])
                                     + ([s.fill_gaps, s.fill_share] if s.fill_gaps else [])))
    with clock.stage("search") as info:
        res = run_search_stage(space, sup_path, splits, table, out / "search",
                               strategy=s.strategy, evals=s.evals, budgets=budgets,
                               seed=cfg.seed, batch=s.batch, recal_images=s.recal_images,
                               val_images=s.val_images, threads=s.threads, log=log,
                               restart_if_changed=True, executor=s.executor,
                               workers=s.workers, ray=cfg.ray,
                               head_refit_images=s.head_refit_images, screen=s.screen,
                               fill_gaps=s.fill_gaps, fill_share=s.fill_share,
                               options=strategy_options(s, space, cfg.seed, cfg.source),
                               spec=(evaluator_spec(sup_path, cfg, splits.fingerprint)
                                     if s.executor == "ray" else None))
        if res.get("resumed_complete"):
            info["status"] = "reused"
    picks = sorted(_budget_picks(res))
    ledger.enter("export", json_hash([picks, asdict(cfg.finetune), res["evaluator"].cache_tag,
                                      devices.hash]))
    with clock.stage("finetune") as info:
        tuned = finetune_best(cfg, space, res, splits, out / "finetune", log, info)
    with clock.stage("export") as info:
        exported = export_best(space, res, out / "export", table, log, tuned)
    ledger.enter("baselines", json_hash([asdict(cfg.baselines), [p["arch_id"] for p in
                                                                 res["front"]]]))
    with clock.stage("baselines") as info:
        baselines = ensure_baselines(cfg, space, splits, out, devices.tables[0], res, log, info)
    from nas.evaluation import mean_gaze_error
    from nas.report import write_report
    from nas.train import load_checkpoint

    sup_meta = load_checkpoint(sup_path)
    task = get_task(space.task)
    manifest = {
        "name": cfg.name, "tool_version": __version__, "config": cfg.to_dict(),
        "config_file": cfg.source, "seeds": {"experiment": cfg.seed}, "git_sha": git_sha(),
        "versions": package_versions(),
        "hashes": {"space": space.space_hash(), "space_file": file_hash(cfg.space),
                   "supernet": sup_id, "supernet_file": file_hash(sup_path),
                   "lut": devices.hash, "data": splits.fingerprint},
        "lut_path": devices.path, "device": devices.device,
        "budgets_ms": budgets, "stage_seconds": clock.times, "stage_status": clock.status,
        "total_seconds": round(time.perf_counter() - t_all, 1),
        task.key("mean_gaze_error"): mean_gaze_error(splits, space.task),
        "error_unit": task.unit, "error_key": task.error_key,
        "supernet_train_img_s": sup_meta.get("throughput_img_s"),
        "lut_fidelity": devices.fidelity(fidelity),
        "exported": exported,
        "baselines": baselines,
    }
    ledger.enter("report", json_hash(ledger.keys))
    atomic_write_json(out / "manifest.json", manifest)
    write_report(out, manifest, res, json.loads(sup_meta.get("history", "[]")), task)
    log(f"== done in {manifest['total_seconds']:.0f} s: {out / 'report.md'}")
    return manifest


def _budget_picks(res: dict) -> dict[str, dict]:
    """The distinct subnets the budgets picked (arch_id -> best_per_budget row + budgets;
    with several devices, {device: budgets})."""
    picks: dict[str, dict] = {}
    for b in res["best_per_budget"]:
        if b.get("arch_id") and "device" in b:
            picks.setdefault(b["arch_id"], {**b, "budgets_ms": {}})["budgets_ms"].setdefault(
                b["device"], []).append(b["budget_ms"])
        elif b.get("arch_id"):
            picks.setdefault(b["arch_id"], {**b, "budgets_ms": []})["budgets_ms"].append(
                b["budget_ms"])
    return picks


def finetune_best(cfg: ExperimentConfig, space: SearchSpace, res: dict, splits, out: Path,
                  log: Log, info: dict) -> dict[str, tuple]:
    """Fine-tune every budget's best subnet from its inherited weights (once per subnet)."""
    from nas.finetune import finetune_subnet

    if cfg.finetune.epochs == 0:
        info["status"] = "skipped"
        return {}
    ev = res["evaluator"]
    tuned, reused = {}, 0
    for arch_id, b in _budget_picks(res).items():
        net, rec = finetune_subnet(ev, space.parse(b["arch"]), splits, cfg.finetune, cfg.seed,
                                   out, ev.cache_tag, log)
        tuned[arch_id] = (net, rec)
        reused += rec["reused"]
    if tuned and reused == len(tuned):
        info["status"] = "reused"
    return tuned


def export_best(space: SearchSpace, res: dict, out: Path, table, log: Log,
                tuned: dict[str, tuple] | None = None) -> list[dict]:
    """Export the best subnet under each budget, once per distinct subnet: its fine-tuned
    weights where fine-tuning beat the inherited ones, else the inherited weights. `table`
    may be several tables: the card then holds every device's predicted latency."""
    from nas.export import export_subnet
    from nas.finetune import card_errors
    from nas.multidevice import as_devices

    devices = as_devices(table)
    ev = res["evaluator"]
    task = ev.task
    tuned = tuned or {}
    cards = []
    for arch_id, b in _budget_picks(res).items():
        d = out / arch_id
        net, rec = tuned.get(arch_id, (None, None))
        use_tuned = rec is not None and rec["error_finetuned"] < rec["error_inherited"]
        extra = {
            **card_errors(task, b[task.error_key], rec["error_finetuned"] if rec else None),
            "weights": "finetuned" if use_tuned else "inherited",
            "weights_note": ("fine-tuned standalone from the inherited supernet weights"
                             if use_tuned else
                             "inherited supernet weights, BN recalibrated"
                             + (" (fine-tuning did not lower the error)" if rec else "")),
            **devices.card_fields(b),
            "budgets_ms": b["budgets_ms"], "supernet_hash": res.get("meta", {}).get("supernet"),
            "lut_hash": devices.hash}
        card_path = d / "card.json"
        if card_path.exists():
            card = json.loads(card_path.read_text())
            if all(card.get(k) == v for k, v in extra.items()):
                cards.append(card)
                continue
        model = net if use_tuned else ev.subnet(space.parse(b["arch"]))
        card = export_subnet(model, space, d, extra=extra)
        log(f"export: {arch_id} ({extra['weights']}, {task.format(extra[task.error_key])}) "
            f"-> {d} "
            f"(onnx diff {card['onnx']['max_abs_diff_vs_torch']:.1e})")
        cards.append(card)
    return cards


def ensure_baselines(cfg: ExperimentConfig, space: SearchSpace, splits, out: Path, table,
                     res: dict, log: Log, info: dict) -> list[dict]:
    """Train the seed study's hand-designed nets, time them and the searched front end to
    end in one interleaved run on this machine, and say which searched subnet dominates
    each; writes baselines.json and marks them on the Pareto plot."""
    from nas.baselines import (dominators, rebuild, run_baselines, speedup_at_error,
                               time_end_to_end, train_front)
    from nas.latency.runtime import device_info
    from nas.search import replot
    from nas.train import scratch_schedule

    if not cfg.baselines.enabled:
        info["status"] = "skipped"
        return []
    here = device_info()["device"]
    if table.meta.get("device") != here:
        raise UserError(f"baselines are timed on this machine ({here}), but the run's table "
                        f"is for {table.meta.get('device')!r}; use this machine's table",
                        source=cfg.source, field="baselines.enabled")
    schedule = scratch_schedule(cfg.train)
    rows = run_baselines(space, asdict(cfg.data), splits, schedule, cfg.seed,
                         cfg.search.val_images, out / "baselines",
                         lr_sweep=cfg.baselines.lr_sweep, workers=cfg.baselines.workers,
                         log=log)
    scratch = train_front(space, [space.parse(p["arch"]) for p in res["front"]],
                          asdict(cfg.data), splits, schedule, cfg.seed, cfg.search.val_images,
                          out / "baselines" / "front_scratch.jsonl",
                          workers=cfg.baselines.workers, log=log)
    ev = res["evaluator"]
    nets = {}
    for r in rows:
        net, bspace = rebuild(r)
        nets[f"baseline:{r['name']}"] = (net, (1, space.in_channels, *bspace.resolutions[0]))
    for p in res["front"]:
        arch = space.parse(p["arch"])
        nets[p["arch_id"]] = (ev.subnet(arch), (1, space.in_channels, *arch.resolution))
    log(f"baselines: timing {len(rows)} baselines and {len(res['front'])} front subnets end "
        f"to end (interleaved)")
    ms = time_end_to_end(nets, rounds=cfg.latency.rounds)
    # Searched and hand-designed nets compared as architectures: both trained from scratch
    # with the same schedule, both timed end to end in the same interleaved run.
    err_key = ev.task.error_key
    front = [{"arch_id": p["arch_id"], err_key: scratch[p["arch_id"]],
              ev.task.key("error", "inherited"): p[err_key],
              "latency_ms": round(ms[p["arch_id"]], 5), "latency_ms_lut": p["latency_ms"]}
             for p in res["front"]]
    table_rows = []
    for r in rows:
        row = {k: r[k] for k in ("name", "arch", "arch_string", err_key, "params", "macs",
                                 "lr")}
        row.update({k: r[k] for k in ("d",) if k in r})
        row["latency_ms"] = round(ms[f"baseline:{r['name']}"], 5)
        dom = sorted(dominators(row, front, err_key), key=lambda p: p["latency_ms"])
        row["dominated_by"] = [p["arch_id"] for p in dom]
        sp = speedup_at_error(row, front, err_key)
        row["speedup_at_equal_error"] = round(sp, 3) if sp else None
        table_rows.append(row)
    atomic_write_json(out / "baselines.json", table_rows)
    atomic_write_json(out / "search" / "front_measured.json", front)
    replot(out / "search", table_rows, front, task=ev.task)
    return table_rows


def find_arch(run_dir: Path, space: SearchSpace, arch: str) -> Arch:
    """An arch by canonical string, or by arch_id from the run's evaluation cache."""
    if "|" in arch:
        return space.parse(arch)
    cache = run_dir / "eval_cache.jsonl"
    if cache.exists():
        for line in cache.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("arch_id") == arch:
                return space.parse(row["arch"])
    raise UserError(f"arch_id {excerpt(arch)} was never evaluated in this run (give the canonical "
                    "arch string instead)", source=str(cache), field="arch_id")
