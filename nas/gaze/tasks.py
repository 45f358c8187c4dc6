"""Gaze tasks as descriptors: what a label is, how it is scored and in which unit, what the
network sees, and what a model card says, so nothing downstream branches on task names.

A task is looked up by the name a space declares (`task:` in its YAML); a new task is one
`register_task(Task(...))`.
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


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]      # label columns, in order
    metric_name: str             # what the error is ("angular error", "distance")
    unit: str                    # "deg" or "cm"
    per_sample: Metric = field(repr=False)
    output_meaning: str = ""     # the model card's description of the output
    input_meaning: str = ""      # the model card's description of the input

    def error(self, pred, true) -> float:
        """Mean error of predictions against labels, in this task's unit."""
        p = np.asarray(pred, dtype=np.float64)
        t = np.asarray(true, dtype=np.float64)
        return float(np.mean(self.per_sample(p, t)))

    def format(self, value: float) -> str:
        return f"{value:.2f} {self.unit}"


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
                  "scaled to [0, 1]"))
register_task(Task(
    "pog2d", ("x_cm", "y_cm"), "distance", "cm", _euclidean,
    output_meaning="point of gaze x, y in cm from the camera (GazeCapture convention)",
    input_meaning="face and eye crops (RGB) and a 25x25 face grid, values scaled to [0, 1]"))
