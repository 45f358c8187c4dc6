"""Run an experiment config end to end: data -> supernet -> LUT -> validate -> search ->
export -> report. A stage whose outputs exist and were made from the same inputs is skipped,
so an interrupted run picks up where it stopped and a changed LUT re-runs only the search."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from nas import __version__
from nas.config import ExperimentConfig
from nas.errors import UserError
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
    return splits_from(asdict(cfg.data), cfg.seed, cfg.source, log)


def splits_from(data: dict, seed: int, source: str, log: Log):
    """The data splits a config's `data` section describes, checked (no NaN, none empty)."""
    from nas.gaze.data import synthetic_splits

    splits = synthetic_splits(data["train"], data["val"], seed, data.get("workers", 1), log)
    splits.check(source)
    return splits


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


def ensure_validated(cfg: ExperimentConfig, space: SearchSpace, table, log: Log, info: dict):
    from nas.latency import validate_table

    v = table.validation or {}
    if v.get("n") == cfg.latency.validate_samples and v.get("seed", cfg.seed) == cfg.seed \
            and v.get("space_hash", space.space_hash()) == space.space_hash():
        info["status"] = "reused"
        return v
    if cfg.latency.validate_samples < 4:
        info["status"] = "skipped"
        return v
    return validate_table(table, space, samples=cfg.latency.validate_samples, seed=cfg.seed,
                          rounds=cfg.latency.rounds, log=log)


def auto_budgets(space: SearchSpace, table, seed: int) -> list[float]:
    """Three budgets spread log-uniformly (at 1/4, 1/2, 3/4) between the smallest and the
    largest subnet's predicted latency on this device, so a default run asks something
    meaningful of any machine. `seed` is unused: the budgets depend only on the table."""
    del seed
    lo = table.predict(space, space.smallest())
    hi = table.predict(space, space.largest())
    return [float(f"{x:.3g}") for x in np.exp(np.log(lo) + np.array([0.25, 0.5, 0.75])
                                                  * (np.log(hi) - np.log(lo)))]


def table_hash(table) -> str:
    return json_hash({"entries": table.entries, "correction": table.correction,
                      "device": table.meta.get("device")})


def run_search_stage(space: SearchSpace, supernet_path: Path, splits, table, out_dir: Path,
                     *, strategy: str, evals: int, budgets: list[float], seed: int,
                     batch: int, recal_images: int, val_images: int, threads: int,
                     log: Log) -> dict:
    """Search with inherited-weight error and LUT latency; errors cached per supernet."""
    from nas.evaluation import SubnetEvaluator
    from nas.search import make_strategy, run_search
    from nas.train import load_supernet

    supernet, _ = load_supernet(supernet_path)
    sup_hash = file_hash(supernet_path)
    ev = SubnetEvaluator(supernet, space, splits, recal_images=recal_images,
                         val_images=val_images, threads=threads,
                         cache_path=supernet_path.parent / "eval_cache.jsonl",
                         cache_tag=json_hash([sup_hash, recal_images, val_images, splits.fingerprint]))

    def evaluate(arch: Arch) -> dict:
        row = ev.evaluate(arch)
        row["latency_ms"] = round(table.predict(space, arch), 5)
        return {k: row[k] for k in ("error_deg", "latency_ms", "params", "macs")}

    meta = {"space": space.name, "space_hash": space.space_hash(), "supernet": sup_hash,
            "lut": table_hash(table), "device": table.meta.get("device"), "strategy": strategy,
            "seed": seed, "budgets_ms": budgets, "tool_version": __version__}
    strat = make_strategy(strategy, space, seed)
    result = run_search(space, strat, evaluate, evals=evals, budgets=budgets, out_dir=out_dir,
                        batch=batch, log=log, meta=meta)
    result["evaluator"] = ev
    return result


