"""ETH-XGaze, 224 px release: `xgaze_224/{train,test}/subjectXXXX.h5` and
`xgaze_224/train_test_split.json` ({"train": [file names], "test": [file names]}).

Each subject file holds `face_patch` (N, 224, 224, 3) uint8 BGR, `face_gaze` (N, 2) and
`face_head_pose` (N, 2) as (pitch, yaw) radians in DESIGN.md's convention (ETH-XGaze's own
normalization uses asin(-y), atan2(-x, -z)), plus `frame_index` and `cam_index`. The test
split's files have no `face_gaze` in the public release: they open only with
`unlabeled=True`, for inference, and such a dataset refuses training.

Images are converted to RGB and read per index from a few open files; opening reads only
the small label arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError, excerpt, safe_name
from nas.gaze.datasets.bad import BadSampleError
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.deps import need
from nas.gaze.datasets.fingerprint import fingerprint
from nas.gaze.datasets.h5files import H5Files, RowDescribe
from nas.gaze.datasets.imaging import area_resize, bgr_to_rgb
from nas.gaze.datasets.lazy import LazyArray
from nas.gaze.datasets.options import opt_bool, opt_choice, opt_size
from nas.gaze.datasets.registry import Log, register_source

SPLIT_FILE = "train_test_split.json"
SPLITS = ("train", "test")
NAME = "ETH-XGaze"


def find_root(path: Path) -> Path:
    """The folder with train_test_split.json (xgaze_224, or its parent holding it)."""
    for cand in (path, path / "xgaze_224"):
        if (cand / SPLIT_FILE).is_file():
            return cand
    raise UserError(f"missing {SPLIT_FILE}; expected the xgaze_224 folder of ETH-XGaze "
                    "(train/, test/ and train_test_split.json)", source=str(path / SPLIT_FILE))


def _split_lists(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable JSON ({type(exc).__name__}); expected "
                        '{"train": [...], "test": [...]}', source=str(path)) from None
    if not isinstance(data, dict):
        raise UserError('expected {"train": [file names], "test": [file names]}',
                        source=str(path))
    out = {}
    for split in SPLITS:
        names = data.get(split)
        if not isinstance(names, list) or not all(safe_name(x) for x in names):
            raise UserError(f"expected a list of .h5 file names, got {excerpt(names)}",
                            source=str(path), field=split)
        out[split] = names
    return out


def _rows(f: Any, key: str, path: Path, n: int | None) -> np.ndarray:
    a = np.asarray(f[key][()], np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or (n is not None and len(a) != n):
        raise UserError(f"expected ({n if n is not None else 'N'}, 2) (pitch, yaw), got shape "
                        f"{a.shape}", source=str(path), field=key)
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if len(bad):
        raise UserError(f"row {bad[0]} is {a[bad[0]].tolist()}; expected finite (pitch, yaw) "
                        "(NaN label)", source=str(path), field=key)
    return a.astype(np.float32)


class _Patches:
    """fetch: rows of subject files -> (k, h, w, 3) uint8 RGB."""

    def __init__(self, files: list[str], file_idx: np.ndarray, rows: np.ndarray,
                 size: tuple[int, int] | None):
        self.files, self.file_idx, self.rows, self.size = files, file_idx, rows, size
        self.h5 = H5Files(NAME)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        out = None
        fi = self.file_idx[idx]
        for f in np.unique(fi):
            pos = np.flatnonzero(fi == f)
            uniq, inv = np.unique(self.rows[idx[pos]], return_inverse=True)
            path = self.files[f]
            try:
                dset = self.h5.get(path)["face_patch"]
                raw = dset[uniq.tolist()] if len(uniq) > 1 else dset[int(uniq[0])][None]
            except (OSError, KeyError, ValueError) as exc:
                raise BadSampleError(f"rows {uniq[:5].tolist()} unreadable "
                                     f"({type(exc).__name__}: {exc})", source=path,
                                     field="face_patch") from None
            img = bgr_to_rgb(np.asarray(raw, np.uint8))
            if self.size is not None:
                img = area_resize(img, self.size, channels=True)
            img = img[inv]
            if out is None:
                out = np.empty((len(idx), *img.shape[1:]), np.uint8)
            out[pos] = img
        return out


@register_source
class ETHXGazeSource:
    name = "ethxgaze"
    task = "gaze3d"
    needs_path = True
    # split: which listed files to open; unlabeled: allow files without face_gaze (test)
    options = {"split": "train", "unlabeled": False, "size": None}

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        assert path is not None
        h5py = need("h5py", NAME)
        root = find_root(path)
        which = opt_choice(opts, "split", ("train", "test", "all"), str(root))
        unlabeled = opt_bool(opts, "unlabeled", str(root))
        size = opt_size(opts, "size", str(root))
        lists = _split_lists(root / SPLIT_FILE)
        splits = SPLITS if which == "all" else (which,)
        files: list[str] = []
        paths: list[Path] = [root / SPLIT_FILE]
        cols: dict[str, list] = {k: [] for k in ("gaze", "head", "subject", "file", "row",
                                                  "frame", "cam", "split")}
        hw = None
        for s, split in enumerate(splits):
            for name in lists[split]:
                p = root / split / name
                if not p.is_file():
                    raise UserError(f"listed under {split!r} in {SPLIT_FILE} but missing",
                                    source=str(p))
                if not h5py.is_hdf5(str(p)):
                    raise UserError("not an HDF5 file; expected an ETH-XGaze subject file",
                                    source=str(p))
                with h5py.File(str(p), "r") as h:
                    patch = h.get("face_patch")
                    if not isinstance(patch, h5py.Dataset) or patch.ndim != 4 \
                            or patch.shape[3] != 3 or patch.dtype != np.uint8:
                        got = "missing" if patch is None else \
                            f"{getattr(patch, 'dtype', '?')}{getattr(patch, 'shape', '')}"
                        raise UserError(f"expected uint8 (N, 224, 224, 3) BGR face patches, "
                                        f"got {got}", source=str(p), field="face_patch")
                    n = patch.shape[0]
                    shape = patch.shape[1:3]
                    if "face_gaze" in h:
                        gaze = _rows(h, "face_gaze", p, n)
                    elif unlabeled:
                        gaze = np.full((n, 2), np.nan, np.float32)
                    else:
                        raise UserError(
                            "no gaze labels (ETH-XGaze's test split is unlabeled); it cannot "
                            "be used for training: open it with unlabeled=True for inference, "
                            "or use split='train'", source=str(p), field="face_gaze")
                    if "face_head_pose" in h:
                        head = _rows(h, "face_head_pose", p, n)
                    elif unlabeled:  # inference only: head pose is optional
                        head = None
                        log(f"ethxgaze: {p} has no face_head_pose; the set has no head pose")
                    else:
                        raise UserError("missing; expected (N, 2) head pose (pitch, yaw)",
                                        source=str(p), field="face_head_pose")
                    extra = {k: (np.asarray(h[k][()]).reshape(-1).astype(np.int32)
                                 if k in h and len(h[k]) == n else np.full(n, -1, np.int32))
                             for k in ("frame_index", "cam_index")}
                if hw is not None and shape != hw and size is None:
                    raise UserError(f"patches are {shape}, other files' {hw}; give a `size`",
                                    source=str(p), field="face_patch")
                hw = hw or shape
                paths.append(p)
                files.append(str(p))
                cols["gaze"].append(gaze)
                cols["head"].append(head)
                cols["subject"] += [Path(name).stem] * n
                cols["file"].append(np.full(n, len(files) - 1, np.int32))
                cols["row"].append(np.arange(n, dtype=np.int32))
                cols["frame"].append(extra["frame_index"])
                cols["cam"].append(extra["cam_index"])
                cols["split"].append(np.full(n, s, np.int8))
        if not files:
            raise UserError(f"no files listed for split {which!r}", source=str(root / SPLIT_FILE),
                            field=which)
        file_idx, rows = np.concatenate(cols["file"]), np.concatenate(cols["row"])
        codes = np.concatenate(cols["split"])
        out_hw = size or hw
        labels = None if unlabeled else np.concatenate(cols["gaze"])
        log(f"ethxgaze: {len(file_idx)} faces of {len(files)} subjects ({which}), "
            f"{out_hw[0]}x{out_hw[1]} RGB{', unlabeled' if unlabeled else ''}")
        return GazeDataset(
            name=self.name, task=self.task, root=root,
            images=LazyArray(len(file_idx), (*out_hw, 3), np.uint8,
                             _Patches(files, file_idx, rows, size)),
            labels=labels, head_pose=None if any(h is None for h in cols["head"])
            else np.concatenate(cols["head"]),
            subjects=np.asarray(cols["subject"]),
            fingerprint=fingerprint(self.name, root, paths,
                                    {"split": which, "unlabeled": unlabeled, "size": size}),
            official={split: np.flatnonzero(codes == s) for s, split in enumerate(splits)},
            describe=RowDescribe(files, file_idx, rows),
            meta={"label_field": "face_gaze", "frame_index": np.concatenate(cols["frame"]),
                  "cam_index": np.concatenate(cols["cam"])})
