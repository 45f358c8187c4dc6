"""A real dataset as the pipeline's train / validation splits: split by subject (the
config's held-out subjects, else the dataset's own validation split, else the last subject
left out), capped at `data.train` / `data.val` samples by a seeded draw, images left lazy."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from nas.errors import UserError
from nas.gaze.data import GazeSplits
from nas.gaze.datasets.registry import open_dataset
from nas.gaze.datasets.splits import unique_subjects

Log = Callable[[str], None]


def _cap(idx: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most `limit` of `idx` (0: all), drawn with `rng`, kept in file order for reads."""
    if not limit or len(idx) <= limit:
        return idx
    return np.sort(rng.choice(idx, size=limit, replace=False))


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


def dataset_splits(data: dict[str, Any], seed: int, source: str, log: Log) -> GazeSplits:
    """The splits a config's `data` section names for a real (or prepared) dataset."""
    ds = open_dataset(data["source"], data.get("path"), log=log, **(data.get("options") or {}))
    if isinstance(ds.images, dict):
        raise UserError(f"{ds.name} gives multi-input samples ({', '.join(ds.images)}), which "
                        "the supernet cannot take yet; it can be read with "
                        "nas.gaze.datasets.open_dataset and prepared with `gaze-nas data "
                        "prepare`", source=source, field="data.source")
    ds.require_labels()
    train, val = _train_val(ds, list(data.get("val_subjects") or []), source, log)
    rng = np.random.default_rng([seed, 0x5EED])
    train, val = _cap(train, data.get("train", 0), rng), _cap(val, data.get("val", 0), rng)
    if len(train) == 0 or len(val) == 0:
        raise UserError("empty split after the subject split", source=source,
                        field="data.val_subjects")
    tr, va = ds.subset(train), ds.subset(val)
    log(f"data: {ds.name}: {len(train)} training and {len(val)} validation samples "
        f"({len(np.unique(tr.subjects))} + {len(np.unique(va.subjects))} subjects; "
        f"data.train / data.val cap them, 0 = all)")
    spec = [ds.fingerprint, sorted(map(str, data.get("val_subjects") or [])),
            data.get("train", 0), data.get("val", 0), seed]
    from nas.io import json_hash

    return GazeSplits(tr.images, np.asarray(tr.labels, np.float32), va.images,
                      np.asarray(va.labels, np.float32), f"{ds.name}-{json_hash(spec)}")