def run(cfg: ExperimentConfig, out: str | Path, log: Log = print) -> dict:
    """Run every stage of `cfg` into `out`; returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock(log)
    space = SearchSpace.load(cfg.space)
    t_all = time.perf_counter()
    with clock.stage("data") as info:
        splits = load_splits(cfg, log)
    with clock.stage("train") as info:
        sup_path = ensure_supernet(cfg, space, splits, out, log, info)
    with clock.stage("latency") as info:
        table = ensure_lut(cfg, space, out, log, info)
    with clock.stage("validate") as info:
        fidelity = ensure_validated(cfg, space, table, log, info)
    budgets = list(cfg.search.budgets_ms) or auto_budgets(space, table, cfg.seed)
    with clock.stage("search") as info:
        res = run_search_stage(space, sup_path, splits, table, out / "search",
                               strategy=cfg.search.strategy, evals=cfg.search.evals,
                               budgets=budgets, seed=cfg.seed, batch=cfg.search.batch,
                               recal_images=cfg.search.recal_images,
                               val_images=cfg.search.val_images, threads=cfg.search.threads,
                               log=log)
        if res.get("resumed_complete"):
            info["status"] = "reused"
    with clock.stage("export") as info:
        exported = export_best(space, res, out / "export", table, log)
    from nas.evaluation import mean_gaze_error
    from nas.report import write_report
    from nas.train import load_checkpoint

    sup_meta = load_checkpoint(sup_path)
    manifest = {
        "name": cfg.name, "tool_version": __version__, "config": cfg.to_dict(),
        "config_file": cfg.source, "seeds": {"experiment": cfg.seed}, "git_sha": git_sha(),
        "versions": package_versions(),
        "hashes": {"space": space.space_hash(), "space_file": file_hash(cfg.space),
                   "supernet": file_hash(sup_path), "lut": table_hash(table),
                   "data": splits.fingerprint},
        "lut_path": str(table.path), "device": table.meta.get("device"),
        "budgets_ms": budgets, "stage_seconds": clock.times, "stage_status": clock.status,
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "mean_gaze_error_deg": mean_gaze_error(splits, space.task),
        "supernet_train_img_s": sup_meta.get("throughput_img_s"),
        "lut_fidelity": {k: fidelity.get(k) for k in ("mape", "within_5", "within_10",
                                                     "kendall_tau", "n")},
        "exported": exported,
    }
    atomic_write_json(out / "manifest.json", manifest)
    write_report(out, manifest, res, json.loads(sup_meta.get("history", "[]")))
    log(f"== done in {manifest['total_seconds']:.0f} s: {out / 'report.md'}")
    return manifest


def export_best(space: SearchSpace, res: dict, out: Path, table, log: Log) -> list[dict]:
    """Export the best subnet under each budget (skipping ones already exported)."""
    from nas.export import export_subnet

    ev = res["evaluator"]
    cards, seen = [], set()
    for b in res["best_per_budget"]:
        if not b.get("arch_id") or b["arch_id"] in seen:
            continue
        seen.add(b["arch_id"])
        d = out / b["arch_id"]
        card_path = d / "card.json"
        if card_path.exists():
            card = json.loads(card_path.read_text())
            if card.get("supernet_hash") == res.get("meta", {}).get("supernet"):
                cards.append(card)
                continue
        arch = space.parse(b["arch"])
        net = ev.subnet(arch)
        card = export_subnet(net, space, d, extra={
            "error_deg": b["error_deg"], "latency_ms_predicted": b["latency_ms"],
            "device": table.meta.get("device"), "budgets_ms": [x["budget_ms"] for x in
                                                               res["best_per_budget"]
                                                               if x.get("arch_id") == b["arch_id"]],
            "supernet_hash": res.get("meta", {}).get("supernet"), "lut_hash": table_hash(table)})
        log(f"export: {b['arch_id']} -> {d} (onnx diff {card['onnx']['max_abs_diff_vs_torch']:.1e})")
        cards.append(card)
    return cards


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
    raise UserError(f"arch_id {arch!r} was never evaluated in this run (give the canonical "
                    "arch string instead)", source=str(cache), field="arch_id")
