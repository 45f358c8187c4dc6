"""Error of a subnet: BN recalibration on training images, then angular error on val.

Inherited supernet weights carry batch statistics of a mixture of subnets; recalibrating
each extracted subnet's BN on a few hundred training images is what makes its error
meaningful (OFA, BigNAS). Results are cached by arch_id in an append-only JSONL file so an
interrupted search loses nothing and a re-search with a new LUT re-uses every error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.gaze.data import GazeSplits, to_input
from nas.models import GazeNet, count_macs, count_params, resize_to
from nas.space import Arch, SearchSpace


@torch.no_grad()
def recalibrate_bn(net: nn.Module, x: torch.Tensor, batch: int = 256) -> None:
    """Reset BN running stats and re-estimate them (cumulative average) on `x`."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for i in range(0, len(x), batch):
        net(x[i:i + batch])
    for m in bns:
        m.momentum = 0.1
    net.eval()


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])


def gaze_error(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray,
               task: str = "gaze3d") -> float:
    """Mean angular error in degrees (gaze3d) or mean Euclidean error in cm (pog2d)."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if task == "pog2d":
        return float(np.linalg.norm(pred - true, axis=1).mean())
    from nas.gaze.geometry import angular_error_deg

    return float(np.mean(angular_error_deg(pred, true)))


def mean_gaze_error(splits: GazeSplits, task: str = "gaze3d") -> float:
    """Error of always predicting the training set's mean gaze: the floor to beat."""
    mean = splits.train_y.mean(0, keepdims=True).repeat(len(splits.val_y), 0)
    return gaze_error(mean, splits.val_y, task)


class SubnetEvaluator:
    """error(arch) from inherited weights + BN recalibration, cached by arch_id."""

    def __init__(self, supernet: nn.Module, space: SearchSpace, splits: GazeSplits, *,
                 recal_images: int = 512, val_images: int | None = None,
                 cache_path: str | Path | None = None, cache_tag: str = "",
                 threads: int | None = None):
        self.supernet, self.space = supernet, space
        self.recal_x = to_input(splits.train_x[:recal_images])
        n = val_images or len(splits.val_x)
        self.val_x, self.val_y = to_input(splits.val_x[:n]), splits.val_y[:n]
        self._by_res: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.cache_tag = cache_tag
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict] = {}
        if threads:
            torch.set_num_threads(threads)
        if self.cache_path and self.cache_path.exists():
            for line in self.cache_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from an interruption
                if row.get("tag") == cache_tag:
                    self.cache[row["arch_id"]] = row

    def _inputs(self, res: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if res not in self._by_res:
            self._by_res[res] = (resize_to(self.recal_x, res), resize_to(self.val_x, res))
        return self._by_res[res]

    def subnet(self, arch: Arch) -> GazeNet:
        """The extracted, BN-recalibrated subnet exactly as it is evaluated and exported."""
        recal, _ = self._inputs(tuple(arch.resolution))
        net = self.supernet.extract(arch)
        recalibrate_bn(net, recal)
        return net

    def error_of(self, net: nn.Module, arch: Arch) -> float:
        """Error of any net built for `arch` (e.g. a fine-tuned one) on this evaluator's
        validation images, so it compares with `evaluate(arch)` exactly."""
        _, val = self._inputs(tuple(arch.resolution))
        return gaze_error(predict(net, val), self.val_y, self.space.task)

    def evaluate(self, arch: Arch) -> dict:
        key = arch.arch_id
        if key in self.cache:
            return {**self.cache[key], "_reused": True}
        t0 = time.perf_counter()
        net = self.subnet(arch)
        _, val = self._inputs(tuple(arch.resolution))
        err = gaze_error(predict(net, val), self.val_y, self.space.task)
        row = {"arch_id": key, "arch": arch.to_string(), "error_deg": round(err, 5),
               "params": count_params(net),
               "macs": count_macs(net, (1, self.space.in_channels, *arch.resolution)),
               "eval_s": round(time.perf_counter() - t0, 3), "tag": self.cache_tag}
        self.cache[key] = row
        if self.cache_path:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a") as fh:  # append-only: a crash loses one line
                fh.write(json.dumps(row) + "\n")
        return dict(row)
