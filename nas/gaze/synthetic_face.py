"""Seeded renderer of RGB face crops whose gaze can be read from the face: the embedded
data of gaze3d on faces (`synthetic_face`) and the face input of `synthetic_pog`.

Why: the face task needs data that every install has, reproducible bit for bit, in which
the label is really in the pixels (so a searched front must beat the mean-gaze error).

A normalized face crop (as ETH-XGaze / MPIIFaceGaze normalize: the camera looks at the
face centre from a fixed distance, so head pose is a rotation of the face content) is ray
cast orthographically: a head ellipsoid with a nose, shaded by a random light, with hair,
brows and lips placed in the head frame, so the layout and shading follow the head pose.
Both eyes are painted in by the eye-patch renderer (`nas.gaze.synthetic.render_sample`)
with the same eye-in-head gaze and head pose, at the face's scale, the subject's right eye
as the mirror image of a left eye rendered with mirrored pose: one subject, two eyes.

Label: gaze (pitch, yaw) = R(head) R(eye) (0, 0, -1) in the normalized camera, as DESIGN.md
defines it; head pose (pitch, yaw) is returned too. Coordinates in cm; head frame x right,
y down, z away from the camera, origin at the eyes' midpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from nas.gaze.geometry import vector_to_pitchyaw
from nas.gaze.synthetic import RenderConfig, _rot, render_sample

FACE_RENDERER_VERSION = "1"
EYE_X, EYE_Z = 3.2, 1.0            # eyeball centres at (+-EYE_X, 0, EYE_Z)
ANCHOR = np.array([0.0, 1.6, 0.0])  # the crop's centre (between the eyes and the nose tip)
HEAD_C, HEAD_R = np.array([0.0, 2.2, 7.0]), np.array([7.2, 10.0, 7.6])
NOSE_C, NOSE_R = np.array([0.0, 2.6, -0.3]), np.array([1.0, 2.3, 1.5])
EYE_WIDTH_CM = 2.9                  # the eye renderer's nominal eye width


@dataclass(frozen=True)
class FaceConfig:
    """Everything that changes the rendered bytes (hashed into cache names)."""

    size: int = 64                 # crop side, px
    span_cm: float = 13.0          # face width the crop spans
    head_pitch_deg: float = 20.0   # head pose range (uniform), when the renderer draws it
    head_yaw_deg: float = 30.0
    gaze_range_deg: float = 25.0   # eye-in-head gaze range (uniform), pitch and yaw
    noise_sigma: float = 0.015     # sensor noise std (on [0, 1] intensities)

    def fingerprint(self) -> str:
        blob = json.dumps({"v": FACE_RENDERER_VERSION, **dataclasses.asdict(self)},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=16)
def eye_config(h: int, w: int) -> RenderConfig:
    """The eye renderer, clean (no glasses, occluders, JPEG, jitter): the face adds its own
    noise; landmark jitter would only blur where the eye sits in the face."""
    return RenderConfig(size=(h, w), p_glasses=0.0, p_occluder=0.0, p_eyebrow=0.0,
                        p_jpeg=0.0, jitter_px=0.0, jitter_rot_deg=0.0, jitter_scale=0.0,
                        blur_sigma_max=0.3, noise_sigma_max=0.002, gamma_range=(0.9, 1.1),
                        histeq=False)


def gaze_of(head: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Gaze (pitch, yaw) of an eye-in-head gaze under a head pose."""
    return vector_to_pitchyaw(_rot(*head) @ _rot(*eye) @ [0.0, 0.0, -1.0])


def render_eye_pair(rng: np.random.Generator, head, eye, shape: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) gray eye patches of one subject (uint8 HxW): the subject's left eye
    (image right) as rendered, the right eye mirrored from a mirrored pose."""
    seed = rng.integers(2**63)
    cfg = eye_config(*shape)
    left = render_sample(np.random.default_rng(seed), cfg, eye_gaze=tuple(eye),
                         head=tuple(head))[0]
    right = render_sample(np.random.default_rng(seed), cfg, eye_gaze=(eye[0], -eye[1]),
                          head=(head[0], -head[1]))[0][:, ::-1]
    return left, right


def eye_tint(skin: np.ndarray) -> np.ndarray:
    """RGB factors for a gray eye patch: skin-coloured, the white of the eye kept light."""
    return 0.5 + 0.5 * skin / skin.mean()


def _hit(o: np.ndarray, d: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit of rays o + t d with an ellipsoid (inf: none)."""
    od, dd = (o - c) / r, d / r
    a = dd @ dd
    b = 2 * od @ dd
    cc = (od * od).sum(1) - 1
    disc = b * b - 4 * a * cc
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where(disc > 0, t, np.inf)


def appearance(rng: np.random.Generator) -> dict:
    """Per-subject colours and lighting (fixed draw order: keeps bytes stable)."""
    u = rng.uniform
    skin = np.array([u(0.45, 0.95), 0.0, 0.0])
    skin[1] = skin[0] * u(0.62, 0.85)
    skin[2] = skin[1] * u(0.7, 0.95)
    return dict(skin=skin, hair=u(0.02, 0.45) * np.array([1.0, u(0.6, 0.9), u(0.4, 0.8)]),
                hairline=u(-5.5, -3.5), lips=skin * np.array([u(0.75, 0.95), 0.55, 0.6]),
                brow=u(0.3, 0.7), bg=u(0.1, 0.9, 3), bg_grad=u(-0.3, 0.3, 2),
                light=np.array([u(-0.7, 0.7), u(-0.6, 0.4), -1.0]), ambient=u(0.25, 0.5),
                exposure=u(0.8, 1.15), gamma=u(0.8, 1.25))


