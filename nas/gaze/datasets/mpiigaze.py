"""MPIIGaze, normalized release: `Data/Normalized/pXX/dayYY.mat` (MATLAB v5).

Each day file holds `data.left` / `data.right` structs with `image` (N, 36, 60) uint8,
`gaze` (N, 3) unit vectors and `pose` (N, 3) head rotation vectors, plus `filenames` (N,)
(`0069.jpg`). Both eyes become samples; a right eye is mirrored left-right so that every
patch looks like a left eye, which negates the x of its gaze (and so its yaw) and the yaw
of its head pose. With `Evaluation Subset/sample list for eye image/pXX.txt` (lines
`day08/0069.jpg left`) present, only the listed eyes are kept, in the listed order: the
3,000 samples per person of the published leave-one-subject-out protocol.

MATLAB v5 files cannot be read in parts, so opening reads each day file once for its labels
and drops the pixels; images are read back per file on demand (a few files kept). For
training on all of it, `prepare` a cache.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError, excerpt
from nas.gaze.datasets.bad import BadSampleError
from nas.gaze.datasets.convert import gaze_vectors_to_pitchyaw, head_rotvec_to_pitchyaw
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.deps import need
from nas.gaze.datasets.fingerprint import fingerprint
from nas.gaze.datasets.lazy import LazyArray
from nas.gaze.datasets.options import opt_bool
from nas.gaze.datasets.registry import Log, register_source

EVAL_DIR = ("Evaluation Subset", "sample list for eye image")
_PERSON = re.compile(r"^p\d+$")
_DAY = re.compile(r"^day\d+\.mat$")
SIDES = ("left", "right")


def find_root(path: Path) -> Path:
    """The MPIIGaze folder (holding Data/Normalized), also when given Data/Normalized."""
    if (path / "Data" / "Normalized").is_dir():
        return path
    if path.name == "Normalized" and path.parent.name == "Data" and path.is_dir():
        return path.parent.parent
    raise UserError("expected the MPIIGaze folder holding Data/Normalized/pXX/dayYY.mat",
                    source=str(path), field="Data/Normalized")


def _load(path: Path) -> Any:
    sio = need("scipy.io", "MPIIGaze")
    try:
        return sio.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except Exception as exc:  # scipy raises many types for a torn or foreign file
        raise UserError(f"unreadable MATLAB file ({type(exc).__name__}: "
                        f"{excerpt(str(exc))}); expected an MPIIGaze normalized day file "
                        "(MATLAB v5)", source=str(path)) from None


def _field(obj: Any, name: str, path: Path, where: str) -> Any:
    if isinstance(obj, dict):
        v = obj.get(name)
    else:
        v = getattr(obj, name, None)
    if v is None:
        raise UserError("missing field; expected MPIIGaze's data.left / data.right structs "
                        "with image, gaze, pose and top-level filenames", source=str(path),
                        field=f"{where}{name}")
    return v


def _rows(value: Any, width: int, path: Path, field: str) -> np.ndarray:
    """An (N, width) float array, also from a squeezed single row (width,)."""
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        a = np.zeros((0,))
    if a.ndim == 1 and a.shape == (width,):
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width:
        raise UserError(f"expected (N, {width}) numbers, got shape {np.shape(value)}",
                        source=str(path), field=field)
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if len(bad):
        raise UserError(f"row {bad[0]} is {excerpt(a[bad[0]].tolist())}; expected finite "
                        "values (NaN label)", source=str(path), field=field)
    return a


def _images(value: Any, path: Path, field: str) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.dtype != np.uint8:
        raise UserError(f"expected uint8 (N, 36, 60) eye patches, got {a.dtype}{a.shape}",
                        source=str(path), field=field)
    return a


class _Day:
    """Labels (and, while loading, pixels) of one day file, checked."""

    def __init__(self, path: Path, keep_images: bool = False):
        m = _load(path)
        data = _field(m, "data", path, "")
        names = np.atleast_1d(np.asarray(_field(m, "filenames", path, ""), dtype=object))
        self.filenames = [str(x) for x in names]
        self.n = len(self.filenames)
        self.index = {name: r for r, name in enumerate(self.filenames)}
        self.gaze, self.pose, self.images = {}, {}, {}
        for side in SIDES:
            s = _field(data, side, path, "data.")
            img = _images(_field(s, "image", path, f"data.{side}."), path,
                          f"data.{side}.image")
            g = _rows(_field(s, "gaze", path, f"data.{side}."), 3, path, f"data.{side}.gaze")
            p = _rows(_field(s, "pose", path, f"data.{side}."), 3, path, f"data.{side}.pose")
            for fld, arr in (("image", img), ("gaze", g), ("pose", p)):
                if len(arr) != self.n:
                    raise UserError(f"{len(arr)} rows but {self.n} filenames",
                                    source=str(path), field=f"data.{side}.{fld}")
            zero = np.flatnonzero(np.linalg.norm(g, axis=1) < 1e-9)
            if len(zero):
                raise UserError(f"row {zero[0]} is a zero vector; expected a unit gaze "
                                "vector", source=str(path), field=f"data.{side}.gaze")
            self.gaze[side], self.pose[side] = g, p
            if keep_images:
                self.images[side] = img
        self.shape = img.shape[1:]


class _EyeImages:
    """fetch for the LazyArray: rows of day files, right eyes mirrored; keeps a few files."""

    def __init__(self, files: list[str], file_idx: np.ndarray, rows: np.ndarray,
                 right: np.ndarray, keep: int = 4):
        self.files, self.file_idx, self.rows, self.right = files, file_idx, rows, right
        self.keep = keep
        self._cache: OrderedDict[int, dict] = OrderedDict()

    def _day(self, f: int) -> dict:
        if f in self._cache:
            self._cache.move_to_end(f)
            return self._cache[f]
        try:
            day = _Day(Path(self.files[f]), keep_images=True)
        except UserError as exc:  # changed since it was opened
            raise BadSampleError("changed since the dataset was opened and no longer reads "
                                 "as it did; open it again", source=self.files[f],
                                 field=exc.field) from None
        self._cache[f] = day.images
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return day.images

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        out = None
        fi = self.file_idx[idx]
        for f in np.unique(fi):
            pos = np.flatnonzero(fi == f)
            imgs = self._day(int(f))
            for k in pos:
                side = "right" if self.right[idx[k]] else "left"
                r = int(self.rows[idx[k]])
                if r >= len(imgs[side]):
                    raise BadSampleError(f"row {r} is gone (file changed since it was "
                                         "opened)", source=self.files[f],
                                         field=f"data.{side}.image")
                img = imgs[side][r]
                img = img[:, ::-1] if side == "right" else img
                if out is None:
                    out = np.empty((len(idx), *img.shape), np.uint8)
                out[k] = img
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": OrderedDict()}


class _Describe:
    def __init__(self, root: Path, files, file_idx, rows, right):
        self.root, self.files, self.file_idx, self.rows, self.right = (
            root, files, file_idx, rows, right)

    def __call__(self, i: int) -> str:
        rel = Path(self.files[self.file_idx[i]]).relative_to(self.root).as_posix()
        return f"{rel} row {self.rows[i]} ({'right' if self.right[i] else 'left'} eye)"


def _eval_list(txt: Path, days: dict[str, Path]) -> list[tuple[str, str, str, int]]:
    """(day, filename, side, line number) per line of an evaluation-subset list."""
    if not txt.is_file():
        raise UserError("missing evaluation-subset list for this person (or open with "
                        "evaluation_subset=False)", source=str(txt))
    out = []
    for k, line in enumerate(txt.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        ok = len(parts) == 2 and parts[1] in SIDES and parts[0].count("/") == 1
        if not ok:
            raise UserError(f"expected `dayNN/NNNN.jpg left|right`, got {excerpt(line)}",
                            source=str(txt), field=f"line {k}")
        day, name = parts[0].split("/")
        if day not in days:
            raise UserError(f"{day}.mat is not in Data/Normalized for this person",
                            source=str(txt), field=f"line {k}")
        out.append((day, name, parts[1], k))
    return out


@register_source
class MPIIGazeSource:
    name = "mpiigaze"
    task = "gaze3d"
    needs_path = True
    options = {"evaluation_subset": None}  # None: use the lists when the folder exists

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        assert path is not None
        root = find_root(path)
        use_eval = opt_bool(opts, "evaluation_subset", str(root), allow_none=True)
        eval_dir = root.joinpath(*EVAL_DIR)
        if use_eval is None:
            use_eval = eval_dir.is_dir()
        norm = root / "Data" / "Normalized"
        persons = sorted(p for p in norm.iterdir() if p.is_dir() and _PERSON.match(p.name))
        if not persons:
            raise UserError("no person folders (p00, p01, ...)", source=str(norm),
                            field="pXX")
        files: list[str] = []
        read: list[Path] = []
        cols: dict[str, list] = {k: [] for k in ("file", "row", "right", "gaze", "pose",
                                                  "subject")}
        shape = None
        for person in persons:
            days = {p.stem: p for p in sorted(person.iterdir()) if _DAY.match(p.name)}
            if not days:
                raise UserError("no dayNN.mat files", source=str(person), field="dayNN.mat")
            txt = eval_dir / f"{person.name}.txt"
            wanted = _eval_list(txt, days) if use_eval else None
            if wanted is not None:  # only the day files the list names
                read.append(txt)
                days = {d: days[d] for d in dict.fromkeys(w[0] for w in wanted)}
            loaded: dict[str, tuple[int, _Day]] = {}
            for day, mat in days.items():
                loaded[day] = (len(files), _Day(mat))
                files.append(str(mat))
                read.append(mat)
                shape = shape or loaded[day][1].shape
                if loaded[day][1].shape != shape:
                    raise UserError(f"eye patches are {loaded[day][1].shape}, other files' "
                                    f"{shape}", source=str(mat), field="data.left.image")
            if wanted is not None:  # the listed eyes, in the list's order
                picks = []
                for day, name, side, line in wanted:
                    f, d = loaded[day]
                    if name not in d.index:
                        raise UserError(f"{day}/{name} is not among the filenames of "
                                        f"{day}.mat", source=str(txt), field=f"line {line}")
                    picks.append((f, d, d.index[name], side))
            else:  # every frame, left eyes then right eyes, day by day
                picks = [(f, d, r, side) for f, d in loaded.values() for side in SIDES
                         for r in range(d.n)]
            for f, d, r, side in picks:
                right = side == "right"
                g = d.gaze[side][r]
                cols["file"].append(f)
                cols["row"].append(r)
                cols["right"].append(right)
                cols["gaze"].append(g * (-1, 1, 1) if right else g)
                cols["pose"].append(d.pose[side][r])
                cols["subject"].append(person.name)
        if not cols["file"]:
            raise UserError("no samples", source=str(norm))
        file_idx = np.asarray(cols["file"], np.int32)
        rows = np.asarray(cols["row"], np.int32)
        right = np.asarray(cols["right"], bool)
        labels = gaze_vectors_to_pitchyaw(np.asarray(cols["gaze"]))
        head = head_rotvec_to_pitchyaw(np.asarray(cols["pose"]))
        head[right, 1] *= -1  # mirrored: the head's yaw flips with the image
        log(f"mpiigaze: {len(labels)} eye patches of {len(persons)} persons from {len(files)} "
            f"day files ({'evaluation subset' if use_eval else 'all frames, both eyes'})")
        return GazeDataset(
            name=self.name, task=self.task, root=root,
            images=LazyArray(len(labels), shape, np.uint8,
                             _EyeImages(files, file_idx, rows, right)),
            labels=labels, head_pose=head, subjects=np.asarray(cols["subject"]),
            fingerprint=fingerprint(self.name, root, read,
                                    {"evaluation_subset": bool(use_eval)}),
            describe=_Describe(root, files, file_idx, rows, right),
            meta={"label_field": "data.left.gaze"})
