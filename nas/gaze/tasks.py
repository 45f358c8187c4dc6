"""Gaze tasks as descriptors: what a label is, how it is scored and in which unit, what the
network sees, and what a model card says, so nothing downstream branches on task names.

A task is looked up by the name a space declares (`task:` in its YAML); a new task is one
`register_task(Task(...))`. A task lists the input layouts it accepts (the first is its
default): which named inputs the network takes, and which static / weight-sharing model
classes build it, so models, LUT keys and export follow the layout, never the task name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nas.errors import UserError

Metric = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (pred, true) -> per-sample error


def _angular_deg(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    from nas.gaze.geometry import angular_error_deg

    return angular_error_deg(pred, true)


def _euclidean(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pred - true, axis=1)


INPUT_KINDS = ("image", "grid", "vector")


@dataclass(frozen=True)
class InputSpec:
    """One named input of a layout.

    kind: "image" (uint8 HxW gray or HxWx3 RGB, scaled to [0, 1] and resized to the space's
    resolution for it), "grid" (a size x size 0/1 mask, fed as is) or "vector" (`size`
    floats, fed as is). branch: image inputs with the same branch run the same searched
    backbone (shared weights); each branch is priced once per input that runs it."""

    name: str
    kind: str
    branch: str = ""
    size: int = 0
    meaning: str = ""


@dataclass(frozen=True)
class Layout:
    """What a network of this layout takes and which classes build it ("module:Class",
    imported lazily: this module imports no torch)."""

    name: str
    inputs: tuple[InputSpec, ...]
    model: str
    supernet: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def single(self) -> bool:
        """One image input: the classic GazeNet (stem, layers, head), named `input`."""
        return len(self.inputs) == 1


SINGLE = Layout("single", (InputSpec("input", "image", "main"),),
                "nas.models:GazeNet", "nas.supernet:Supernet")
ITRACKER = Layout("itracker", (
    InputSpec("face", "image", "face", meaning="face crop (RGB)"),
    InputSpec("left_eye", "image", "eye", meaning="the subject's left eye crop (RGB)"),
    InputSpec("right_eye", "image", "eye", meaning="the subject's right eye crop (RGB)"),
    InputSpec("face_grid", "grid", size=25,
              meaning="face box in the camera frame on a 25x25 grid: 1 inside, 0 outside")),
    "nas.models:FusionNet", "nas.supernet:FusionSupernet")
HEAD_POSE = Layout("head_pose", (
    InputSpec("face", "image", "face", meaning="normalized face crop"),
    InputSpec("head_pose", "vector", size=2,
              meaning="head pose (pitch, yaw) in radians, normalized camera space")),
    "nas.models:FusionNet", "nas.supernet:FusionSupernet")


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]      # label columns, in order
    metric_name: str             # what the error is ("angular error", "distance")
    unit: str                    # "deg" or "cm"
    per_sample: Metric = field(repr=False)
    output_meaning: str = ""     # the model card's description of the output
    input_meaning: str = ""      # the model card's description of the input
    layouts: tuple[Layout, ...] = (SINGLE,)  # accepted input layouts; the first is the default

    def layout_of(self, names: tuple[str, ...] | None, source: str | None = None) -> Layout:
        """The layout whose inputs are exactly `names` (None: the default layout)."""
        if names is None:
            names = self.layouts[0].names
        for lay in self.layouts:
            if set(lay.names) == set(names):
                return lay
        want = "; or ".join(", ".join(lay.names) for lay in self.layouts)
        raise UserError(f"task {self.name} takes the inputs {want}; got "
                        f"{', '.join(names) or 'none'}", source=source, field="input.inputs")

    def error(self, pred, true) -> float:
        """Mean error of predictions against labels, in this task's unit."""
        p = np.asarray(pred, dtype=np.float64)
        t = np.asarray(true, dtype=np.float64)
        return float(np.mean(self.per_sample(p, t)))

    def format(self, value: float) -> str:
        return f"{value:.2f} {self.unit}"

    def key(self, stem: str, suffix: str = "") -> str:
        """A run-file field holding an error of this task, named with its unit so a number
        in cm is never read as degrees: key("error_inherited") -> error_inherited_deg
        (gaze3d) or error_inherited_cm (pog2d); `suffix` goes after the unit."""
        return f"{stem}_{self.unit}" + (f"_{suffix}" if suffix else "")

    @property
    def error_key(self) -> str:
        """The error field of eval-cache rows, trials, fronts and budget picks (gaze3d
        `error_deg`, pog2d `error_cm`)."""
        return self.key("error")

    @property
    def error_label(self) -> str:
        """The error as an axis or column title, e.g. "angular error (deg)"."""
        return f"{self.metric_name} ({self.unit})"


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str, source: str | None = None) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join(sorted(TASKS))}",
                        source=source, field="task") from None


register_task(Task(
    "gaze3d", ("pitch", "yaw"), "angular error", "deg", _angular_deg,
    output_meaning="pitch, yaw in radians (normalized camera space; "
                   "g = (-cos p sin y, -sin p, -cos p cos y))",
    input_meaning="normalized eye patch (gray) or face crop (RGB), resized to HxW, values "
                  "scaled to [0, 1]",
    layouts=(SINGLE, HEAD_POSE)))
register_task(Task(
    "pog2d", ("x_cm", "y_cm"), "distance", "cm", _euclidean,
    output_meaning="point of gaze x, y in cm from the camera (GazeCapture convention)",
    input_meaning="face and eye crops (RGB, values scaled to [0, 1]) and a 25x25 face grid "
                  "(0/1)",
    layouts=(ITRACKER,)))
