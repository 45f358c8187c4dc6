"""Gaze datasets behind one seam: `open_dataset(name, path, **opts)` for the embedded
renderer, MPIIGaze, MPIIFaceGaze, ETH-XGaze, GazeCapture and prepared caches.

    from nas.gaze.datasets import open_dataset
    ds = open_dataset("ethxgaze", "/data/xgaze_224", size=112)
    images, labels = ds.batch(ds.split_of(held_out=["subject0003"])["train"][:256])

`nas.gaze.datasets.prepare.prepare` converts any source into a memory-mapped cache, opened
again with `open_dataset("cache", folder)`. A new source is one module with a
`@register_source` class (see `registry.Source`). Real-dataset readers need the `data`
extra (h5py, scipy, Pillow), imported only when used.
"""

from nas.gaze.datasets.bad import BadSampleError
from nas.gaze.datasets.dataset import LABEL_UNITS, TASKS, GazeDataset
from nas.gaze.datasets.lazy import LazyArray, LazyDict
from nas.gaze.datasets.registry import (Source, available_sources, get_source, open_dataset,
                                        register_source)
from nas.gaze.datasets.splits import check_disjoint, leave_one_subject_out, subject_split

__all__ = [
    "open_dataset", "available_sources", "get_source", "register_source", "Source",
    "GazeDataset", "LazyArray", "LazyDict", "BadSampleError", "TASKS", "LABEL_UNITS",
    "subject_split", "leave_one_subject_out", "check_disjoint",
]

