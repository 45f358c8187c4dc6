"""Seeded renderer of MPIIGaze-style normalized grey eye patches.

Why: NAS needs a gaze data set that is cheap, reproducible bit for bit, and
hard in the ways real normalized eye patches are hard (lids, landmark jitter,
glasses, blur, JPEG, ...), so that capacity actually buys accuracy.

Geometry (mm, normalized camera space: x right, y down, z forward): a 12 mm
eyeball sits at (0, 0, D) in front of a pinhole camera. Its optical axis is
the gaze label g = R_head @ R_eye @ (0, 0, -1); the iris is a planar disc of
radius 5.9 mm whose rim (the limbus) lies on the eyeball, so it projects to
an ellipse. Pixels inside the lid opening are ray cast against the eyeball
and the iris plane at `supersample` x resolution; smooth skin shading and all
camera nuisances work at output resolution. Lids and eye corners are 3D
curves in the head frame, so head pose changes the eye *shape*.

Pixel coordinates in `info` are continuous (x = column, y = row) with pixel
(r, c) covering [c, c+1) x [r, r+1), i.e. its centre at (c + 0.5, r + 0.5).

Label distribution (`RenderConfig.labels`, see `LABEL_PRESETS`): `uniform` draws
eye-in-head gaze and head pose uniformly (the default, unchanged since v2);
`mpiigaze` derives them from a laptop whose webcam sits above the screen the
person looks at, so gaze is mostly downward as in MPIIGaze.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from nas.gaze.geometry import vector_to_pitchyaw
from nas.gaze.render_cache import load_or_render as cached_render, render_many

RENDERER_VERSION = "2"
EYEBALL_R = 12.0  # mm
LIMBUS_R = 5.9  # mm
CORNEA_R = 7.8  # mm; centre placed so the cornea meets the eyeball at the limbus
NOMINAL_EYE_WIDTH = 29.0  # mm, corner to corner
IRIS_DEPTH = float(np.sqrt(EYEBALL_R**2 - LIMBUS_R**2))  # centre -> iris plane
CORNEA_OFFSET = IRIS_DEPTH - float(np.sqrt(CORNEA_R**2 - LIMBUS_R**2))


@dataclass(frozen=True)
class ScreenSetup:
    """A webcam at the top centre of a screen the person looks at (cm, camera space).

    Why: MPIIGaze was recorded on laptops whose camera sits above the screen,
    so its normalized gaze points mostly down. Drawing the gaze target on the
    screen and the eye in front of it reproduces that label distribution from
    geometry instead of from fitted numbers.
    """

    screen_cm: tuple[float, float] = (31.0, 17.5)  # (width, height): a 14" 16:9 panel
    top_cm: float = 1.0  # camera to the top edge of the picture
    distance_cm: tuple[float, float] = (45.0, 70.0)  # eye to camera, uniform
    eye_offset_cm: tuple[float, float] = (4.0, 4.0)  # eye off the camera axis (x, y), std
    head_follow: float = 0.3  # the head turns this fraction of the way to the target
    head_jitter_deg: tuple[float, float] = (5.0, 7.0)  # head (pitch, yaw) about that aim, std


# Label distributions by name. The MPIIGaze figures: Zhang et al., "MPIIGaze: Real-World
# Dataset and Deep Appearance-Based Gaze Estimation", TPAMI 2017 (arXiv 1711.09017), give
# the normalized gaze range as pitch -1.5..20 deg with downward positive (-20..1.5 here,
# where y points down and pitch = asin(-y)) and yaw -18..18 deg, as quoted in
# hysts/pytorch_mpiigaze issue #43, whose author measured the evaluation subset in this
# convention at pitch -22.8..4.8 and yaw -41.5..38.7 (extremes, not the bulk). The papers
# give no mean or std; a uniform fill of the published range has pitch mean -9.25, std
# 6.2 and yaw 0, 10.4. ScreenSetup() gives pitch mean -9.7, std 5.0, yaw 0.0, 8.9, all
# pitches below 0 and 98.6% of labels inside the published range (4000 draws; uniform:
# 16%); its head pose, which the papers show only as a plot, is pitch -9.8 +- 5.2, yaw
# 0 +- 7.4 deg. tests/test_synthetic_labels.py checks these within tolerances.
LABEL_PRESETS: dict[str, ScreenSetup | None] = {"uniform": None, "mpiigaze": ScreenSetup()}


@dataclass(frozen=True)
class RenderConfig:
    """Everything that changes the rendered bytes (hashed into cache names)."""

    size: tuple[int, int] = (36, 60)  # (H, W)
    supersample: int = 4
    gaze_range_deg: float = 30.0  # eye-in-head, pitch and yaw
    head_pitch_deg: float = 20.0
    head_yaw_deg: float = 40.0
    max_label_pitch_deg: float = 40.0  # labels beyond this are re-drawn
    max_label_yaw_deg: float = 55.0
    eye_distance_mm: float = 600.0
    eye_width_frac: float = 2.0 / 3.0  # nominal eye width / patch width
    p_glasses: float = 0.2
    p_occluder: float = 0.15
    p_eyebrow: float = 0.5
    p_jpeg: float = 0.85
    jitter_px: float = 1.5  # patch-centre shift (landmark error), std
    jitter_rot_deg: float = 4.0  # in-plane rotation, std
    jitter_scale: float = 0.05  # relative scale, std
    blur_sigma_max: float = 1.2
    noise_sigma_max: float = 0.02  # read noise std (log-uniform from 0.002)
    gamma_range: tuple[float, float] = (0.6, 1.6)
    jpeg_quality: tuple[int, int] = (30, 95)
    histeq: bool = True
    labels: str = "uniform"  # label distribution: a LABEL_PRESETS name

    def __post_init__(self) -> None:
        if self.labels not in LABEL_PRESETS:
            raise ValueError(f"labels: expected one of {', '.join(LABEL_PRESETS)}, "
                             f"got {self.labels!r}")

    def fingerprint(self) -> str:
        """Stable short hash of all fields and the renderer version.

        The default label preset is left out of the hash, so caches rendered
        before presets existed keep their names; another preset enters with
        its parameters, so editing them never reuses a stale cache.
        """
        fields = dataclasses.asdict(self)
        setup = LABEL_PRESETS[fields.pop("labels")]
        if setup is not None:
            fields["labels"] = {"name": self.labels, **dataclasses.asdict(setup)}
        blob = json.dumps({"v": RENDERER_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------- poses


def _rot(p: float, y: float) -> np.ndarray:
    """Rotation that takes the toward-camera axis (0,0,-1) to gaze (p, y)."""
    cp, sp, cy, sy = np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    return ry @ rx


def _sample_pose(rng: np.random.Generator, cfg: RenderConfig, eye_gaze, head):
    """Draw eye-in-head gaze and head pose; re-draw implausible combinations.

    Labels are kept in range by rejection, not clipping, so the image always
    agrees with its label. With an override there is no rejection, so the
    draws that follow (subject, nuisances) do not depend on the override.
    """
    setup = LABEL_PRESETS[cfg.labels]
    if setup is not None:
        return _screen_pose(rng, setup, eye_gaze, head)
    g, hp, hy = np.radians([cfg.gaze_range_deg, cfg.head_pitch_deg, cfg.head_yaw_deg])
    lim = np.radians([cfg.max_label_pitch_deg, cfg.max_label_yaw_deg])
    h = rng.uniform([-hp, -hy], [hp, hy])
    e = rng.uniform(-g, g, 2)
    if eye_gaze is not None or head is not None:
        e = e if eye_gaze is None else np.asarray(eye_gaze, float)
        h = h if head is None else np.asarray(head, float)
        tries = 0
    else:
        tries = 32
    for _ in range(tries + 1):
        r_gaze = _rot(*h) @ _rot(*e)
        label = vector_to_pitchyaw(r_gaze @ [0.0, 0.0, -1.0])
        if tries == 0 or np.all(np.abs(label) <= lim):
            return e, h, label, r_gaze
        e = rng.uniform(-g, g, 2)
    e = np.zeros(2)  # fall back to looking along the head direction
    r_gaze = _rot(*h)
    return e, h, vector_to_pitchyaw(r_gaze @ [0.0, 0.0, -1.0]), r_gaze


def _clipped_normal(rng: np.random.Generator, n: int) -> np.ndarray:
    """n standard normal draws clipped at 2.5 sigma: bounded, and a fixed draw count."""
    return np.clip(rng.normal(0.0, 1.0, n), -2.5, 2.5)


def _normalizing(eye: np.ndarray) -> np.ndarray:
    """Rotation (no roll) of camera space into the normalized camera that looks at `eye`."""
    z = eye / np.linalg.norm(eye)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def _screen_pose(rng: np.random.Generator, s: ScreenSetup, eye_gaze, head):
    """Pose of a person looking at a point of the screen below the camera.

    The target is uniform on the screen (plane z = 0, camera at the origin),
    the eye somewhere in front of it; the head aims part of the way from the
    screen centre to the target, with jitter. Gaze and head are expressed in
    the normalized camera that looks at the eye, as MPIIGaze's labels are.
    Every draw is bounded, so there is no rejection and overrides keep the
    draw count (the subject and nuisances that follow stay the same).
    """
    width, height = s.screen_cm
    centre = np.array([0.0, s.top_cm + height / 2, 0.0])
    target = centre + np.array([width, height, 0.0]) * np.append(rng.uniform(-0.5, 0.5, 2), 0)
    eye = np.append(np.asarray(s.eye_offset_cm) * _clipped_normal(rng, 2),
                    rng.uniform(*s.distance_cm))
    aim = centre + s.head_follow * (target - centre)
    jitter = np.radians(s.head_jitter_deg) * _clipped_normal(rng, 2)
    r_n = _normalizing(eye)
    gaze = r_n @ (target - eye)
    h = vector_to_pitchyaw(r_n @ (aim - eye)) + jitter
    e = vector_to_pitchyaw(_rot(*h).T @ gaze)
    e = e if eye_gaze is None else np.asarray(eye_gaze, float)
    h = h if head is None else np.asarray(head, float)
    r_gaze = _rot(*h) @ _rot(*e)
    return e, h, vector_to_pitchyaw(r_gaze @ [0.0, 0.0, -1.0]), r_gaze


def sample_labels(n: int, seed: int, cfg: RenderConfig = RenderConfig()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Gaze and head labels (n, 2) of `render_dataset(n, seed, cfg)` without rendering:
    the pose is the first draw of each sample's stream, so they are the same labels."""
    gaze, head = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
    for k in range(n):
        _, h, label, _ = _sample_pose(np.random.default_rng([seed, k]), cfg, None, None)
        gaze[k], head[k] = label, h
    return gaze, head


