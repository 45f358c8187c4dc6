"""Embedded (rendered) sources as datasets: the options they share, and a rendered train /
val pair turned into a GazeDataset whose official split is that pair.

Every sample is a freshly drawn subject, so subject ids are sample numbers. Train and val
use distinct seeds (2 seed + 1, 2 seed + 2, as the eye-patch source), so they never share a
sample; the run's seed, data.train and data.val fill `seed`, `n_train`, `n_val` unless the
config's data.options set them (`nas.gaze.datasets.run_splits`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.errors import UserError
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.registry import Log

COUNTS = {"n_train": 1, "n_val": 1, "seed": 0, "workers": 1}  # option -> least value


def count(opts: dict, key: str, lo: int, source: str) -> int:
    v = opts[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise UserError(f"expected an integer >= {lo}, got {v!r}", source=source, field=key)
    return v


def counts(opts: dict, source: str) -> dict[str, int]:
    """n_train, n_val, seed, workers, checked."""
    return {k: count(opts, k, lo, source) for k, lo in COUNTS.items()}


def rendered_dataset(name: str, task: str, root: Path | None, log: Log, opts: dict[str, Any],
                     prefix: str, cfg: Any, render_one: Callable, images: Callable[[dict], Any],
                     labels: str, head_pose: str | None = None) -> GazeDataset:
    """Render (or load) the train and val sets of `render_one` under `cfg` and assemble them:
    `images(arrays)` picks the image input(s) out of a rendered set, `labels` / `head_pose`
    name its label and head-pose arrays."""
    from nas.gaze.data import cache_dir
    from nas.gaze.render_cache import load_or_render

    c = counts(opts, f"{name} options")
    root = Path(root) if root is not None else cache_dir()
    seed, fp = c["seed"], cfg.fingerprint()
    tr = load_or_render(root, prefix, fp, render_one, cfg, c["n_train"], seed * 2 + 1,
                        c["workers"], log)
    va = load_or_render(root, prefix, fp, render_one, cfg, c["n_val"], seed * 2 + 2,
                        c["workers"], log)
    both = {k: np.concatenate([tr[k], va[k]]) for k in tr}
    n_train, n = c["n_train"], c["n_train"] + c["n_val"]
    return GazeDataset(
        name=name, task=task, root=root, images=images(both),
        labels=both[labels].astype(np.float32),
        head_pose=None if head_pose is None else both[head_pose].astype(np.float32),
        subjects=np.arange(n, dtype=np.int64),
        fingerprint=f"{prefix}-{fp}-s{seed}-{n_train}-{c['n_val']}",
        official={"train": np.arange(n_train), "val": np.arange(n_train, n)},
        meta={"renderer": repr(cfg)})
