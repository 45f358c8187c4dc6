"""The embedded renderer as a data source: MPIIGaze-style gray eye patches that need no
download. Same seeds and cache files as `nas.gaze.data.synthetic_splits`, so both give the
same images for the same (n_train, n_val, seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.options import opt_choice
from nas.gaze.datasets.registry import Log, register_source


def _count(opts: dict, key: str, lo: int) -> int:
    v = opts[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise UserError(f"expected an integer >= {lo}, got {v!r}", source="synthetic options",
                        field=key)
    return v


def label_preset(opts: dict, source: str, field: str = "labels") -> str:
    """The `labels` option: a label-distribution preset of the renderer (one-line error
    naming the field and the presets otherwise)."""
    from nas.gaze.synthetic import LABEL_PRESETS

    return opt_choice({field: opts.get("labels", "uniform")}, field, list(LABEL_PRESETS),
                      source)


@register_source
class SyntheticSource:
    """Rendered eye patches; every sample is a freshly drawn subject, so subject ids are
    sample numbers and the official split is the rendered train / val pair. `path`, if
    given, is where renders are cached (default: $GAZE_NAS_CACHE or ~/.cache/gaze-nas).
    `labels` picks the gaze / head-pose distribution: uniform, or mpiigaze (a webcam above
    a laptop screen, as in MPIIGaze; see nas.gaze.synthetic.LABEL_PRESETS)."""

    name = "synthetic"
    task = "gaze3d"
    needs_path = False
    options = {"n_train": 512, "n_val": 128, "seed": 0, "workers": 1, "labels": "uniform"}

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        from nas.gaze.data import cache_dir
        from nas.gaze.synthetic import RenderConfig, load_or_render

        n_train, n_val = _count(opts, "n_train", 1), _count(opts, "n_val", 1)
        seed, workers = _count(opts, "seed", 0), _count(opts, "workers", 1)
        cfg = RenderConfig(labels=label_preset(opts, "synthetic options"))
        root = Path(path) if path is not None else cache_dir()
        tr = load_or_render(root, n_train, seed * 2 + 1, cfg, workers=workers, log=log)
        va = load_or_render(root, n_val, seed * 2 + 2, cfg, workers=workers, log=log)
        n = n_train + n_val
        return GazeDataset(
            name=self.name, task=self.task, root=root,
            images=np.concatenate([tr["images"], va["images"]]),
            labels=np.concatenate([tr["gaze"], va["gaze"]]).astype(np.float32),
            head_pose=np.concatenate([tr["head"], va["head"]]).astype(np.float32),
            subjects=np.arange(n, dtype=np.int64),
            fingerprint=f"synth-{cfg.fingerprint()}-s{seed}-{n_train}-{n_val}",
            official={"train": np.arange(n_train), "val": np.arange(n_train, n)})