def _sample_subject(rng: np.random.Generator) -> dict:
    """Per-sample anatomy and appearance (fixed draw order: keeps bytes stable)."""
    u = rng.uniform
    return dict(
        width=u(26.0, 32.0), tilt=u(-0.5, 2.0), off=u(-1.0, 1.0, 2),
        h_up=u(3.8, 6.5), h_lo=u(3.0, 5.0), skew=u(0.75, 1.3, 2),
        corner_z=u(3.0, 6.0, 2), skin=u(0.35, 0.8), tex=rng.normal(0, 1, (4, 6)),
        sclera=u(0.65, 0.95), iris=u(0.12, 0.5), pupil=u(0.02, 0.07),
        pupil_r=u(1.5, 3.5), streak_f=rng.integers(6, 40, 3), streak_a=u(0, 0.15, 3),
        streak_ph=u(0, 2 * np.pi, 3), collar=u(0.35, 0.6), limbal=u(0.2, 0.7),
        light=np.array([u(-0.5, 0.5), u(-0.5, 0.4), -1.0]), ambient=u(0.25, 0.5),
        glint=u(0.7, 1.0), glint_s=u(0.3, 0.6), lid_shadow=u(0.15, 0.6),
        lid_shadow_w=u(0.6, 2.0), lash_w=u(0.4, 1.5), lash=u(0.05, 0.45),
        crease_off=u(2.5, 6.0), crease_a=u(0.05, 0.35), crease_w=u(0.7, 2.0),
        under_a=u(0.0, 0.2), under_off=u(2.0, 5.0), socket=u(0.0, 0.25),
        brow=rng.random(), brow_off=u(12.0, 19.0), brow_w=u(2.0, 4.5), brow_a=u(0.2, 0.6),
        brow_arch=u(0.5, 4.0),
    )


