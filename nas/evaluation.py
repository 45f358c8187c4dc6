"""Error of a subnet: BN recalibration on training images, then angular error on val.

Inherited supernet weights carry batch statistics of a mixture of subnets; recalibrating
each extracted subnet's BN on a few hundred training images is what makes its error
meaningful (OFA, BigNAS). Results are cached by arch_id in an append-only JSONL file so an
interrupted search loses nothing and a re-search with a new LUT re-uses every error.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.gaze.data import GazeSplits, first_rows, to_input
from nas.gaze.tasks import get_task
from nas.io import append_jsonl, iter_jsonl
from nas.models import (GazeNet, NetInput, count_macs, count_params, example_input, fit_input,
                        input_len, take_rows)
from nas.space import Arch, SearchSpace


@torch.no_grad()
def recalibrate_bn(net: nn.Module, x: NetInput, batch: int = 256) -> None:
    """Reset BN running stats and re-estimate them (cumulative average) on `x`."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for i in range(0, input_len(x), batch):
        net(take_rows(x, slice(i, i + batch)))
    for m in bns:
        m.momentum = 0.1
    net.eval()


@torch.no_grad()
def predict(net: nn.Module, x: NetInput, batch: int = 512) -> torch.Tensor:
    net.eval()
    return torch.cat([net(take_rows(x, slice(i, i + batch)))
                      for i in range(0, input_len(x), batch)])


def gaze_error(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray,
               task: str = "gaze3d") -> float:
    """Mean error in the task's unit (angular degrees for gaze3d, cm for pog2d)."""
    return get_task(task).error(pred, true)


def mean_gaze_error(splits: GazeSplits, task: str = "gaze3d") -> float:
    """Error of always predicting the training set's mean gaze: the floor to beat."""
    mean = splits.train_y.mean(0, keepdims=True).repeat(len(splits.val_y), 0)
    return gaze_error(mean, splits.val_y, task)


HEAD_RIDGE = 1e-2  # ridge strength of the head refit, per image, on standardised features


@torch.no_grad()
def refit_head(net: GazeNet, x: NetInput, y: torch.Tensor, ridge: float = HEAD_RIDGE,
               batch: int = 512) -> None:
    """Replace the subnet's last linear layer by the ridge-regression fit of its pooled
    features to the labels of `x` (closed form, milliseconds).

    The shared head was trained on the mixture of subnets the supernet saw, so a subnet
    whose features are good but differently arranged (another block family in the last
    stages) is judged by a head that does not fit it. Refitting the linear head per
    subnet, like BN recalibration, removes that bias: measured with
    experiments/bench_ranking.py it lifts Kendall tau from 0.49 to 0.71 on the per-family
    sandwich supernet. The refit head is part of the exported weights."""
    feats: list[torch.Tensor] = []
    hook = net.head.fc.register_forward_hook(lambda m, i, o: feats.append(i[0]))
    net.eval()
    try:
        for i in range(0, input_len(x), batch):
            net(take_rows(x, slice(i, i + batch)))
    finally:
        hook.remove()
    F = torch.cat(feats).double()
    mu, sd = F.mean(0), F.std(0).clamp_min(1e-6)
    Z = torch.cat([(F - mu) / sd, torch.ones(len(F), 1, dtype=F.dtype)], 1)
    A = Z.T @ Z + ridge * len(F) * torch.eye(Z.shape[1], dtype=F.dtype)
    A[-1, -1] -= ridge * len(F)  # the bias is not shrunk
    target = getattr(net.head, "fc_target", None)  # a head that scales fc's output
    y = target(y.double()) if target is not None else y.double()
    W = torch.linalg.solve(A, Z.T @ y)
    fc = net.head.fc
    fc.weight.copy_((W[:-1] / sd[:, None]).T.to(fc.weight.dtype))
    fc.bias.copy_((W[-1] - (mu / sd) @ W[:-1]).to(fc.bias.dtype))


