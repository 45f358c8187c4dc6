"""Label conversions shared by the readers, in DESIGN.md's conventions (x right, y down,
z forward; g = (-cos p sin y, -sin p, -cos p cos y), pitch > 0 looks up).

Gaze vectors: pitch = asin(-y), yaw = atan2(-x, -z) (`nas.gaze.geometry` owns the formula).

Head pose: MPIIGaze stores a rotation vector of the head frame (x right, y down, z from the
face into the head, the 6-point face model's axes). Its third column M[:, 2] therefore
points *away* from the camera for a frontal face, and the direction the face points is
f = -M[:, 2]. We give head pose as the (pitch, yaw) of f in the gaze convention:
pitch = asin(-f_y) = asin(M[1, 2]), yaw = atan2(-f_x, -f_z) = atan2(M[0, 2], M[2, 2]), so a
frontal head is (0, 0) and a face turned up has pitch > 0, like a gaze looking up. (Applying
the gaze formula to M[:, 2] itself would put a frontal head at yaw = +-pi.)

Mirroring an eye image left-right maps x -> -x: yaw changes sign, pitch does not.
"""

from __future__ import annotations

import numpy as np

from nas.gaze.geometry import vector_to_pitchyaw

__all__ = ["gaze_vectors_to_pitchyaw", "rodrigues", "head_rotvec_to_pitchyaw", "mirror_yaw"]


def gaze_vectors_to_pitchyaw(v: np.ndarray) -> np.ndarray:
    """(N, 3) gaze vectors (any length) -> (N, 2) float32 (pitch, yaw) radians."""
    return vector_to_pitchyaw(np.asarray(v, np.float64)).astype(np.float32)


def rodrigues(rvec: np.ndarray) -> np.ndarray:
    """(N, 3) rotation vectors (axis * angle) -> (N, 3, 3) rotation matrices."""
    r = np.asarray(rvec, np.float64).reshape(-1, 3)
    theta = np.linalg.norm(r, axis=1)
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = r / safe[:, None]
    kx, ky, kz = k[:, 0], k[:, 1], k[:, 2]
    zero = np.zeros_like(kx)
    K = np.stack([np.stack([zero, -kz, ky], 1), np.stack([kz, zero, -kx], 1),
                  np.stack([-ky, kx, zero], 1)], 1)
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    out = np.eye(3)[None] + s * K + (1 - c) * (K @ K)
    out[theta <= 1e-12] = np.eye(3)
    return out


def head_rotvec_to_pitchyaw(rvec: np.ndarray) -> np.ndarray:
    """(N, 3) head rotation vectors -> (N, 2) float32 (pitch, yaw) of the facing direction."""
    m = rodrigues(rvec)
    z = m[:, :, 2]  # the head's z axis, into the head
    pitch = np.arcsin(np.clip(z[:, 1], -1.0, 1.0))
    yaw = np.arctan2(z[:, 0], z[:, 2])
    return np.stack([pitch, yaw], axis=1).astype(np.float32)


def mirror_yaw(py: np.ndarray) -> np.ndarray:
    """(N, 2) (pitch, yaw) of a left-right mirrored image: yaw negated."""
    out = np.array(py, np.float32, copy=True)
    out[:, 1] = -out[:, 1]
    return out