def _sample_nuisance(rng: np.random.Generator, cfg: RenderConfig) -> dict:
    """Camera / scene nuisances; always drawn so `clean` shares the eye itself."""
    u = rng.uniform
    return dict(
        shift=cfg.jitter_px * np.clip(rng.normal(0, 1, 2), -2.5, 2.5),
        rot=np.radians(cfg.jitter_rot_deg * np.clip(rng.normal(), -2.5, 2.5)),
        scale=float(np.exp(cfg.jitter_scale * np.clip(rng.normal(), -2.5, 2.5))),
        glasses=rng.random() < cfg.p_glasses, occluder=rng.random() < cfg.p_occluder,
        grad=u(-0.5, 0.5, 2), side=u(0, 0.4), side_at=u(-0.7, 0.7, 2),
        exposure=u(0.7, 1.1), gamma=u(*cfg.gamma_range),
        blur=u(0, cfg.blur_sigma_max),
        noise=float(np.exp(u(np.log(0.002), np.log(max(cfg.noise_sigma_max, 0.002))))),
        shot=u(0, 0.02), jpeg=rng.random() < cfg.p_jpeg,
        quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)),
    )


# ------------------------------------------------------------- projection


class _Camera:
    """Pinhole camera plus the similarity warp that models landmark jitter."""

    def __init__(self, cfg: RenderConfig, nz: dict | None):
        h, w = cfg.size
        self.f = cfg.eye_width_frac * w * cfg.eye_distance_mm / NOMINAL_EYE_WIDTH
        self.c = np.array([w / 2.0, h / 2.0])
        shift, rot, scale = (nz["shift"], nz["rot"], nz["scale"]) if nz else (0, 0.0, 1.0)
        self.t = self.c + shift  # where the eyeball centre lands
        cr, sr = np.cos(rot), np.sin(rot)
        self.m = scale / self.f * np.array([[cr, -sr], [sr, cr]])  # px -> image plane
        self.m_inv = np.linalg.inv(self.m)

    def project(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) camera-space points -> (N, 2) output pixel coordinates."""
        q = pts[:, :2] / pts[:, 2:3]
        return self.t + q @ self.m_inv.T

    def rays(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates -> image-plane ray slopes (x/z, y/z)."""
        du, dv = u - self.t[0], v - self.t[1]
        return self.m[0, 0] * du + self.m[0, 1] * dv, self.m[1, 0] * du + self.m[1, 1] * dv


