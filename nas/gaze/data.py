"""Gaze datasets as arrays: train / recalibration / validation splits for the pipeline.

Images are one uint8 array (N, H, W) / (N, H, W, 3), or, for multi-input tasks, a dict of
named inputs ({"face": ..., "left_eye": ..., "face_grid": ...}); `n_rows`, `read_rows` and
`to_input` treat both alike, and `to_input` converts each named input by its kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from nas.errors import UserError


def n_rows(images: Any) -> int:
    """Samples in an image array or a dict of named inputs."""
    return len(next(iter(images.values()))) if isinstance(images, dict) else len(images)


def read_rows(images: Any, idx: np.ndarray | slice) -> Any:
    """Rows `idx` as ndarray(s): a dict of inputs is read in one pass where its reader can
    (a LazyDict decodes each frame once for all its crops)."""
    if isinstance(images, dict):
        if isinstance(idx, slice):
            idx = np.arange(n_rows(images))[idx]
        fetch = getattr(images, "fetch", None)
        if fetch is not None:
            return fetch(np.asarray(idx, np.int64))
        return {k: np.asarray(v[idx]) for k, v in images.items()}
    return images[idx]


def first_rows(images: Any, n: int) -> Any:
    """The first `n` rows (all if fewer)."""
    return read_rows(images, slice(0, n))


# A vector input of a layout -> the GazeSplits fields that carry it beside the images.
VECTOR_FIELDS = {"head_pose": ("train_head", "val_head")}


@dataclass
class GazeSplits:
    """uint8 images (N, H, W) / (N, H, W, 3), or a dict of named inputs, and float32 labels
    (N, 2) per split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    fingerprint: str
    train_head: np.ndarray | None = None  # float32 (N, 2) head pose, where the data have it
    val_head: np.ndarray | None = None

    def check(self, source: str = "dataset") -> None:
        for name in ("train_y", "val_y"):
            y = getattr(self, name)
            if not np.isfinite(y).all():
                raise UserError("labels contain NaN or inf", source=source, field=name)
        if n_rows(self.train_x) == 0 or n_rows(self.val_x) == 0:
            raise UserError("empty split", source=source, field="train/val")

    @property
    def multi(self) -> bool:
        return isinstance(self.train_x, dict)

    @property
    def channels(self) -> int:
        """1 for gray (N, H, W) images, else the last axis (RGB: 3); for named inputs, that
        of the image inputs (4-D arrays)."""
        x = self.train_x
        if isinstance(x, dict):
            images = [v for v in x.values() if len(v.shape) == 4]
            return int(images[0].shape[-1]) if images else 1
        return 1 if len(x.shape) == 3 else int(x.shape[-1])

    def for_space(self, space, source: str = "dataset") -> "GazeSplits":
        """These splits as the space's network takes them, checked (`check_fits`): where
        its layout adds vector inputs the data carry beside the images (a head pose), the
        images become named inputs {image input: images, "head_pose": ...}. Idempotent."""
        vectors = [i.name for i in space.inputs if i.kind == "vector"]
        if vectors and not self.multi:
            extra = {}
            for name in vectors:
                tr, va = (getattr(self, f, None) for f in VECTOR_FIELDS.get(name, ("", "")))
                if tr is None or va is None:
                    raise UserError(f"the space takes {name} beside the image, and these data "
                                    f"carry none (sources with a head pose: synthetic_face, "
                                    f"mpiifacegaze, ethxgaze)", source=source,
                                    field="input.inputs")
                extra[name] = (np.asarray(tr, np.float32), np.asarray(va, np.float32))
            image = next(i.name for i in space.inputs if i.kind == "image")
            out = GazeSplits({image: self.train_x, **{k: v[0] for k, v in extra.items()}},
                             self.train_y,
                             {image: self.val_x, **{k: v[1] for k, v in extra.items()}},
                             self.val_y, self.fingerprint, self.train_head, self.val_head)
        else:
            out = self
        out.check_fits(space, source)
        return out

    def check_fits(self, space, source: str) -> None:
        """The space's stem must take these images, and its inputs must be the data's."""
        names = tuple(space.input_kinds())
        if self.multi or not space.layout.single:
            have = tuple(self.train_x) if self.multi else ("one image per sample",)
            if set(have) != set(names):
                raise UserError(f"the data give {', '.join(have)}; the space ({space.task}) "
                                f"takes {', '.join(names)}", source=source,
                                field="input.inputs")
        if space.in_channels != self.channels:
            raise UserError(f"the data have {self.channels} channel(s) per image, the space "
                            f"expects {space.in_channels}", source=source,
                            field="input.channels")


