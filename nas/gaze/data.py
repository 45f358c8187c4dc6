"""Gaze datasets as arrays: train / recalibration / validation splits for the pipeline."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nas.errors import UserError


@dataclass
class GazeSplits:
    """uint8 images (N, H, W) and float32 labels (N, 2) per split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    fingerprint: str

    def check(self, source: str = "dataset") -> None:
        for name in ("train_y", "val_y"):
            y = getattr(self, name)
            if not np.isfinite(y).all():
                raise UserError("labels contain NaN or inf", source=source, field=name)
        if len(self.train_x) == 0 or len(self.val_x) == 0:
            raise UserError("empty split", source=source, field="train/val")

    @property
    def channels(self) -> int:
        """1 for gray (N, H, W) images, else the last axis (RGB: 3)."""
        return 1 if len(self.train_x.shape) == 3 else int(self.train_x.shape[-1])

    def check_fits(self, space, source: str) -> None:
        """The space's stem must take these images."""
        if space.in_channels != self.channels:
            raise UserError(f"the data have {self.channels} channel(s) per image, the space "
                            f"expects {space.in_channels}", source=source,
                            field="input.channels")


def cache_dir() -> Path:
    """Where rendered datasets live: $GAZE_NAS_CACHE or ~/.cache/gaze-nas."""
    return Path(os.environ.get("GAZE_NAS_CACHE") or Path.home() / ".cache" / "gaze-nas")


def synthetic_splits(n_train: int, n_val: int, seed: int, workers: int = 1,
                     log: Callable[[str], None] = print) -> GazeSplits:
    """Render (or load from cache) disjoint train and validation sets of eye patches."""
    from nas.gaze.synthetic import RenderConfig, load_or_render

    cfg = RenderConfig()
    # Distinct seeds give disjoint per-sample RNG streams for the two splits.
    tr = load_or_render(cache_dir(), n_train, seed * 2 + 1, cfg, workers=workers, log=log)
    va = load_or_render(cache_dir(), n_val, seed * 2 + 2, cfg, workers=workers, log=log)
    fp = f"synth-{cfg.fingerprint()}-s{seed}-{n_train}-{n_val}"
    return GazeSplits(tr["images"], tr["gaze"].astype(np.float32), va["images"],
                      va["gaze"].astype(np.float32), fp)


def splits_from(data: dict, seed: int, source: str, log: Callable[[str], None] = print
                ) -> GazeSplits:
    """The data splits a config's `data` section describes, checked (no NaN, none empty)."""
    if data.get("source", "synthetic") == "synthetic":  # rendered here, sized by train / val
        splits = synthetic_splits(data["train"], data["val"], seed, data.get("workers", 1), log)
    else:  # a dataset on disk, split by subject
        from nas.gaze.datasets.run_splits import dataset_splits

        splits = dataset_splits(data, seed, source, log)
    splits.check(source)
    return splits


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) gray or (N, H, W, 3) RGB -> float32 (N, C, H, W) in [0, 1]: the
    networks' input convention."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0)


class Batches:
    """Network inputs read batch by batch from uint8 images, so a training set larger than
    memory (a memory-mapped dataset cache) trains without being loaded whole; for an array in
    memory the batches equal slices of `to_input` of the whole array."""

    def __init__(self, images, memory_format: torch.memory_format = torch.contiguous_format,
                 resolution: tuple[int, int] | None = None):
        self.images = images
        self.memory_format = memory_format
        self.resolution = tuple(resolution) if resolution is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def raw(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The batch at the images' own resolution."""
        return to_input(self.images[np.asarray(idx)])

    def __getitem__(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        from nas.models import resize_to

        x = self.raw(idx)
        if self.resolution is not None:
            x = resize_to(x, self.resolution)
        return x.contiguous(memory_format=self.memory_format)
