"""Seeded renderer of point-of-gaze samples in GazeCapture's geometry: the embedded data of
pog2d (`synthetic_pog`): face crop, both eye crops, the 25x25 face grid, and the point on
the screen the person looks at, in cm from the camera.

Geometry (cm, camera coordinates: x right in the image, y down, z towards the person; the
device's screen lies in the plane z = 0 with the camera at the origin, as GazeCapture's
"prediction space"): the target is drawn uniformly on a phone or a tablet screen below
the camera (portrait); the eyes' midpoint E in front of the device; the head roughly
facing the screen centre. The gaze ray from E through the target fixes gaze and, with the
head pose, the eye-in-head gaze the eyes are rendered with. Labels are GazeCapture's
(XCam, YCam): x to the right as the person sees the screen, y up, i.e.
(XCam, YCam) = (-x, -y) of the target.

The camera sees the face off its axis: face and eyes are rendered in the camera rotated to
look at E (pose and gaze expressed in that frame, roll dropped), as a crop of an
unnormalized frame shows them; where the face sits in the frame (and how large it is)
goes only into the face grid, as in iTracker: the grid carries head position and distance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from nas.gaze.geometry import pitchyaw_to_vector, vector_to_pitchyaw
from nas.gaze.synthetic import _rot
from nas.gaze.synthetic_face import (ANCHOR, FaceConfig, appearance, eye_tint, render_eye_pair,
                                     render_face)

POG_RENDERER_VERSION = "1"
GRID = 25
# (XCam range, YCam range) in cm: where a screen's points lie from the camera (portrait)
SCREENS = {"phone": ((-2.9, 2.9), (-11.4, -1.0)), "tablet": ((-7.4, 7.4), (-20.6, -1.0))}


@dataclass(frozen=True)
class PogConfig:
    """Everything that changes the rendered bytes (hashed into cache names)."""

    face_size: int = 64
    eye_size: int = 32
    screens: tuple[str, ...] = ("phone", "tablet")  # drawn uniformly per sample
    frame: tuple[int, int] = (640, 480)  # camera frame (H, W), portrait like GazeCapture's
    focal_px: float = 560.0
    distance_cm: tuple[float, float] = (22.0, 45.0)
    head_x_cm: float = 5.0             # eyes' midpoint x: uniform in +- this
    head_y_cm: tuple[float, float] = (0.0, 12.0)  # eyes' midpoint below the camera
    head_jitter_deg: float = 8.0       # head pose around facing the screen centre (std)
    max_eye_deg: float = 35.0          # eye-in-head beyond this: the head pose is re-drawn
    noise_sigma: float = 0.015
    span_cm: float = 13.0              # what the face crop spans (FaceConfig)

    def fingerprint(self) -> str:
        blob = json.dumps({"v": POG_RENDERER_VERSION, **dataclasses.asdict(self)},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def face(self) -> FaceConfig:
        return FaceConfig(size=self.face_size, span_cm=self.span_cm,
                          noise_sigma=self.noise_sigma)


def _toward(v: np.ndarray) -> np.ndarray:
    """Rotation (no roll) taking direction v to the camera axis (0, 0, 1)."""
    return _rot(*vector_to_pitchyaw(-v)).T


def head_and_eye(rng: np.random.Generator, cfg: PogConfig, eyes: np.ndarray,
                 target: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head pose (near facing the screen centre `centre`) and the gaze vector from `eyes`
    to `target`; the head is re-drawn while the eye-in-head gaze is implausibly large."""
    gaze = (target - eyes) / np.linalg.norm(target - eyes)
    facing = vector_to_pitchyaw(centre - eyes)
    lim = np.radians(cfg.max_eye_deg)
    for _ in range(16):
        head = facing + np.radians(cfg.head_jitter_deg) * rng.normal(0, 1, 2)
        eye = vector_to_pitchyaw(_rot(*head).T @ gaze)
        if np.all(np.abs(eye) <= lim):
            return head, gaze
    return vector_to_pitchyaw(gaze), gaze  # looking straight along the gaze


def face_grid(cfg: PogConfig, centre: np.ndarray) -> np.ndarray:
    """25x25 0/1 mask of the face box in the frame (rows = grid y), from the face centre."""
    H, W = cfg.frame
    u = W / 2 + cfg.focal_px * centre[0] / centre[2]
    v = H / 2 + cfg.focal_px * centre[1] / centre[2]
    half = cfg.focal_px * cfg.span_cm / centre[2] / 2
    x0, x1 = (np.floor((u - half) / W * GRID), np.ceil((u + half) / W * GRID))
    y0, y1 = (np.floor((v - half) / H * GRID), np.ceil((v + half) / H * GRID))
    grid = np.zeros((GRID, GRID), np.uint8)
    grid[int(np.clip(y0, 0, GRID)):int(np.clip(y1, 0, GRID)),
         int(np.clip(x0, 0, GRID)):int(np.clip(x1, 0, GRID))] = 1
    return grid


def sample_pog(rng: np.random.Generator, cfg: PogConfig) -> dict[str, np.ndarray]:
    """One `synthetic_pog` sample: face, left_eye, right_eye (uint8 RGB), face_grid (uint8
    25x25) and the label (XCam, YCam) in cm (float32)."""
    (xa, xb), (ya, yb) = SCREENS[cfg.screens[int(rng.integers(len(cfg.screens)))]]
    xcam, ycam = rng.uniform(xa, xb), rng.uniform(ya, yb)
    target = np.array([-xcam, -ycam, 0.0])
    screen_centre = np.array([-(xa + xb) / 2, -(ya + yb) / 2, 0.0])
    eyes = np.array([rng.uniform(-cfg.head_x_cm, cfg.head_x_cm), rng.uniform(*cfg.head_y_cm),
                     rng.uniform(*cfg.distance_cm)])
    head, gaze = head_and_eye(rng, cfg, eyes, target, screen_centre)
    R_n = _toward(eyes / np.linalg.norm(eyes))        # the camera turned to look at the eyes
    head_n = vector_to_pitchyaw(R_n @ pitchyaw_to_vector(head))
    eye_n = vector_to_pitchyaw(_rot(*head_n).T @ (R_n @ gaze))
    app = appearance(rng)
    face = render_face(rng, cfg.face(), head_n, eye_n, app)
    n = cfg.eye_size
    tint = eye_tint(app["skin"])
    left, right = render_eye_pair(rng, head_n, eye_n, (n, n))
    noise = cfg.noise_sigma * rng.normal(0, 1, (2, n, n, 3))

    def rgb(gray: np.ndarray, k: int) -> np.ndarray:
        x = (gray / 255.0)[..., None] * tint + noise[k]
        return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)

    centre = eyes + _rot(*head) @ ANCHOR
    return {"face": face, "left_eye": rgb(left, 0), "right_eye": rgb(right, 1),
            "face_grid": face_grid(cfg, centre),
            "label": np.array([xcam, ycam], np.float32)}