def cache_dir() -> Path:
    """Where rendered datasets live: $GAZE_NAS_CACHE or ~/.cache/gaze-nas."""
    return Path(os.environ.get("GAZE_NAS_CACHE") or Path.home() / ".cache" / "gaze-nas")


def synthetic_splits(n_train: int, n_val: int, seed: int, workers: int = 1,
                     log: Callable[[str], None] = print, labels: str = "uniform") -> GazeSplits:
    """Render (or load from cache) disjoint train and validation sets of eye patches, with
    labels drawn from the named preset (`nas.gaze.synthetic.LABEL_PRESETS`)."""
    from nas.gaze.synthetic import RenderConfig, load_or_render

    cfg = RenderConfig(labels=labels)
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
        labels = synthetic_labels(data.get("options") or {}, source)
        splits = synthetic_splits(data["train"], data["val"], seed, data.get("workers", 1), log,
                                  labels=labels)
    else:  # a dataset on disk, split by subject
        from nas.gaze.datasets.run_splits import dataset_splits

        splits = dataset_splits(data, seed, source, log)
    splits.check(source)
    return splits


def synthetic_labels(opts: dict, source: str) -> str:
    """The label preset in a `synthetic` config's data.options, its only option there (the
    sizes, seed and processes come from data.train / data.val / seed / data.workers)."""
    from nas.errors import check_keys
    from nas.gaze.datasets.synthetic import label_preset

    if not isinstance(opts, dict):
        raise UserError(f"expected a mapping of reader options, got {type(opts).__name__}",
                        source=source, field="data.options")
    check_keys(opts, ["labels"], source, prefix="data.options.")
    return label_preset(opts, source, field="data.options.labels")


def to_input(images: Any, kinds: Mapping[str, str] | None = None):
    """uint8 (N, H, W) gray or (N, H, W, 3) RGB -> float32 (N, C, H, W) in [0, 1]: the
    networks' input convention. A dict of named inputs -> a dict of tensors, each by its
    kind in `kinds` (default "image"): a "grid" (0/1 mask) and a "vector" are fed as they
    are, in float32."""
    if isinstance(images, dict):
        kinds = kinds or {}
        return {k: _convert(v, kinds.get(k, "image")) for k, v in images.items()}
    return _convert(images, "image")


def _convert(a: np.ndarray, kind: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if kind != "image":
        return t.float()
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0)


class Batches:
    """Network inputs read batch by batch from uint8 images, so a training set larger than
    memory (a memory-mapped dataset cache) trains without being loaded whole; for an array in
    memory the batches equal slices of `to_input` of the whole array. Named inputs (a dict)
    need `space` (their kinds, and their sizes at `resolution`)."""

    def __init__(self, images, memory_format: torch.memory_format = torch.contiguous_format,
                 resolution: tuple[int, int] | None = None, space: Any = None):
        self.images = images
        self.memory_format = memory_format
        self.resolution = tuple(resolution) if resolution is not None else None
        self.space = space
        self.kinds = space.input_kinds() if space is not None else None

    def __len__(self) -> int:
        return n_rows(self.images)

    def raw(self, idx: torch.Tensor | np.ndarray):
        """The batch at the images' own resolution."""
        return to_input(read_rows(self.images, np.asarray(idx)), self.kinds)

    def __getitem__(self, idx: torch.Tensor | np.ndarray):
        from nas.models import fit_input

        x = self.raw(idx)
        if self.resolution is not None:
            x = fit_input(self.space, x, self.resolution)
        if isinstance(x, dict):
            return {k: v.contiguous(memory_format=self.memory_format) if v.ndim == 4 else v
                    for k, v in x.items()}
        return x.contiguous(memory_format=self.memory_format)
