"""A real dataset as the pipeline's train / validation splits: split by subject (the
config's held-out subjects, else the dataset's own validation split, else the last subject
left out), capped at `data.train` / `data.val` samples by a seeded draw, images left lazy.
Multi-input samples (GazeCapture, synthetic_pog) are dicts of named inputs; the space's
check (`GazeSplits.check_fits`) refuses inputs its task does not take."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from nas.errors import UserError
from nas.gaze.data import GazeSplits, read_rows
from nas.gaze.datasets.registry import open_dataset
from nas.gaze.datasets.splits import unique_subjects

Log = Callable[[str], None]


def _cap(idx: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most `limit` of `idx` (0: all), drawn with `rng`, kept in file order for reads."""
    if not limit or len(idx) <= limit:
        return idx
    return np.sort(rng.choice(idx, size=limit, replace=False))


def _resident(images: Any, budget: int, what: str, log: Log) -> Any:
    """Images read once, in file order, into memory when they fit `budget` bytes: training
    draws random batches, and a reader whose files cannot be read in parts (MATLAB v5) or
    are compressed would re-read whole files per batch. Larger sets stay on disk (a
    memory-mapped cache from `gaze-nas data prepare` reads fast at random)."""
    arrays = list(images.values()) if isinstance(images, dict) else [images]
    if all(isinstance(a, np.ndarray) for a in arrays):  # in memory already, or memory-mapped
        return images
    nbytes = sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
                 for a in arrays)
    if nbytes <= budget:
        log(f"data: reading the {what} images into memory ({nbytes / 2**20:.0f} MB)")
        if isinstance(images, dict):  # named inputs: one read pass for all of them
            return read_rows(images, slice(None))
        return np.asarray(images)
    log(f"data: the {what} images ({nbytes / 2**20:.0f} MB, over data.in_memory_mb "
        f"{budget // 2**20}) stay on disk and are read per batch; `gaze-nas data prepare` "
        "makes random reads fast")
    return images


def _train_val(ds, val_subjects: list, source: str, log: Log) -> tuple[np.ndarray, np.ndarray]:
    if val_subjects:
        parts = ds.split_of({"val": val_subjects})
        return parts["train"], parts["val"]
    official = ds.official
    if official and "val" in official and "train" in official:
        log(f"data: the {ds.name} official split (train / val)")
        return official["train"], official["val"]
    subjects = unique_subjects(ds.subjects)
    if len(subjects) < 2:
        raise UserError(f"{ds.name} at this path has one subject ({subjects[0]!r}); a split "
                        "by subject needs at least two", source=source, field="data.path")
    last = sorted(subjects, key=str)[-1]
    log(f"data: validating on subject {last!r}, training on the other {len(subjects) - 1} "
        "(leave-one-subject-out; data.val_subjects chooses)")
    parts = ds.split_of([last])
    return parts["train"], parts["test"]


# A rendered (embedded) source's options that the config's data section fills when its
# data.options leave them out: how many samples to render, the run's seed, the processes.
FROM_CONFIG = {"n_train": "train", "n_val": "val", "workers": "workers"}


def source_options(data: dict[str, Any], seed: int) -> dict[str, Any]:
    """data.options, plus n_train / n_val / seed / workers from the data section and the
    run's seed for a source that takes them (the embedded renderers)."""
    from nas.gaze.datasets.registry import get_source

    opts = dict(data.get("options") or {})
    accepted = get_source(data["source"]).options
    fill = {k: data.get(v) for k, v in FROM_CONFIG.items()} | {"seed": seed}
    for key, value in fill.items():
        if key in accepted and key not in opts and value is not None:
            opts[key] = value
    return opts


def dataset_splits(data: dict[str, Any], seed: int, source: str, log: Log) -> GazeSplits:
    """The splits a config's `data` section names for a real, prepared or rendered dataset
    (multi-input samples, e.g. GazeCapture's, as dicts of named inputs)."""
    ds = open_dataset(data["source"], data.get("path"), log=log, **source_options(data, seed))
    ds.require_labels()
    train, val = _train_val(ds, list(data.get("val_subjects") or []), source, log)
    rng = np.random.default_rng([seed, 0x5EED])
    train, val = _cap(train, data.get("train", 0), rng), _cap(val, data.get("val", 0), rng)
    if len(train) == 0 or len(val) == 0:
        raise UserError("empty split after the subject split", source=source,
                        field="data.val_subjects")
    tr, va = ds.subset(train), ds.subset(val)
    budget = int(data.get("in_memory_mb", 4096)) * 2**20
    train_x = _resident(tr.images, budget, "training", log)
    val_x = _resident(va.images, budget, "validation", log)
    log(f"data: {ds.name}: {len(train)} training and {len(val)} validation samples "
        f"({len(np.unique(tr.subjects))} + {len(np.unique(va.subjects))} subjects; "
        f"data.train / data.val cap them, 0 = all)")
    spec = [ds.fingerprint, sorted(map(str, data.get("val_subjects") or [])),
            data.get("train", 0), data.get("val", 0), seed]
    from nas.io import json_hash

    head = ds.head_pose is not None  # kept beside the images for spaces that take it
    return GazeSplits(train_x, np.asarray(tr.labels, np.float32), val_x,
                      np.asarray(va.labels, np.float32), f"{ds.name}-{json_hash(spec)}",
                      tr.head_pose if head else None, va.head_pose if head else None)