def _lid_curves(s: dict, e_pitch: float, r_head: np.ndarray, centre, cam: _Camera):
    """Upper/lower lid polylines (pixels), medial -> lateral, from 3D head-frame curves.

    The opening follows eye-in-head pitch (looking down drops the upper lid and
    a little of the lower one); corners sit a few mm in front of the eyeball
    centre, so head pitch shifts them and head yaw foreshortens the eye.
    """
    sin_p = np.sin(e_pitch)
    h_up = max(s["h_up"] + 0.7 * EYEBALL_R * sin_p, 0.3)
    h_lo = max(s["h_lo"] - 0.35 * EYEBALL_R * sin_p, 1.0)
    half = s["width"] / 2
    t = np.linspace(0.0, 1.0, 48)
    x = s["off"][0] - half + t * s["width"]
    base = s["off"][1] + 0.4 - t * (0.4 + s["tilt"])
    curves = []
    for sign, height, k, power in ((-1, h_up, s["skew"][0], 0.85), (1, h_lo, s["skew"][1], 1.1)):
        ts = t**k
        y = base + sign * height * (4 * ts * (1 - ts)) ** power
        xn = np.clip((x - s["off"][0]) / half, -1, 1)
        zc = s["corner_z"][0] + t * (s["corner_z"][1] - s["corner_z"][0])
        front = np.sqrt(np.maximum((EYEBALL_R + 0.8) ** 2 - y**2, 1.0))
        z = -(zc + (front - zc) * (1 - xn**2))
        pts = centre + np.stack([x, y, z], 1) @ r_head.T
        px = cam.project(pts)
        px[:, 0] = np.maximum.accumulate(px[:, 0])  # fold (self-occlusion) -> monotone
        curves.append(px)
    return curves


# -------------------------------------------------------------- rendering


