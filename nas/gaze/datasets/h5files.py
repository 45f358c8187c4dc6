"""A few open HDF5 files at a time, reopened on demand.

Why: lazy per-index reads need an open handle, but a dataset may span hundreds of files
(ETH-XGaze: 80 subjects) and each handle holds a descriptor and a chunk cache. Handles are
never pickled or shared across a fork: a worker process opens its own.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from nas.gaze.datasets.deps import need


class H5Files:
    """`get(path)` -> an open read-only h5py.File; beyond `max_open` the least recently
    used one is closed."""

    def __init__(self, dataset: str, max_open: int = 8):
        self.dataset = dataset
        self.max_open = max_open
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: str | Path) -> Any:
        if self._pid != os.getpid():  # forked: the parent's handles are not ours to use
            self._open = OrderedDict()
            self._pid = os.getpid()
        key = str(path)
        f = self._open.get(key)
        if f is not None:
            self._open.move_to_end(key)
            return f
        h5py = need("h5py", self.dataset)
        f = h5py.File(key, "r")
        self._open[key] = f
        while len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            old.close()
        return f

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __len__(self) -> int:
        return len(self._open)

    def __getstate__(self) -> dict:
        return {"dataset": self.dataset, "max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["dataset"], state["max_open"])


class RowDescribe:
    """A sample's name for messages, "<file> row <r>", in the one-file-per-subject HDF5
    layouts (a class, not a lambda: datasets pickle to worker processes)."""

    def __init__(self, files, file_idx, rows):
        self.files, self.file_idx, self.rows = files, file_idx, rows

    def __call__(self, i: int) -> str:
        return f"{self.files[self.file_idx[i]]} row {self.rows[i]}"