class SubnetEvaluator:
    """error(arch) from inherited weights + BN recalibration, cached by arch_id."""

    def __init__(self, supernet: nn.Module, space: SearchSpace, splits: GazeSplits, *,
                 recal_images: int = 512, val_images: int | None = None,
                 cache_path: str | Path | None = None, cache_tag: str = "",
                 threads: int | None = None, head_refit_images: int = 0):
        self.supernet, self.space = supernet, space
        self.task = get_task(space.task)
        splits = splits.for_space(space)  # named inputs where the space takes a head pose
        self.head_refit_images = int(head_refit_images)
        kinds = space.input_kinds()
        self.fit_x = to_input(first_rows(splits.train_x, self.head_refit_images), kinds)
        self.fit_y = torch.from_numpy(splits.train_y[:self.head_refit_images])
        self._fit_by_res: dict[tuple[int, int], NetInput] = {}
        self.recal_x = to_input(first_rows(splits.train_x, recal_images), kinds)
        n = val_images or len(splits.val_y)
        self.val_x, self.val_y = to_input(first_rows(splits.val_x, n), kinds), splits.val_y[:n]
        self._by_res: dict[tuple[int, int], tuple[NetInput, NetInput]] = {}
        self.cache_tag = cache_tag
        self.supernet_hash: str | None = None  # set by nas.pipeline.build_evaluator
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict] = {}
        if threads:
            torch.set_num_threads(threads)
        if self.cache_path and self.cache_path.exists():
            # a row without this task's error key is a miss, evaluated again: a pog2d row
            # written before errors were named by unit holds cm under `error_deg`
            for row in iter_jsonl(self.cache_path, ("arch_id", "arch")):
                if row.get("tag") == cache_tag and self.task.error_key in row:
                    self.cache[row["arch_id"]] = row

    def _inputs(self, res: tuple[int, int]) -> tuple[NetInput, NetInput]:
        if res not in self._by_res:
            self._by_res[res] = (fit_input(self.space, self.recal_x, res),
                                 fit_input(self.space, self.val_x, res))
        return self._by_res[res]

    def subnet(self, arch: Arch) -> GazeNet:
        """The extracted, BN-recalibrated subnet exactly as it is evaluated and exported."""
        recal, _ = self._inputs(tuple(arch.resolution))
        net = self.supernet.extract(arch)
        recalibrate_bn(net, recal)
        if self.head_refit_images:
            res = tuple(arch.resolution)
            if res not in self._fit_by_res:
                self._fit_by_res[res] = fit_input(self.space, self.fit_x, res)
            refit_head(net, self._fit_by_res[res], self.fit_y)
        return net

    def error_of(self, net: nn.Module, arch: Arch) -> float:
        """Error of any net built for `arch` (e.g. a fine-tuned one) on this evaluator's
        validation images, so it compares with `evaluate(arch)` exactly."""
        _, val = self._inputs(tuple(arch.resolution))
        return gaze_error(predict(net, val), self.val_y, self.space.task)

    def cached(self, arch: Arch) -> dict | None:
        """The cached row of `arch` (marked `_reused`), or None."""
        row = self.cache.get(arch.arch_id)
        return None if row is None else {**row, "_reused": True}

    def record(self, row: dict) -> None:
        """Keep a row evaluated here or elsewhere (a Ray worker holding the same supernet,
        data and settings: same `tag`) and append it to the cache file. Only the process
        that owns the cache file calls this, so the file has one writer."""
        if row.get("tag") != self.cache_tag:
            raise ValueError(f"row of {row.get('arch_id')} was evaluated with cache tag "
                             f"{row.get('tag')!r}, not this evaluator's {self.cache_tag!r} "
                             "(another supernet, data or recalibration settings)")
        self.cache[row["arch_id"]] = row
        if self.cache_path:
            append_jsonl(self.cache_path, row)  # append-only: a crash loses one line at most

    def evaluate(self, arch: Arch) -> dict:
        key = arch.arch_id
        if key in self.cache:
            return {**self.cache[key], "_reused": True}
        t0 = time.perf_counter()
        net = self.subnet(arch)
        _, val = self._inputs(tuple(arch.resolution))
        err = gaze_error(predict(net, val), self.val_y, self.space.task)
        row = {"arch_id": key, "arch": arch.to_string(), self.task.error_key: round(err, 5),
               "params": count_params(net),
               "macs": count_macs(net, example_input(self.space, arch)),
               "eval_s": round(time.perf_counter() - t0, 3), "tag": self.cache_tag}
        self.record(row)
        return dict(row)
