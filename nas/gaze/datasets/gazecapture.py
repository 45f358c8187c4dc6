"""GazeCapture: one folder per recording (`00002/`, ...) with `frames/NNNNN.jpg` and JSON
metadata, arrays indexed like `frames.json`:

- `appleFace.json` / `appleLeftEye.json` / `appleRightEye.json`: {"X", "Y", "W", "H",
  "IsValid"} boxes in pixels; the face box is relative to the frame's top-left corner, the
  eye boxes to the face crop's. "Left eye" is the subject's left, on the image's right.
- `faceGrid.json`: {"X", "Y", "W", "H", "IsValid"}, a box on a 25 x 25 grid, X/Y 1-based.
- `dotInfo.json`: {"DotNum", "XPts", "YPts", "XCam", "YCam", "Time"}; XCam/YCam in cm
  from the camera: the label.
- `info.json`: {"TotalFrames", "NumFaceDetections", "NumEyeDetections", "Dataset",
  "DeviceName"}; Dataset is the official split ("train" / "val" / "test").
- `screen.json` (orientation; read when present, kept in meta).

Only frames whose face, both eye and face-grid boxes are all valid are samples (the rule
iTracker was trained with). Boxes are rounded to whole pixels (MATLAB's round); crops
repeat the edge pixels where a box leaves the image, as the dataset's own cropping code
does; the eye crops are cut from the face crop. Inputs: "face" (face_size^2 x 3 RGB),
"left_eye", "right_eye" (eye_size^2 x 3 RGB) and "face_grid", a (25, 25) uint8 mask with
rows = grid y (flattened row-major it equals the dataset's own flattened face grid).

Opening reads the JSON and (verify="stat", the default) checks every frame exists and is
not empty; verify="decode" also decodes each JPEG; "none" skips both. Unreadable frames
are skipped with a warning naming them, or refused beyond `max_bad_fraction`. JPEGs are
decoded (Pillow) only when indexed; a frame that turns out corrupt then raises an error
naming it (`prepare` skips and counts those).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError, excerpt, safe_name
from nas.gaze.datasets.bad import DEFAULT_MAX_BAD_FRACTION, BadSampleError, tolerate
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.deps import need
from nas.gaze.datasets.fingerprint import fingerprint, stat_line
from nas.gaze.datasets.imaging import area_resize, crop_repeat_edge
from nas.gaze.datasets.lazy import LazyArray, LazyDict
from nas.gaze.datasets.options import opt_choice, opt_fraction, opt_size
from nas.gaze.datasets.registry import Log, register_source

GRID = 25
BOX_FILES = {"face": "appleFace.json", "left_eye": "appleLeftEye.json",
             "right_eye": "appleRightEye.json", "face_grid": "faceGrid.json"}
SPLITS = ("train", "val", "test")
INPUTS = ("face", "left_eye", "right_eye", "face_grid")
NAME = "GazeCapture"
_REC = re.compile(r"^\d+$")


def _json(path: Path) -> Any:
    if not path.is_file():
        raise UserError("missing file; expected GazeCapture's per-recording JSON metadata",
                        source=str(path))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable JSON ({type(exc).__name__}: {excerpt(str(exc))})",
                        source=str(path)) from None


def _column(data: Any, key: str, n: int, path: Path) -> np.ndarray:
    """data[key] as a float array of n entries (NaN kept: checked where it matters)."""
    if not isinstance(data, dict) or key not in data:
        raise UserError(f"missing field; expected a list of {n} numbers (one per frame)",
                        source=str(path), field=key)
    v = data[key]
    try:
        a = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != (n,):
        raise UserError(f"expected a list of {n} numbers (one per frame in frames.json), got "
                        f"{excerpt(v)}", source=str(path), field=key)
    return a


def _round(a: np.ndarray) -> np.ndarray:
    """MATLAB's round (half away from zero), as the dataset's own crops used."""
    return (np.sign(a) * np.floor(np.abs(a) + 0.5)).astype(np.int32)


def grid_mask(params: np.ndarray) -> np.ndarray:
    """(k, 4) 1-based (X, Y, W, H) grid boxes -> (k, 25, 25) uint8 masks (rows = y), clipped
    to the grid like the dataset's faceGridFromParams.m."""
    out = np.zeros((len(params), GRID, GRID), np.uint8)
    for m, (x, y, w, h) in zip(out, params.astype(np.int64), strict=True):
        x0, x1 = min(GRID, max(1, x)), min(GRID, max(1, x + w - 1))
        y0, y1 = min(GRID, max(1, y)), min(GRID, max(1, y + h - 1))
        m[y0 - 1:y1, x0 - 1:x1] = 1
    return out


