"""`synthetic_face`: embedded RGB face crops with gaze (pitch, yaw) labels and head pose,
rendered by `nas.gaze.synthetic_face` (two rendered eyes in a shaded head whose layout
follows the head pose): gaze3d on faces with no download. `path`, if given, is where the
renders are cached (default: $GAZE_NAS_CACHE or ~/.cache/gaze-nas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.options import opt_size
from nas.gaze.datasets.registry import Log, register_source
from nas.gaze.datasets.rendered import rendered_dataset


@register_source
class SyntheticFaceSource:
    name = "synthetic_face"
    task = "gaze3d"
    needs_path = False
    options = {"n_train": 2000, "n_val": 500, "seed": 0, "workers": 1, "size": 64}

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        from nas.gaze.synthetic_face import FaceConfig, sample_face

        h, w = opt_size(opts, "size", f"{self.name} options", allow_none=False)
        if h != w:
            raise UserError(f"expected a square size (face crops), got [{h}, {w}]",
                            source=f"{self.name} options", field="size")
        cfg = FaceConfig(size=h)
        return rendered_dataset(self.name, self.task, path, log, opts, "synthface", cfg,
                                sample_face, lambda a: a["images"], "gaze", "head")
