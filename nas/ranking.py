"""Ranking fidelity: does a supernet's inherited error order subnets as training from
scratch does? The ground truth a one-shot NAS front must agree with (bench_ranking)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from nas.space import Arch, SearchSpace


def families(arch: Arch) -> set[str]:
    return {op.family for stage in arch.active_ops() for op in stage}


def mix_kind(arch: Arch) -> str:
    """'single' (one family), 'stage' (one family per stage, several stages differ) or
    'layer' (families change inside a stage)."""
    if len(families(arch)) == 1:
        return "single"
    inside = any(len({op.family for op in stage}) > 1 for stage in arch.active_ops())
    return "layer" if inside else "stage"


def select_archs(space: SearchSpace, k: int, seed: int, candidates: int = 300,
                 macs_of=None) -> list[Arch]:
    """K archs spread log-uniformly over the MAC range of random candidates (a third drawn
    layer-mixed, a third stage-mixed, a third single-family); every other one mixes block
    families, so at least half do. Deterministic for (space, k, seed)."""
    from nas.models import GazeNet, count_macs

    if macs_of is None:
        def macs_of(a: Arch) -> int:
            return count_macs(GazeNet(space, a), (1, space.in_channels, *a.resolution))

    rng = np.random.default_rng([seed, 4242])
    modes = ("layer", "stage", "none")
    # uniform sampling rarely reaches either end of the MAC range: pull a quarter of the
    # candidates towards the smallest and a quarter towards the largest sizes (each right
    # after it is drawn: the order of draws fixes the benchmark's arch set)
    pool = []
    for i in range(candidates):
        a = space.sample(rng, family_mix=modes[i % 3])
        pool.append(space.pull_size(a, rng, ("small", "large")[i % 4 - 2]) if i % 4 >= 2
                    else a)
    pool = list(dict.fromkeys(pool))
    logm = np.log(np.array([macs_of(a) for a in pool], dtype=float))
    kinds = [mix_kind(a) for a in pool]
    targets = np.linspace(logm.min(), logm.max(), k)
    chosen: list[int] = []
    for i, t in enumerate(targets):
        mixed = i % 2 == 0  # every other arch mixes families (layer- or stage-wise)
        ok = [j for j in range(len(pool)) if j not in chosen
              and (kinds[j] != "single") == mixed]
        ok = ok or [j for j in range(len(pool)) if j not in chosen]
        chosen.append(min(ok, key=lambda j: abs(logm[j] - t)))
    return [pool[j] for j in chosen]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):
        m = x == v
        r[m] = r[m].mean()
    return r


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (tie-corrected), O(n^2): the lists here are a few dozen long."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    denom = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float((da * db).sum() / denom) if denom else float("nan")


def fidelity(inherited: Sequence[float], scratch: Sequence[float]) -> dict:
    inh, scr = np.asarray(inherited, float), np.asarray(scratch, float)
    gap = inh - scr
    return {"n": len(inh), "kendall_tau": round(kendall_tau(inh, scr), 4),
            "spearman_rho": round(spearman_rho(inh, scr), 4),
            "median_gap_deg": round(float(np.median(gap)), 3),
            "median_abs_gap_deg": round(float(np.median(np.abs(gap))), 3)}


class ScratchCache:
    """From-scratch errors, append-only JSONL keyed by (arch, data, schedule, seed): training
    a net from scratch costs minutes, so an interrupted benchmark keeps every finished one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a kill
                self.rows[row["key"]] = row

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def train_from_scratch(space: SearchSpace, arch: Arch, splits, cfg, seed: int,
                       val_images: int):
    """`arch` as a GazeNet trained from scratch with `cfg` (a StandaloneConfig), and its
    error on the first `val_images` validation images."""
    import torch

    from nas.evaluation import gaze_error, predict
    from nas.gaze.data import to_input
    from nas.models import GazeNet, resize_to
    from nas.train import train_standalone

    torch.manual_seed(seed)
    net = GazeNet(space, arch)
    train_standalone(net, splits, cfg, seed, resolution=arch.resolution)
    val = resize_to(to_input(splits.val_x[:val_images]), arch.resolution)
    return net, gaze_error(predict(net, val), splits.val_y[:val_images], space.task)


def scratch_error(space: SearchSpace, arch: Arch, splits, cfg, seed: int,
                  val_images: int) -> dict:
    """Train `arch` from scratch with `cfg` (a StandaloneConfig) and measure its val error."""
    from nas.models import count_macs

    t0 = time.perf_counter()
    net, err = train_from_scratch(space, arch, splits, cfg, seed, val_images)
    return {"arch": arch.to_string(), "arch_id": arch.arch_id, "scratch_error": round(err, 4),
            "macs": count_macs(net, (1, space.in_channels, *arch.resolution)),
            "train_s": round(time.perf_counter() - t0, 1)}


def inherited_errors(supernet_path: str | Path, space: SearchSpace, splits, search_cfg,
                     archs: Sequence[Arch]) -> list[float]:
    """Each arch's error with the supernet's weights, scored as the search scores it (BN
    recalibration + head refit, `search_cfg`'s image counts and threads), in the task's
    unit, rounded to 4 decimals: the side of a ranking benchmark that a supernet gives."""
    from nas.evaluation import SubnetEvaluator
    from nas.gaze.tasks import get_task
    from nas.train import load_supernet

    net, _ = load_supernet(supernet_path)
    ev = SubnetEvaluator(net, space, splits, recal_images=search_cfg.recal_images,
                         val_images=search_cfg.val_images, threads=search_cfg.threads,
                         head_refit_images=search_cfg.head_refit_images)
    key = get_task(space.task).error_key
    return [round(ev.evaluate(a)[key], 4) for a in archs]