@lru_cache(maxsize=8)
def _upsample_mats(h: int, w: int, gh: int, gw: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation matrices for a (gh, gw) grid -> (h, w) image."""

    def mat(n, g):
        pos = (np.arange(n) + 0.5) / n * (g - 1)
        lo = np.minimum(pos.astype(int), g - 2)
        frac = pos - lo
        m = np.zeros((n, g))
        m[np.arange(n), lo] = 1 - frac
        m[np.arange(n), lo + 1] = frac
        return m

    return mat(h, gh), mat(w, gw)


def _taper(u: np.ndarray, u0: float, u1: float) -> tuple[np.ndarray, np.ndarray]:
    """Position along the eye (0 medial .. 1 lateral) and a fade-out at the corners."""
    t = (u - u0) / max(u1 - u0, 1e-6)
    return t, np.clip((1 - np.abs(2 * t - 1)) * 4, 0, 1)


def _render_skin(s: dict, cfg: RenderConfig, up: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Smooth skin at output resolution: tone, texture, crease, socket, lower lid, brow."""
    h, w = cfg.size
    u, v = np.arange(w) + 0.5, (np.arange(h) + 0.5)[:, None]
    ky, kx = _upsample_mats(h, w, *s["tex"].shape)
    img = s["skin"] * (1 + 0.06 * (ky @ s["tex"] @ kx.T))
    yu, yl = np.interp(u, up[:, 0], up[:, 1]), np.interp(u, lo[:, 0], lo[:, 1])
    _, env = _taper(u, up[0, 0], up[-1, 0])
    d_up, d_lo = yu - v, v - yl  # > 0 above the upper / below the lower lid
    img *= 1 - s["crease_a"] * env * np.exp(-(((d_up - s["crease_off"]) / s["crease_w"]) ** 2))
    side = np.maximum(np.maximum(up[0, 0] - u, u - up[-1, 0]), 0)  # beyond the corners
    img *= 1 - s["socket"] * np.exp(-np.maximum(d_up, 0) / 6 - np.maximum(d_lo, 0) / 4 - side / 4)
    img *= 1 + 0.1 * env * np.exp(-((d_lo / 0.7) ** 2))
    img *= 1 - s["under_a"] * env * np.exp(-(((d_lo - s["under_off"]) / 1.5) ** 2))
    if s["brow"] < cfg.p_eyebrow:
        t, _ = _taper(u, up[0, 0], up[-1, 0])
        base = up[0, 1] + t * (up[-1, 1] - up[0, 1]) - s["brow_arch"] * (1 - (2 * t - 1) ** 2)
        band = np.exp(-(((base - v - s["brow_off"]) / s["brow_w"]) ** 2))
        img *= 1 - s["brow_a"] * band * (1 + 0.3 * (ky @ s["tex"][::-1] @ kx.T))
    return img


def _render_eye(s: dict, cam: _Camera, r_gaze: np.ndarray, centre, u, v, yu, t_lid):
    """Ray cast sclera / iris / pupil for the given supersampled pixels."""
    qx, qy = cam.rays(u, v)
    d_z = centre[2]
    d2 = qx * qx + qy * qy + 1
    disc = d_z * d_z - d2 * (d_z * d_z - EYEBALL_R**2)
    hit = disc > 0
    tt = (d_z - np.sqrt(np.maximum(disc, 0))) / d2
    nx, ny, nz = tt * qx / EYEBALL_R, tt * qy / EYEBALL_R, (tt - d_z) / EYEBALL_R
    light = s["light"] / np.linalg.norm(s["light"])
    amb = s["ambient"]
    # wrap lighting: the sclera is translucent, so no hard terminator at the rim
    lam = np.clip((nx * light[0] + ny * light[1] + nz * light[2] + 0.6) / 1.6, 0, 1)
    corner = 1 - 0.3 * np.abs(2 * t_lid - 1) ** 3
    lam = np.where(hit, lam, 0.3)  # canthus (caruncle) beyond the globe
    val = s["sclera"] * (amb + (1 - amb) * lam) * corner

    axis = r_gaze[:, 2] * -1.0
    e1, e2 = r_gaze[:, 0], r_gaze[:, 1]
    q0 = np.asarray(centre) + IRIS_DEPTH * axis
    denom = qx * axis[0] + qy * axis[1] + axis[2]
    ti = (q0 @ axis) / np.where(denom < -1e-6, denom, -1e-6)
    lx = ti * qx - q0[0]
    ly = ti * qy - q0[1]
    lz = ti - q0[2]
    a, b = lx * e1[0] + ly * e1[1] + lz * e1[2], lx * e2[0] + ly * e2[1] + lz * e2[2]
    rho = np.sqrt(a * a + b * b) / LIMBUS_R
    iris = hit & (denom < -1e-6) & (rho < 1)
    if iris.any():
        r, phi = rho[iris], np.arctan2(b[iris], a[iris])
        tex = 1.0 + 0.15 * np.exp(-(((r - s["collar"]) / 0.07) ** 2))
        for f, amp, ph in zip(s["streak_f"], s["streak_a"], s["streak_ph"]):
            tex += amp * np.sin(f * phi + ph + 3 * r)
        tex *= 1 - s["limbal"] * np.clip((r - 0.8) / 0.2, 0, 1) ** 2
        shade = amb + (1 - amb) * max(float(axis @ light), 0.0)
        iv = s["iris"] * tex * shade
        pupil = r < s["pupil_r"] / LIMBUS_R
        val[iris] = np.where(pupil, s["pupil"], iv)
    return val * (1 - s["lid_shadow"] * np.exp(-(v - yu) / s["lid_shadow_w"]))


def _glint(s: dict, cam: _Camera, r_gaze: np.ndarray, centre) -> np.ndarray | None:
    """Pixel position of the corneal reflection of the light, if on the cornea."""
    axis = -r_gaze[:, 2]
    cc = np.asarray(centre) + CORNEA_OFFSET * axis
    light = s["light"] / np.linalg.norm(s["light"])
    view = -cc / np.linalg.norm(cc)
    half = (light + view) / np.linalg.norm(light + view)
    if half @ axis < np.cos(np.radians(45)):
        return None
    return cam.project((cc + CORNEA_R * half)[None])[0]


def _compose(s, cfg, cam, r_gaze, centre, curves):
    """Supersampled lid mask + ray-cast eye, box-filtered onto the skin image."""
    h, w = cfg.size
    k = cfg.supersample
    up, lo = curves
    u = (np.arange(w * k) + 0.5) / k
    v = (np.arange(h * k) + 0.5) / k
    inside = (u >= up[0, 0]) & (u <= up[-1, 0])
    yu = np.where(inside, np.interp(u, up[:, 0], up[:, 1]), np.inf)
    yl = np.interp(u, lo[:, 0], lo[:, 1])
    opening = (v[:, None] > yu) & (v[:, None] < yl)
    t_lid, env = _taper(u, up[0, 0], up[-1, 0])
    lash_w = s["lash_w"] * env * (0.5 + 0.8 * t_lid)
    lash = (v[:, None] <= yu) & (v[:, None] > yu - lash_w)
    ii, jj = np.nonzero(opening)
    eye = _render_eye(s, cam, r_gaze, centre, u[jj], v[ii], yu[jj], t_lid[jj])
    g = _glint(s, cam, r_gaze, centre)
    if g is not None:
        d2 = (u[jj] - g[0]) ** 2 + (v[ii] - g[1]) ** 2
        eye = eye + (s["glint"] - eye) * np.exp(-d2 / (2 * s["glint_s"] ** 2))
    block = (ii // k) * w + jj // k
    eye_sum = np.bincount(block, weights=eye, minlength=h * w).reshape(h, w) / k**2
    cov_eye = opening.reshape(h, k, w, k).mean(axis=(1, 3))
    cov_lash = lash.reshape(h, k, w, k).mean(axis=(1, 3))
    skin = _render_skin(s, cfg, up, lo)
    return skin * (1 - cov_eye - cov_lash * (1 - s["lash"])) + eye_sum


# --------------------------------------------------------------- nuisances


def _bezier_dist(p0, p1, p2, xs, ys) -> np.ndarray:
    """Distance from pixels to a quadratic Bezier curve (sampled)."""
    t = np.linspace(0, 1, 40)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2
    d2 = (xs.ravel()[None] - pts[:, :1]) ** 2 + (ys.ravel()[None] - pts[:, 1:]) ** 2
    return np.sqrt(d2.min(axis=0)).reshape(xs.shape)


def _occlude(img: np.ndarray, rng: np.random.Generator, xs, ys) -> np.ndarray:
    """A dark blob at an edge (hand, hair mass) or a few hair strands."""
    h, w = img.shape
    if rng.random() < 0.4:
        side = rng.integers(4)
        cx = [rng.uniform(0, w), rng.uniform(0, w), -2.0, w + 2.0][side]
        cy = [-2.0, h + 2.0, rng.uniform(0, h), rng.uniform(0, h)][side]
        ax, ay = rng.uniform(6, 18, 2)
        r = np.sqrt(((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2)
        cov = np.clip((1 - r) * min(ax, ay) / 1.5, 0, 1)
        return img * (1 - cov) + cov * rng.uniform(0.0, 0.45)
    for _ in range(rng.integers(1, 5)):
        a, b, c = rng.uniform([-5, -5], [w + 5, h + 5], (3, 2))
        if rng.random() < 0.5:
            a[1], c[1] = -3, h + 3  # top to bottom, else any chord
        d = _bezier_dist(a, b, c, xs, ys)
        cov = np.clip(rng.uniform(0.3, 0.8) - d, 0, 1) * rng.uniform(0.6, 1.0)
        img = img * (1 - cov) + cov * rng.uniform(0.02, 0.3)
    return img


def _glasses(img: np.ndarray, rng: np.random.Generator, xs, ys) -> np.ndarray:
    """Elliptic frame rim crossing the patch, tinted lens and a reflection band."""
    h, w = img.shape
    cx, cy = w / 2 + rng.uniform(-8, 8), h / 2 + rng.uniform(-5, 5)
    ax, ay = rng.uniform(24, 40), rng.uniform(13, 24)
    dx, dy = xs - cx, ys - cy
    r = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2) + 1e-9
    grad = np.sqrt((dx / ax**2) ** 2 + (dy / ay**2) ** 2) / r + 1e-9
    dist = (r - 1) / grad
    lens = np.clip(0.5 - dist, 0, 1)
    phi, at, width = rng.uniform(0, np.pi), rng.uniform(-20, 20), rng.uniform(3, 12)
    band = np.exp(-(((dx * np.cos(phi) + dy * np.sin(phi) - at) / width) ** 2))
    tinted = img * rng.uniform(0.65, 1.0) + rng.uniform(0, 0.1) + rng.uniform(0.05, 0.4) * band
    img = img * (1 - lens) + tinted * lens
    rim = np.clip(rng.uniform(0.6, 2.5) / 2 + 0.5 - np.abs(dist), 0, 1)
    tone = rng.uniform(0.02, 0.25) if rng.random() < 0.7 else rng.uniform(0.7, 0.95)
    return img * (1 - rim) + tone * rim


def _blur_mat(n: int, sigma: float) -> np.ndarray:
    """Gaussian blur as an (n, n) matrix with reflected borders."""
    r = max(1, int(np.ceil(3 * sigma)))
    off = np.arange(-r, r + 1)
    wts = np.exp(-0.5 * (off / sigma) ** 2)
    wts /= wts.sum()
    idx = np.arange(n)[:, None] + off[None]
    idx = np.abs(idx)
    idx = np.where(idx >= n, 2 * n - 2 - idx, idx).clip(0, n - 1)
    m = np.zeros((n, n))
    np.add.at(m, (np.repeat(np.arange(n), off.size), idx.ravel()), np.tile(wts, n))
    return m


def histeq(img: np.ndarray) -> np.ndarray:
    """Histogram equalisation of a uint8 image (as MPIIGaze / cv2.equalizeHist)."""
    hist = np.bincount(img.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    lo = cdf[np.flatnonzero(hist)[0]]
    if cdf[-1] == lo:
        return img.copy()
    lut = np.clip(np.round((cdf - lo) * 255.0 / (cdf[-1] - lo)), 0, 255).astype(np.uint8)
    return lut[img]


def _camera_effects(img: np.ndarray, nz: dict, rng: np.random.Generator, cfg) -> np.ndarray:
    """Lighting, gamma, blur, sensor noise, JPEG, histeq -> uint8."""
    h, w = img.shape
    xs, ys = np.meshgrid((np.arange(w) + 0.5) / w - 0.5, (np.arange(h) + 0.5) / h - 0.5)
    sx, sy = nz["side_at"]
    illum = 1 + nz["grad"][0] * xs + nz["grad"][1] * ys
    illum = illum + nz["side"] * np.exp(-((xs - sx) ** 2 + (ys - sy) ** 2) / 0.15)
    img = img * illum * nz["exposure"]
    img = np.where(img > 0.8, 0.8 + 0.2 * np.tanh((img - 0.8) / 0.2), img)  # soft knee
    img = np.clip(img, 0, 1) ** nz["gamma"]
    if nz["blur"] > 0.15:
        img = _blur_mat(h, nz["blur"]) @ img @ _blur_mat(w, nz["blur"]).T
    noise = rng.normal(0, 1, (2, h, w))
    img = img + nz["noise"] * noise[0] + nz["shot"] * np.sqrt(np.clip(img, 0, 1)) * noise[1]
    out = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    if nz["jpeg"]:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=nz["quality"])
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    return histeq(out) if cfg.histeq else out


# ------------------------------------------------------------------ public


def render_sample(
    rng: np.random.Generator,
    cfg: RenderConfig = RenderConfig(),
    clean: bool = False,
    *,
    eye_gaze: tuple[float, float] | None = None,
    head: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Render one eye patch -> (uint8 HxW image, gaze (2,), head (2,), info).

    `clean=True` renders the same eye with no jitter, glasses, occluders,
    lighting gradient, gamma, blur, noise, JPEG or histeq (raw intensities),
    so tests can check geometry on pixels. `eye_gaze` / `head` (pitch, yaw
    rad) override the pose; with any override the same rng state gives the
    same subject whatever the override values (no label-range rejection).
    """
    e, h_py, label, r_gaze = _sample_pose(rng, cfg, eye_gaze, head)
    s = _sample_subject(rng)
    nz = _sample_nuisance(rng, cfg)
    cam = _Camera(cfg, None if clean else nz)
    centre = np.array([0.0, 0.0, cfg.eye_distance_mm])
    r_head = _rot(*h_py)
    curves = _lid_curves(s, e[0], r_head, centre, cam)
    img = _compose(s, cfg, cam, r_gaze, centre, curves)

    axis = -r_gaze[:, 2]
    q0 = centre + IRIS_DEPTH * axis
    ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)[:, None]
    rim = cam.project(q0 + LIMBUS_R * (np.cos(ang) * r_gaze[:, 0] + np.sin(ang) * r_gaze[:, 1]))
    info = dict(
        iris_center_px=cam.project(q0[None])[0],
        limbus_extent_px=rim.max(0) - rim.min(0),
        eye_corners_px=np.stack([curves[0][0], curves[0][-1]]),
        eye_gaze=e.astype(np.float32),
        glasses=bool(nz["glasses"] and not clean),
        occluder=bool(nz["occluder"] and not clean),
    )
    if clean:
        out = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    else:
        h, w = cfg.size
        xs, ys = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        if nz["occluder"]:
            img = _occlude(img, rng, xs, ys)
        if nz["glasses"]:
            img = _glasses(img, rng, xs, ys)
        out = _camera_effects(img, nz, rng, cfg)
    return out, label.astype(np.float32), np.asarray(h_py, np.float32), info


def _render_one(rng: np.random.Generator, cfg: RenderConfig) -> dict[str, np.ndarray]:
    """One sample as the cache stores it (module level: worker processes pickle it)."""
    image, gaze, head, _ = render_sample(rng, cfg)
    return {"images": np.asarray(image, np.uint8), "gaze": np.asarray(gaze, np.float32),
            "head": np.asarray(head, np.float32)}


def render_dataset(
    n: int,
    seed: int,
    cfg: RenderConfig = RenderConfig(),
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Render n samples; sample i depends only on (seed, i), whatever `workers`."""
    return render_many(_render_one, cfg, n, seed, workers, progress)


def load_or_render(
    cache_dir: str | Path,
    n: int,
    seed: int,
    cfg: RenderConfig = RenderConfig(),
    workers: int = 1,
    log: Callable[[str], None] | None = print,
) -> dict[str, np.ndarray]:
    """Load the data set from the npz cache (`synth_<fingerprint>_<seed>_<n>.npz`), or
    render it and cache it atomically."""
    return cached_render(cache_dir, "synth", cfg.fingerprint(), _render_one, cfg, n, seed,
                         workers=workers, log=log, name="synthetic")