def render_face(rng: np.random.Generator, cfg: FaceConfig, head, eye,
                app: dict | None = None) -> np.ndarray:
    """One face crop (uint8 size x size x 3) with head pose `head` and eye-in-head gaze
    `eye` ((pitch, yaw) radians each); `app`: the subject's looks (default: drawn)."""
    n, s = cfg.size, cfg.size / cfg.span_cm
    app = appearance(rng) if app is None else app
    R = _rot(*head)
    a_c = R @ ANCHOR
    px = (np.arange(n) + 0.5 - n / 2) / s
    X, Y = np.meshgrid(a_c[0] + px, a_c[1] + px)
    o = np.stack([X.ravel(), Y.ravel(), np.zeros(n * n)], 1) @ R  # R^T applied to rows
    d = R.T @ np.array([0.0, 0.0, 1.0])
    t_head, t_nose = _hit(o, d, HEAD_C, HEAD_R), _hit(o, d, NOSE_C, NOSE_R)
    nose = t_nose < t_head
    t = np.minimum(t_head, t_nose)
    hit = np.isfinite(t)
    q = o + np.where(hit, t, 0)[:, None] * d                     # head-frame hit points
    c, r = np.where(nose[:, None], NOSE_C, HEAD_C), np.where(nose[:, None], NOSE_R, HEAD_R)
    normal = ((q - c) / r**2) @ R.T                              # to camera coordinates
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    light = app["light"] / np.linalg.norm(app["light"])
    shade = app["ambient"] + (1 - app["ambient"]) * np.clip(normal @ light, 0, 1)
    albedo = np.tile(app["skin"], (n * n, 1))
    qx, qy = q[:, 0], q[:, 1]
    albedo[(qy < app["hairline"]) & ~nose] = app["hair"]
    brow = ((np.abs(qx) - EYE_X) / 1.3) ** 2 + ((qy + 1.7) / 0.35) ** 2 < 1
    albedo[brow & ~nose] *= app["brow"]
    lips = (qx / 2.0) ** 2 + ((qy - 6.3) / 0.5) ** 2 < 1
    albedo[lips] = app["lips"]
    img = albedo * shade[:, None]
    u, v = (np.arange(n) + 0.5) / n - 0.5, (np.arange(n) + 0.5) / n - 0.5
    bg = app["bg"] * (1 + app["bg_grad"][0] * u[None, :, None]
                      + app["bg_grad"][1] * v[:, None, None])
    img = np.where(hit[:, None], img, bg.reshape(-1, 3)).reshape(n, n, 3)
    img = _paint_eyes(img, rng, head, eye, R, a_c, s, app["skin"])
    img = np.clip(img * app["exposure"], 0, 1) ** app["gamma"]
    img = img + cfg.noise_sigma * rng.normal(0, 1, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _paint_eyes(img: np.ndarray, rng: np.random.Generator, head, eye, R: np.ndarray,
                a_c: np.ndarray, s: float, skin: np.ndarray) -> np.ndarray:
    """Blend both rendered eye patches in at their projected eyeball centres."""
    n = img.shape[0]
    w = max(6, int(round(EYE_WIDTH_CM * s * 1.5)))  # the eye spans 2/3 of a patch
    h = max(4, int(round(0.6 * w)))
    left, right = render_eye_pair(rng, head, eye, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    rad = np.sqrt(((xx + 0.5 - w / 2) / (0.42 * w)) ** 2 + ((yy + 0.5 - h / 2) / (0.36 * h)) ** 2)
    alpha = np.clip((1 - rad) * 3, 0, 1)[..., None]
    tint = eye_tint(skin)
    for patch, sign in ((left, 1.0), (right, -1.0)):
        centre = R @ np.array([sign * EYE_X, 0.0, EYE_Z]) - a_c
        cx, cy = n / 2 + s * centre[0], n / 2 + s * centre[1]
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        xs, ys = slice(max(x0, 0), min(x0 + w, n)), slice(max(y0, 0), min(y0 + h, n))
        if xs.start >= xs.stop or ys.start >= ys.stop:
            continue
        px = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        rgb = (patch[px] / 255.0)[..., None] * tint
        a = alpha[px]
        img[ys, xs] = img[ys, xs] * (1 - a) + rgb * a
    return img


def sample_face(rng: np.random.Generator, cfg: FaceConfig) -> dict[str, np.ndarray]:
    """One `synthetic_face` sample: a random head pose and eye-in-head gaze, the face crop,
    its gaze label and head pose (float32 radians)."""
    hp, hy, g = np.radians([cfg.head_pitch_deg, cfg.head_yaw_deg, cfg.gaze_range_deg])
    head = rng.uniform([-hp, -hy], [hp, hy])
    eye = rng.uniform(-g, g, 2)
    image = render_face(rng, cfg, head, eye)
    return {"images": image, "gaze": gaze_of(head, eye).astype(np.float32),
            "head": head.astype(np.float32)}
