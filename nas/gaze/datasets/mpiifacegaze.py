"""MPIIFaceGaze, normalized release: one MATLAB v7.3 (HDF5) file per person, `pXX.mat`,
with `Data/data` (face images) and `Data/label` (per sample: gaze pitch, yaw; head pose
pitch, yaw; then 12 landmark coordinates).

MATLAB writes arrays to HDF5 with their dimensions reversed: the release's W x H x C x N
BGR images (Caffe's layout) arrive through h5py as (N, C, H, W), and its 16 x N labels as
(N, 16). We accept (N, C, H, W) and (N, H, W, C) images, uint8 or float (float in [0, 1]
is scaled by 255, decided per file from its first image), and labels as (N, >=4) or
(>=4, N); images are converted to (N, H, W, 3) uint8 RGB and area-resized to `size`.
Gaze and head pose are taken as stored, (pitch, yaw) in radians: the normalized release
uses asin(-y), atan2(-x, -z) like MPIIGaze and ETH-XGaze.

Only labels are read at open time; images are read per index from a few open files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError
from nas.gaze.datasets.bad import BadSampleError
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.deps import need
from nas.gaze.datasets.fingerprint import fingerprint
from nas.gaze.datasets.h5files import H5Files, RowDescribe
from nas.gaze.datasets.imaging import area_resize, bgr_to_rgb
from nas.gaze.datasets.lazy import LazyArray
from nas.gaze.datasets.options import opt_bool, opt_size
from nas.gaze.datasets.registry import Log, register_source

_PERSON = re.compile(r"^p\d+\.mat$")
IMAGES, LABELS = "Data/data", "Data/label"
NAME = "MPIIFaceGaze"


def _dataset(f: Any, key: str, path: Path) -> Any:
    h5py = need("h5py", NAME)
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise UserError("missing dataset; expected the MPIIFaceGaze normalized release "
                        "(Data/data images, Data/label labels)", source=str(path), field=key)
    return obj


def _labels(f: Any, path: Path, n: int) -> np.ndarray:
    """(n, 4) gaze pitch, yaw, head pitch, yaw from (n, >=4) or (>=4, n) labels."""
    lab = _dataset(f, LABELS, path)
    shape = lab.shape
    if len(shape) == 2 and shape[0] == n and shape[1] >= 4:
        a = np.asarray(lab[:, :4], np.float64)
    elif len(shape) == 2 and shape[1] == n and shape[0] >= 4:
        a = np.asarray(lab[:4, :], np.float64).T
    else:
        raise UserError(f"expected ({n}, 16) labels (gaze pitch, yaw, head pitch, yaw, "
                        f"landmarks) for {n} images, got shape {shape}", source=str(path),
                        field=LABELS)
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if len(bad):
        raise UserError(f"row {bad[0]} has non-finite gaze / head pose "
                        f"({a[bad[0]].tolist()}); expected numbers (NaN label)",
                        source=str(path), field=LABELS)
    return a


def _layout(shape: tuple[int, ...], path: Path) -> str:
    """'nchw' or 'nhwc' for images of `shape` (samples first)."""
    if len(shape) == 4 and shape[0] >= 1:
        if shape[1] in (1, 3):
            return "nchw"
        if shape[3] in (1, 3):
            return "nhwc"
    raise UserError(f"expected images as (N, 3, H, W) (MATLAB's transposed layout) or "
                    f"(N, H, W, 3), got shape {shape}", source=str(path), field=IMAGES)


class _FaceImages:
    """fetch: rows of per-person files -> (k, h, w, 3) uint8 RGB."""

    def __init__(self, files: list[str], layouts: list[str], file_idx: np.ndarray,
                 rows: np.ndarray, size: tuple[int, int] | None, bgr: bool):
        self.files, self.layouts = files, layouts
        self.file_idx, self.rows = file_idx, rows
        self.size, self.bgr = size, bgr
        self.h5 = H5Files(NAME)
        self._scale: dict[int, float] = {}

    def _to_rgb(self, raw: np.ndarray, f: int, dset: Any) -> np.ndarray:
        img = raw.transpose(0, 2, 3, 1) if self.layouts[f] == "nchw" else raw
        if img.dtype != np.uint8:
            if f not in self._scale:  # [0, 1] floats or [0, 255] floats: the first image says
                first = np.asarray(dset[0], np.float64)
                self._scale[f] = 255.0 if np.nanmax(first) <= 1.0 else 1.0
            img = np.clip(np.rint(np.nan_to_num(img * self._scale[f])), 0, 255).astype(np.uint8)
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        elif self.bgr:
            img = bgr_to_rgb(img)
        if self.size is not None:
            img = area_resize(img, self.size, channels=True)
        return img

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        out = None
        fi = self.file_idx[idx]
        for f in np.unique(fi):
            pos = np.flatnonzero(fi == f)
            rows = self.rows[idx[pos]]
            uniq, inv = np.unique(rows, return_inverse=True)  # h5py wants increasing rows
            path = self.files[f]
            try:
                dset = self.h5.get(path)[IMAGES]
                raw = dset[uniq.tolist()] if len(uniq) > 1 else dset[int(uniq[0])][None]
            except (OSError, KeyError, ValueError) as exc:
                raise BadSampleError(f"rows {uniq[:5].tolist()} unreadable "
                                     f"({type(exc).__name__}: {exc})", source=path,
                                     field=IMAGES) from None
            img = self._to_rgb(np.asarray(raw), int(f), dset)[inv]
            if out is None:
                out = np.empty((len(idx), *img.shape[1:]), np.uint8)
            out[pos] = img
        return out


@register_source
class MPIIFaceGazeSource:
    name = "mpiifacegaze"
    task = "gaze3d"
    needs_path = True
    options = {"size": None, "bgr": True}  # size: None keeps 448x448; bgr: stored as BGR

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        assert path is not None
        h5py = need("h5py", NAME)
        size = opt_size(opts, "size", str(path))
        bgr = opt_bool(opts, "bgr", str(path))
        root = path if path.is_dir() else path.parent
        mats = [path] if path.is_file() else sorted(
            p for p in root.iterdir() if _PERSON.match(p.name))
        if not mats:
            raise UserError("no pXX.mat files; expected the MPIIFaceGaze normalized release "
                            "(one MATLAB v7.3 file per person)", source=str(root),
                            field="pXX.mat")
        files, layouts, labels, subjects, file_idx, rows = [], [], [], [], [], []
        hw = None
        for f, mat in enumerate(mats):
            if not h5py.is_hdf5(str(mat)):
                raise UserError("not an HDF5 (MATLAB v7.3) file; expected the MPIIFaceGaze "
                                "normalized release", source=str(mat))
            with h5py.File(str(mat), "r") as h:
                img = _dataset(h, IMAGES, mat)
                layout = _layout(img.shape, mat)
                lab = _labels(h, mat, img.shape[0])
                shape = img.shape[2:] if layout == "nchw" else img.shape[1:3]
            if hw is not None and shape != hw and size is None:
                raise UserError(f"images are {shape[0]}x{shape[1]}, other files' "
                                f"{hw[0]}x{hw[1]}; give a `size` to resize them",
                                source=str(mat), field=IMAGES)
            hw = hw or shape
            files.append(str(mat))
            layouts.append(layout)
            labels.append(lab)
            subjects += [mat.stem] * len(lab)
            file_idx.append(np.full(len(lab), f, np.int32))
            rows.append(np.arange(len(lab), dtype=np.int32))
        lab = np.concatenate(labels)
        file_idx, rows = np.concatenate(file_idx), np.concatenate(rows)
        out_hw = size or hw
        log(f"mpiifacegaze: {len(lab)} faces of {len(files)} persons, "
            f"{hw[0]}x{hw[1]} -> {out_hw[0]}x{out_hw[1]} RGB")
        return GazeDataset(
            name=self.name, task=self.task, root=root,
            images=LazyArray(len(lab), (*out_hw, 3), np.uint8,
                             _FaceImages(files, layouts, file_idx, rows, size, bgr)),
            labels=lab[:, :2].astype(np.float32), head_pose=lab[:, 2:4].astype(np.float32),
            subjects=np.asarray(subjects),
            fingerprint=fingerprint(self.name, root, mats, {"size": size, "bgr": bgr}),
            describe=RowDescribe(files, file_idx, rows), meta={"label_field": LABELS})
