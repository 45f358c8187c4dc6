"""Gaze direction conventions and angular error.

Normalized camera coordinates: x right, y down, z forward (away from the
camera). A gaze (pitch, yaw) in radians maps to the unit vector

    g = (-cos p sin y, -sin p, -cos p cos y)

so (0, 0) looks straight into the camera, pitch > 0 looks up and yaw > 0
points the gaze towards negative x. Every module that converts between
angles and vectors goes through here so the convention lives in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: render workers only need numpy
    import torch

__all__ = [
    "pitchyaw_to_vector",
    "vector_to_pitchyaw",
    "angular_error_deg",
    "angular_error_deg_torch",
    "pitchyaw_to_vector_torch",
]


def pitchyaw_to_vector(py: np.ndarray) -> np.ndarray:
    """(..., 2) pitch/yaw in radians -> (..., 3) unit gaze vectors."""
    py = np.asarray(py, dtype=np.float64)
    p, y = py[..., 0], py[..., 1]
    cp = np.cos(p)
    return np.stack([-cp * np.sin(y), -np.sin(p), -cp * np.cos(y)], axis=-1)


def vector_to_pitchyaw(v: np.ndarray) -> np.ndarray:
    """(..., 3) gaze vectors (any length) -> (..., 2) pitch/yaw in radians."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    pitch = np.arcsin(np.clip(-v[..., 1], -1.0, 1.0))
    yaw = np.arctan2(-v[..., 0], -v[..., 2])
    return np.stack([pitch, yaw], axis=-1)


def angular_error_deg(pred_py: np.ndarray, true_py: np.ndarray) -> np.ndarray:
    """Angle in degrees between predicted and true gaze, per sample (N,)."""
    a = pitchyaw_to_vector(pred_py)
    b = pitchyaw_to_vector(true_py)
    dot = np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(dot))


def pitchyaw_to_vector_torch(py: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`pitchyaw_to_vector` (differentiable)."""
    import torch

    p, y = py[..., 0], py[..., 1]
    cp = torch.cos(p)
    return torch.stack([-cp * torch.sin(y), -torch.sin(p), -cp * torch.cos(y)], dim=-1)


def angular_error_deg_torch(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Differentiable angular error in degrees, (N, 2) pitch/yaw -> (N,).

    Uses atan2(|a x b|, a . b) rather than arccos of a clipped dot product:
    it is accurate for small angles (arccos loses ~0.02 deg in float32) and
    its gradient stays finite near 0 and 180 degrees.
    """
    import torch

    a = pitchyaw_to_vector_torch(pred)
    b = pitchyaw_to_vector_torch(true.to(a.dtype))
    cross = torch.linalg.cross(a, b, dim=-1)
    sin_n = torch.sqrt(torch.clamp((cross * cross).sum(dim=-1), min=1e-30))
    cos_n = (a * b).sum(dim=-1)
    return torch.rad2deg(torch.atan2(sin_n, cos_n))
