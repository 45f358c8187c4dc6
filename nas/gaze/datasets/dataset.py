"""What every data source returns: images (read lazily where large), labels, subjects,
head pose, a fingerprint, and the dataset's official split where it has one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nas.errors import UserError
from nas.gaze.datasets.lazy import LazyArray, LazyDict, as_indices
from nas.gaze.datasets.splits import check_disjoint, subject_split
from nas.gaze.tasks import TASKS  # one registry of tasks

LABEL_UNITS = {"gaze3d": "(pitch, yaw) radians", "pog2d": "(x, y) cm from the camera"}

__all__ = ["GazeDataset", "TASKS", "LABEL_UNITS"]


class _Take:
    """fetch for a subset: rows `index[j]` of `parent` (a class, not a lambda: picklable)."""

    def __init__(self, parent: Any, index: np.ndarray):
        self.parent, self.index = parent, index

    def __call__(self, j: np.ndarray) -> np.ndarray:
        rows = self.index[j]
        if isinstance(self.parent, LazyArray):
            return self.parent.read(rows)
        return np.asarray(self.parent[rows])


class _TakeAll:
    def __init__(self, parent: LazyDict, index: np.ndarray):
        self.parent, self.index = parent, index

    def __call__(self, j: np.ndarray) -> dict:
        return self.parent.fetch(self.index[j])


def _take(images: Any, index: np.ndarray) -> Any:
    """`images` restricted to rows `index` without reading them (except in-memory arrays)."""
    if isinstance(images, LazyDict):
        return LazyDict({k: _take(v, index) for k, v in images.items()},
                        _TakeAll(images, index))
    if isinstance(images, dict):
        return {k: _take(v, index) for k, v in images.items()}
    if type(images) is np.ndarray:  # in memory already: a copy costs nothing new
        return images[index]
    return LazyArray(len(index), images.shape[1:], images.dtype, _Take(images, index))


class GazeDataset:
    """One opened dataset.

    images: uint8 (N, H, W) gray / (N, H, W, 3) RGB, array-like (numpy, memmap or
        LazyArray), or a dict of named inputs for multi-input tasks.
    labels: float32 (N, 2): (pitch, yaw) radians for gaze3d, (x, y) cm for pog2d; None for
        an unlabeled set (the ETH-XGaze test split), which `require_labels` refuses.
    subjects: (N,) int or str subject ids; head_pose: float32 (N, 2) (pitch, yaw) or None.
    fingerprint: content-derived (files + sizes + mtimes + options).
    official: the dataset's own split, name -> indices, or None.
    """

    def __init__(self, *, name: str, task: str, root: str | Path | None, images: Any,
                 labels: np.ndarray | None, subjects: np.ndarray, fingerprint: str,
                 head_pose: np.ndarray | None = None,
                 official: Mapping[str, np.ndarray] | None = None,
                 describe: Callable[[int], str] | None = None, meta: dict | None = None):
        if task not in TASKS:
            raise ValueError(f"task {task!r} not in {tuple(TASKS)}")
        self.name, self.task = name, task
        self.root = None if root is None else str(root)
        self.images = images
        self.labels = labels
        self.subjects = np.asarray(subjects)
        self.head_pose = head_pose
        self.fingerprint = fingerprint
        self.meta = dict(meta or {})
        self._describe = describe
        n = len(self.subjects)
        arrays = images.values() if isinstance(images, dict) else [images]
        for a in arrays:
            if len(a) != n or np.dtype(a.dtype) != np.uint8:
                raise ValueError(f"{name}: images {a.dtype}{a.shape} for {n} subjects")
        for what, arr in (("labels", labels), ("head_pose", head_pose)):
            if arr is not None and (arr.shape != (n, 2) or arr.dtype != np.float32):
                raise ValueError(f"{name}: {what} {arr.dtype}{arr.shape}, expected float32 "
                                 f"({n}, 2)")
        self._split_names: list[str] = []
        self._split_codes: np.ndarray | None = None
        if official is not None:
            self._split_names = list(official)
            codes = np.full(n, -1, np.int8)
            for k, idx in enumerate(official.values()):
                codes[np.asarray(idx, np.int64)] = k
            self._split_codes = codes
            check_disjoint(self.subjects, official, self.root)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.subjects)

    def __repr__(self) -> str:
        return (f"GazeDataset({self.name!r}, task={self.task!r}, n={len(self)}, "
                f"subjects={len(np.unique(self.subjects))}, fingerprint={self.fingerprint!r})")

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    @property
    def official(self) -> dict[str, np.ndarray] | None:
        if self._split_codes is None:
            return None
        return {name: np.flatnonzero(self._split_codes == k)
                for k, name in enumerate(self._split_names)}

    def describe(self, i: int) -> str:
        """A human name for sample i (file and row), for messages."""
        return self._describe(i) if self._describe else f"{self.name}[{i}]"

    def read_images(self, indices: Sequence[int] | np.ndarray) -> Any:
        """Images of rows `indices` as ndarray(s) (one read pass per file)."""
        idx = np.asarray(indices, np.int64)
        if isinstance(self.images, LazyDict):
            return self.images.fetch(idx)
        if isinstance(self.images, dict):
            return {k: _read(v, idx) for k, v in self.images.items()}
        return _read(self.images, idx)

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[Any, np.ndarray | None]:
        """(images, labels) of rows `indices`: what a training step needs."""
        idx = np.asarray(indices, np.int64)
        labels = None if self.labels is None else np.asarray(self.labels[idx])
        return self.read_images(idx), labels

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = as_indices(i, len(self))
        if not isinstance(i, int):
            raise TypeError("ds[i] takes one int; use ds.batch(indices) for many")
        img = self.read_images([i])
        img = {k: v[0] for k, v in img.items()} if isinstance(img, dict) else img[0]
        return {"image": img,
                "label": None if self.labels is None else self.labels[i],
                "subject": self.subjects[i].item(),
                "head_pose": None if self.head_pose is None else self.head_pose[i]}

    # ------------------------------------------------------------------ splits
    def split_of(self, held_out: Sequence | Mapping[str, Sequence] | None = None
                 ) -> dict[str, np.ndarray]:
        """Indices per split, always by subject. `held_out` subject ids -> {"train",
        "test"} (leave-subjects-out; a mapping names several held-out splits); None -> the
        dataset's official split (ETH-XGaze train_test_split.json, GazeCapture info.json)."""
        if held_out is not None:
            return subject_split(self.subjects, held_out, self.root)
        official = self.official
        if official is None:
            raise UserError(f"{self.name} has no official split; name held-out subjects "
                            "(leave-one-subject-out)", source=self.root, field="held_out")
        return official

    def subset(self, indices: Sequence[int] | np.ndarray) -> GazeDataset:
        """The samples `indices` as a dataset of their own, still lazy."""
        idx = np.asarray(indices, np.int64)
        sub = GazeDataset.__new__(GazeDataset)
        sub.__dict__.update(self.__dict__)
        sub.images = _take(self.images, idx)
        sub.labels = None if self.labels is None else self.labels[idx]
        sub.subjects = self.subjects[idx]
        sub.head_pose = None if self.head_pose is None else self.head_pose[idx]
        sub._split_codes = None if self._split_codes is None else self._split_codes[idx]
        sub._describe = _SubDescribe(self, idx)
        sub.meta = {**self.meta, "subset_of": self.fingerprint}
        return sub

    def require_labels(self, purpose: str = "training") -> np.ndarray:
        """The labels, or a one-line error for an unlabeled set."""
        if self.labels is None:
            raise UserError(f"{self.name} samples here have no labels (unlabeled set, "
                            f"usable for inference only), so they cannot be used for "
                            f"{purpose}", source=self.root,
                            field=self.meta.get("label_field", "labels"))
        return self.labels


class _SubDescribe:
    def __init__(self, parent: GazeDataset, index: np.ndarray):
        self.parent, self.index = parent, index

    def __call__(self, j: int) -> str:
        return self.parent.describe(int(self.index[j]))


def _read(images: Any, idx: np.ndarray) -> np.ndarray:
    if isinstance(images, LazyArray):
        return images.read(idx)
    return np.asarray(images[idx])