class _Frames:
    """Decodes frames and crops the inputs; remembers the last batch, so reading "face"
    then "left_eye" of the same rows decodes each JPEG once."""

    def __init__(self, root: str, recs: list[str], rec_idx: np.ndarray, names: np.ndarray,
                 boxes: dict[str, np.ndarray], face_size: tuple[int, int],
                 eye_size: tuple[int, int]):
        self.root, self.recs, self.rec_idx, self.names = root, recs, rec_idx, names
        self.boxes, self.face_size, self.eye_size = boxes, face_size, eye_size
        self._last: tuple[bytes, dict] | None = None

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.recs[self.rec_idx[i]], "frames",
                            self.names[i].decode())

    def decode(self, i: int) -> np.ndarray:
        Image = need("PIL.Image", NAME)
        path = self.path(i)
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is OSError
            raise BadSampleError(f"corrupt or unreadable JPEG ({type(exc).__name__}: "
                                 f"{excerpt(str(exc))})", source=path, field="frames") from None

    def crops(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frame = self.decode(i)
        face = crop_repeat_edge(frame, *self.boxes["face"][i])
        left = crop_repeat_edge(face, *self.boxes["left_eye"][i])
        right = crop_repeat_edge(face, *self.boxes["right_eye"][i])
        return (area_resize(face, self.face_size, channels=True),
                area_resize(left, self.eye_size, channels=True),
                area_resize(right, self.eye_size, channels=True))

    def __call__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        key = idx.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        k = len(idx)
        out = {"face": np.empty((k, *self.face_size, 3), np.uint8),
               "left_eye": np.empty((k, *self.eye_size, 3), np.uint8),
               "right_eye": np.empty((k, *self.eye_size, 3), np.uint8),
               "face_grid": grid_mask(self.boxes["face_grid"][idx])}
        for j, i in enumerate(idx):
            out["face"][j], out["left_eye"][j], out["right_eye"][j] = self.crops(int(i))
        self._last = (key, out)
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_last": None}


class _Input:
    """fetch of one named input."""

    def __init__(self, frames: _Frames, key: str):
        self.frames, self.key = frames, key

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        if self.key == "face_grid":
            return grid_mask(self.frames.boxes["face_grid"][idx])
        return self.frames(idx)[self.key]


class _Describe:
    def __init__(self, frames: _Frames):
        self.frames = frames

    def __call__(self, i: int) -> str:
        return self.frames.path(i)


def _read_recording(rec: Path, verify: str, bad: list, lines: list[str],
                    Image: Any) -> dict | None:
    """One recording's valid frames: names, boxes, labels, split; None if it has none."""
    frames = _json(rec / "frames.json")
    if not isinstance(frames, list) or not all(safe_name(x) and x.isascii() for x in frames):
        raise UserError(f"expected a list of frame file names, got {excerpt(frames)}",
                        source=str(rec / "frames.json"))
    n = len(frames)
    info = _json(rec / "info.json")
    split = info.get("Dataset") if isinstance(info, dict) else None
    if split not in SPLITS:
        raise UserError(f"expected one of {', '.join(SPLITS)}, got {excerpt(split)}",
                        source=str(rec / "info.json"), field="Dataset")
    boxes, valid = {}, np.ones(n, bool)
    for key, fname in BOX_FILES.items():
        data = _json(rec / fname)
        cols = [_column(data, k, n, rec / fname) for k in ("X", "Y", "W", "H", "IsValid")]
        valid &= cols[4] == 1
        boxes[key] = np.stack(cols[:4], axis=1)
    dot = _json(rec / "dotInfo.json")
    xy = np.stack([_column(dot, k, n, rec / "dotInfo.json") for k in ("XCam", "YCam")], 1)
    for p in ("frames.json", "info.json", "dotInfo.json", *BOX_FILES.values()):
        lines.append(stat_line(rec / p, rec.parent))
    keep = np.flatnonzero(valid)
    if len(keep) == 0:
        return None
    for key, fname in BOX_FILES.items():
        b = boxes[key][keep]
        rows = np.flatnonzero(~np.isfinite(b).all(axis=1))
        if len(rows):
            raise UserError(f"frame {keep[rows[0]]} is marked valid but its box is "
                            f"{b[rows[0]].tolist()}", source=str(rec / fname), field="X/Y/W/H")
    lab = xy[keep]
    rows = np.flatnonzero(~np.isfinite(lab).all(axis=1))
    if len(rows):
        raise UserError(f"frame {keep[rows[0]]} has {lab[rows[0]].tolist()}; expected cm "
                        "(NaN label)", source=str(rec / "dotInfo.json"), field="XCam/YCam")
    rounded = {k: _round(boxes[k][keep]) for k in BOX_FILES}
    ok = np.ones(len(keep), bool)
    for key in ("face", "left_eye", "right_eye"):
        small = (rounded[key][:, 2] < 1) | (rounded[key][:, 3] < 1)
        for j in np.flatnonzero(small & ok):
            bad.append((str(rec / "frames" / frames[keep[j]]),
                        f"{BOX_FILES[key]} box {rounded[key][j].tolist()} is empty"))
        ok &= ~small
    fdir = rec / "frames"
    if verify != "none":
        if not fdir.is_dir():
            raise UserError("missing frames folder", source=str(fdir))
        entries = {e.name: e for e in os.scandir(fdir)}
        for j in np.flatnonzero(ok):
            name = frames[keep[j]]
            e = entries.get(name)
            reason = None
            if e is None:
                reason = "missing frame"
            else:
                st = e.stat()
                lines.append(f"{rec.name}/frames/{name}\t{st.st_size}\t{st.st_mtime_ns}")
                if st.st_size == 0:
                    reason = "empty file"
                elif verify == "decode":
                    try:
                        with Image.open(e.path) as im:
                            im.load()
                    except (OSError, SyntaxError, ValueError) as exc:
                        reason = f"corrupt JPEG ({type(exc).__name__})"
            if reason:
                bad.append((str(fdir / name), reason))
                ok[j] = False
    elif fdir.is_dir():
        lines.append(stat_line(fdir, rec.parent))
    keep, lab = keep[ok], lab[ok]
    screen = {}
    if (rec / "screen.json").is_file():
        screen = _json(rec / "screen.json")
        lines.append(stat_line(rec / "screen.json", rec.parent))
    orient = screen.get("Orientation") if isinstance(screen, dict) else None
    orient = np.asarray(orient, np.float64)[keep].astype(np.int8) \
        if isinstance(orient, list) and len(orient) == n else np.zeros(len(keep), np.int8)
    return {"names": [frames[k] for k in keep], "labels": lab.astype(np.float32),
            "boxes": {k: v[ok] for k, v in rounded.items()}, "split": split,
            "orientation": orient}


@register_source
class GazeCaptureSource:
    name = "gazecapture"
    task = "pog2d"
    needs_path = True
    options = {"face_size": 64, "eye_size": 64, "split": "all", "verify": "stat",
               "max_bad_fraction": DEFAULT_MAX_BAD_FRACTION}

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        assert path is not None
        src = str(path)
        face_size = opt_size(opts, "face_size", src, allow_none=False)
        eye_size = opt_size(opts, "eye_size", src, allow_none=False)
        which = opt_choice(opts, "split", ("all", *SPLITS), src)
        verify = opt_choice(opts, "verify", ("stat", "decode", "none"), src)
        max_bad = opt_fraction(opts, "max_bad_fraction", src)
        Image = need("PIL.Image", NAME) if verify == "decode" else None
        if not path.is_dir():
            raise UserError("expected the GazeCapture folder of numbered recordings", source=src)
        recs = sorted(p for p in path.iterdir() if p.is_dir() and _REC.match(p.name))
        if not recs:
            raise UserError("no recording folders (00002, 00003, ...); expected the "
                            "extracted GazeCapture dataset", source=src, field="RRRRR/")
        names, rec_idx, labels, orient, codes = [], [], [], [], []
        boxes: dict[str, list] = {k: [] for k in BOX_FILES}
        bad: list[tuple[str, str]] = []
        lines: list[str] = []
        used: list[str] = []
        empty = 0
        for rec in recs:
            if which != "all":
                info = _json(rec / "info.json")
                if isinstance(info, dict) and info.get("Dataset") != which \
                        and info.get("Dataset") in SPLITS:
                    continue
            r = _read_recording(rec, verify, bad, lines, Image)
            if r is None or not r["names"]:
                empty += r is None
                continue
            used.append(rec.name)
            k = len(r["names"])
            names += r["names"]
            rec_idx.append(np.full(k, len(used) - 1, np.int32))
            labels.append(r["labels"])
            orient.append(r["orientation"])
            codes.append(np.full(k, SPLITS.index(r["split"]), np.int8))
            for key in BOX_FILES:
                boxes[key].append(r["boxes"][key])
        total = len(names) + len(bad)
        tolerate(bad, total, max_bad, "frames", log)
        if not names:
            raise UserError(f"no frames with valid face, eye and face-grid boxes (split "
                            f"{which!r})", source=src)
        n = len(names)
        name_arr = np.asarray(names, dtype="S")
        rec_arr = np.concatenate(rec_idx)
        box_arr = {k: np.concatenate(v) for k, v in boxes.items()}
        box_arr["face_grid"] = box_arr["face_grid"].astype(np.int16)
        frames = _Frames(str(path), used, rec_arr, name_arr, box_arr, face_size, eye_size)
        shapes = {"face": (*face_size, 3), "left_eye": (*eye_size, 3),
                  "right_eye": (*eye_size, 3), "face_grid": (GRID, GRID)}
        images = LazyDict({k: LazyArray(n, shapes[k], np.uint8, _Input(frames, k))
                           for k in INPUTS}, frames)
        code_arr = np.concatenate(codes)
        log(f"gazecapture: {n} frames with valid boxes from {len(used)} recordings"
            f"{f' ({empty} without any)' if empty else ''}")
        return GazeDataset(
            name=self.name, task=self.task, root=path, images=images,
            labels=np.concatenate(labels), head_pose=None,
            subjects=np.asarray(used)[rec_arr],
            fingerprint=fingerprint(self.name, path, [], {
                "face_size": face_size, "eye_size": eye_size, "split": which,
                "verify": verify}, extra=lines),
            official={s: np.flatnonzero(code_arr == k) for k, s in enumerate(SPLITS)},
            describe=_Describe(frames),
            meta={"label_field": "dotInfo.json XCam/YCam", "orientation": np.concatenate(orient),
                  "skipped_frames": [b[0] for b in bad]})
