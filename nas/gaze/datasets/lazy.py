"""Array-likes that read on demand, so a dataset larger than memory can be opened at all.

`LazyArray` looks enough like a numpy array for training code (`len`, `shape`, `dtype`,
indexing by int / slice / index array / bool mask, `np.asarray`) but each access calls
the reader's `fetch(indices)`, which reads just those rows from disk.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

Fetch = Callable[[np.ndarray], np.ndarray]

__all__ = ["LazyArray", "LazyDict", "as_indices"]


def as_indices(key: Any, n: int) -> np.ndarray | int:
    """A row key (int, slice, bool mask, int sequence) -> an int (one row) or an int64 array
    of rows in [0, n); negative ints count from the end like numpy."""
    if isinstance(key, (int, np.integer)):
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} samples")
        return i % n
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key]
    idx = np.asarray(key)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean mask of shape {idx.shape} for {n} samples")
        return np.flatnonzero(idx)
    if idx.size == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
        raise IndexError(f"expected an int, a slice, a bool mask or a 1-D int array, got "
                         f"{idx.dtype} of shape {idx.shape}")
    if idx.min() < -n or idx.max() >= n:
        raise IndexError(f"index out of range for {n} samples")
    return np.where(idx < 0, idx + n, idx).astype(np.int64)


class LazyArray:
    """(N, *item_shape) rows of `dtype`, read through `fetch(int64 indices) -> ndarray`."""

    def __init__(self, n: int, item_shape: tuple[int, ...], dtype: Any, fetch: Fetch):
        self._n = int(n)
        self._item_shape = tuple(int(s) for s in item_shape)
        self.dtype = np.dtype(dtype)
        self._fetch = fetch

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self._item_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self._item_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype})"

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Rows `indices` (int64 array) as one (k, *item_shape) array."""
        if len(indices) == 0:
            return np.zeros((0, *self._item_shape), self.dtype)
        out = np.asarray(self._fetch(np.asarray(indices, np.int64)))
        want = (len(indices), *self._item_shape)
        if out.shape != want or out.dtype != self.dtype:
            raise RuntimeError(f"reader returned {out.dtype}{out.shape}, expected "
                               f"{self.dtype}{want}")
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        idx = as_indices(key, self._n)
        out = self.read(np.array([idx]))[0] if isinstance(idx, int) else self.read(idx)
        if rest:
            out = out[(slice(None), *rest)] if not isinstance(idx, int) else out[rest]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, self._n, 256):
            yield from self.read(np.arange(start, min(start + 256, self._n)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Everything, read in blocks (what `np.asarray(lazy)` asks for; costs all the RAM)."""
        out = np.empty(self.shape, self.dtype)
        for start in range(0, self._n, 1024):
            stop = min(start + 1024, self._n)
            out[start:stop] = self.read(np.arange(start, stop))
        return out if dtype is None else out.astype(dtype)


class LazyDict(dict):
    """Named inputs of a multi-input sample ({"face": LazyArray, ...}) that can also be read
    all at once with `fetch(indices)`, so a reader decodes each frame once, not per input."""

    def __init__(self, arrays: dict[str, LazyArray], fetch_all: Callable[[np.ndarray], dict]):
        super().__init__(arrays)
        self._fetch_all = fetch_all

    def fetch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, np.int64)
        if len(indices) == 0:
            return {k: v.read(indices) for k, v in self.items()}
        return self._fetch_all(indices)

    def __reduce__(self):  # dict subclasses pickle their items, not our attributes
        return (LazyDict, (dict(self), self._fetch_all))
