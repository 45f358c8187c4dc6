"""Image helpers for readers, numpy only: area resize and crops that repeat the edge.

Area resize (a box filter over the exact pixel overlaps, as separable matrices) is what a
downscale by a non-integer factor needs to avoid aliasing; upscaling degrades to nearest.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["area_resize", "crop_repeat_edge", "bgr_to_rgb"]


@lru_cache(maxsize=64)
def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights: output pixel i averages input [i*src/dst, (i+1)*src/dst)."""
    edges = np.arange(dst + 1) * (src / dst)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(src)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
    m = overlap / overlap.sum(axis=1, keepdims=True)
    m.setflags(write=False)
    return m.astype(np.float32)


def area_resize(img: np.ndarray, size: tuple[int, int], channels: bool) -> np.ndarray:
    """uint8 (..., H, W) (`channels` False) or (..., H, W, C) (`channels` True) ->
    (..., h, w[, C]) uint8, `size` = (h, w)."""
    h, w = size
    chan = channels
    H, W = (img.shape[-3], img.shape[-2]) if chan else (img.shape[-2], img.shape[-1])
    if (H, W) == (h, w):
        return img
    a, b = _area_matrix(H, h), _area_matrix(W, w)
    x = img.astype(np.float32)
    if chan:
        out = np.einsum("ih,...hwc,jw->...ijc", a, x, b, optimize=True)
    else:
        out = np.einsum("ih,...hw,jw->...ij", a, x, b, optimize=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def crop_repeat_edge(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """img[y:y+h, x:x+w] where parts outside the image repeat its nearest edge pixel (as
    GazeCapture's own cropping code does). w, h >= 1."""
    rows = np.clip(np.arange(y, y + h), 0, img.shape[0] - 1)
    cols = np.clip(np.arange(x, x + w), 0, img.shape[1] - 1)
    return img[rows[:, None], cols[None, :]]


def bgr_to_rgb(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[..., ::-1])
