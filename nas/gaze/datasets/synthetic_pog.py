"""`synthetic_pog`: embedded point-of-gaze samples in GazeCapture's layout (face, left_eye,
right_eye RGB crops, a 25x25 face grid; labels (XCam, YCam) in cm from the camera),
rendered by `nas.gaze.synthetic_pog`: pog2d with no download. `path`, if given, is where
the renders are cached (default: $GAZE_NAS_CACHE or ~/.cache/gaze-nas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.options import opt_size
from nas.gaze.datasets.registry import Log, register_source
from nas.gaze.datasets.rendered import rendered_dataset

INPUTS = ("face", "left_eye", "right_eye", "face_grid")


@register_source
class SyntheticPogSource:
    name = "synthetic_pog"
    task = "pog2d"
    needs_path = False
    options = {"n_train": 2000, "n_val": 500, "seed": 0, "workers": 1, "face_size": 64,
               "eye_size": 32, "screens": "phone,tablet"}

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        from nas.gaze.synthetic_pog import SCREENS, PogConfig, sample_pog

        src = f"{self.name} options"
        sizes = {}
        for key in ("face_size", "eye_size"):
            h, w = opt_size(opts, key, src, allow_none=False)
            if h != w:
                raise UserError(f"expected a square size, got [{h}, {w}]", source=src, field=key)
            sizes[key] = h
        screens = opts["screens"]  # "phone,tablet" (config options are plain values)
        screens = screens.split(",") if isinstance(screens, str) else screens
        if (not isinstance(screens, (list, tuple)) or not screens
                or any(s not in SCREENS for s in screens)):
            raise UserError(f"expected screen names from {', '.join(SCREENS)} (e.g. "
                            f"'phone,tablet'), got {opts['screens']!r}", source=src,
                            field="screens")
        cfg = PogConfig(screens=tuple(screens), **sizes)
        return rendered_dataset(self.name, self.task, path, log, opts, "synthpog", cfg,
                                sample_pog, lambda a: {k: a[k] for k in INPUTS}, "label")
