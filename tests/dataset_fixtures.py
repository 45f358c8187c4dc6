"""Writers of tiny datasets in each dataset's published on-disk format, for the reader
tests: MATLAB v5 structs (MPIIGaze), MATLAB v7.3 HDF5 (MPIIFaceGaze), HDF5 + JSON
(ETH-XGaze), JPEG + JSON folders (GazeCapture). Each returns the root folder and the
values written, so tests can compare what the readers give back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def gaze_vector(pitch: float, yaw: float) -> np.ndarray:
    """DESIGN.md's g = (-cos p sin y, -sin p, -cos p cos y), written out independently of
    the package so the tests check the readers against the document, not against itself."""
    return np.array([-np.cos(pitch) * np.sin(yaw), -np.sin(pitch),
                     -np.cos(pitch) * np.cos(yaw)])


# ------------------------------------------------------------------ MPIIGaze
def mpiigaze(root: Path, persons: dict[str, dict[str, int]] | None = None,
             eval_subset: bool = True, seed: int = 0, shape: tuple[int, int] = (36, 60),
             gaze: dict | None = None) -> dict:
    """`root/Data/Normalized/pXX/dayYY.mat` (scipy.io.savemat of nested dicts = MATLAB
    structs) and, with `eval_subset`, `root/Evaluation Subset/sample list for eye
    image/pXX.txt` naming about half the eyes in a shuffled order.

    `gaze` = {(person, day, side, row): (x, y, z)} overrides chosen gaze vectors."""
    import scipy.io as sio

    persons = persons or {"p00": {"day01": 4, "day02": 3}, "p01": {"day01": 3}}
    rng = np.random.default_rng(seed)
    truth: dict = {"root": root, "days": {}, "eval": {}}
    for pid, days in persons.items():
        d = root / "Data" / "Normalized" / pid
        d.mkdir(parents=True, exist_ok=True)
        listed = []
        for day, n in days.items():
            names = [f"{k + 1:04d}.jpg" for k in range(n)]
            sides = {}
            for side in ("left", "right"):
                py = rng.uniform(-0.4, 0.4, size=(n, 2))
                g = np.stack([gaze_vector(p, y) for p, y in py]) if n else np.zeros((0, 3))
                for (p2, d2, s2, r), vec in (gaze or {}).items():
                    if (p2, d2, s2) == (pid, day, side):
                        g[r] = vec
                sides[side] = {
                    "image": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
                    "gaze": g,
                    "pose": rng.normal(0, 0.2, size=(n, 3)),
                }
            sio.savemat(d / f"{day}.mat",
                        {"data": {s: dict(v) for s, v in sides.items()},
                         "filenames": np.array(names, dtype=object)})
            truth["days"][(pid, day)] = {"filenames": names, **sides}
            listed += [(day, name, side) for name in names for side in ("left", "right")]
        order = rng.permutation(len(listed))[: max(1, len(listed) // 2)]
        truth["eval"][pid] = [listed[i] for i in order]
    if eval_subset:
        ev = root / "Evaluation Subset" / "sample list for eye image"
        ev.mkdir(parents=True, exist_ok=True)
        for pid, items in truth["eval"].items():
            (ev / f"{pid}.txt").write_text(
                "".join(f"{day}/{name} {side}\n" for day, name, side in items))
    return truth


# ------------------------------------------------------------------ MATLAB v7.3 / HDF5
def _matlab_userblock(path: Path) -> None:
    """The 128-byte text header MATLAB puts in a v7.3 file's 512-byte HDF5 user block."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 " \
           b"HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header)


def mpiifacegaze(root: Path, persons: dict[str, int] | None = None, size: int = 32,
                 float_images: bool = False, seed: int = 1) -> dict:
    """`root/pXX.mat` as MATLAB v7.3 writes a struct `Data` with `data` (W x H x 3 x N
    BGR, Caffe's layout) and `label` (16 x N): dimensions reversed in HDF5, i.e. h5py sees
    (N, 3, H, W) and (N, 16)."""
    import h5py

    persons = persons or {"p00": 4, "p01": 3}
    rng = np.random.default_rng(seed)
    truth: dict = {"root": root, "rgb": {}, "labels": {}}
    root.mkdir(parents=True, exist_ok=True)
    for pid, n in persons.items():
        rgb = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        rgb[:, :4, :4] = (255, 0, 0)  # a red top-left corner: orientation and channels
        bgr = rgb[..., ::-1]
        nchw = np.ascontiguousarray(bgr.transpose(0, 3, 1, 2))
        labels = np.zeros((n, 16))
        labels[:, :2] = rng.uniform(-0.5, 0.5, size=(n, 2))   # gaze pitch, yaw
        labels[:, 2:4] = rng.uniform(-0.3, 0.3, size=(n, 2))  # head pitch, yaw
        labels[:, 4:] = rng.uniform(0, size, size=(n, 12))    # landmarks
        path = root / f"{pid}.mat"
        with h5py.File(path, "w", userblock_size=512) as f:
            g = f.create_group("Data")
            g.attrs["MATLAB_class"] = np.bytes_("struct")
            data = nchw.astype(np.float64) / 255.0 if float_images else nchw
            d = g.create_dataset("data", data=data, chunks=(1, 3, size, size))
            d.attrs["MATLAB_class"] = np.bytes_("double" if float_images else "uint8")
            lab = g.create_dataset("label", data=labels)
            lab.attrs["MATLAB_class"] = np.bytes_("double")
        _matlab_userblock(path)
        truth["rgb"][pid] = rgb
        truth["labels"][pid] = labels
    return truth


# ------------------------------------------------------------------ ETH-XGaze
def ethxgaze(root: Path, train: dict[str, int] | None = None,
             test: dict[str, int] | None = None, test_labels: bool = False, size: int = 16,
             seed: int = 2) -> dict:
    """`root/xgaze_224/{train,test}/subjectXXXX.h5` + `train_test_split.json`."""
    import h5py

    train = train if train is not None else {"subject0000": 3, "subject0003": 2,
                                             "subject0005": 2}
    test = test if test is not None else {"subject0001": 2}
    rng = np.random.default_rng(seed)
    base = root / "xgaze_224"
    truth: dict = {"root": base, "rgb": {}, "gaze": {}, "head": {}}
    for split, subjects in (("train", train), ("test", test)):
        (base / split).mkdir(parents=True, exist_ok=True)
        for sid, n in subjects.items():
            rgb = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
            gaze = rng.uniform(-0.6, 0.6, size=(n, 2)).astype(np.float32)
            head = rng.uniform(-0.4, 0.4, size=(n, 2)).astype(np.float32)
            with h5py.File(base / split / f"{sid}.h5", "w") as f:
                f.create_dataset("face_patch", data=rgb[..., ::-1], chunks=(1, size, size, 3),
                                 compression="gzip")
                if split == "train" or test_labels:
                    f.create_dataset("face_gaze", data=gaze)
                f.create_dataset("face_head_pose", data=head)
                f.create_dataset("frame_index", data=np.arange(n)[:, None])
                f.create_dataset("cam_index", data=(np.arange(n) % 18)[:, None])
            truth["rgb"][sid], truth["gaze"][sid], truth["head"][sid] = rgb, gaze, head
    (base / "train_test_split.json").write_text(json.dumps(
        {"train": [f"{s}.h5" for s in train], "test": [f"{s}.h5" for s in test]}))
    return truth


# ------------------------------------------------------------------ GazeCapture
FRAME_HW = (48, 64)
FACE = (16, 8, 32, 32)       # x, y, w, h in the frame
LEFT = (18, 8, 10, 8)        # subject's left eye (image right), relative to the face box
RIGHT = (4, 8, 10, 8)        # subject's right eye (image left), relative to the face box
GRID_BOX = (7, 5, 10, 12)    # 1-based x, y, w, h on the 25 x 25 grid
COLORS = {"background": (90, 90, 90), "face": (220, 40, 40), "left": (40, 200, 40),
          "right": (40, 40, 220)}


def _frame() -> np.ndarray:
    img = np.zeros((*FRAME_HW, 3), np.uint8)
    img[:] = COLORS["background"]
    fx, fy, fw, fh = FACE
    img[fy:fy + fh, fx:fx + fw] = COLORS["face"]
    for key, (ex, ey, ew, eh) in (("left", LEFT), ("right", RIGHT)):
        img[fy + ey:fy + ey + eh, fx + ex:fx + ex + ew] = COLORS[key]
    return img


def gazecapture(root: Path, recordings: dict[str, tuple[str, int]] | None = None,
                invalid: dict[str, list[int]] | None = None) -> dict:
    """`root/RRRRR/frames/NNNNN.jpg` + appleFace / appleLeftEye / appleRightEye / faceGrid /
    dotInfo / frames / info / screen JSON. `invalid` = {recording: frames whose left-eye
    detection failed (IsValid 0)}."""
    from PIL import Image

    recordings = recordings or {"00002": ("train", 4), "00003": ("train", 3),
                                "00005": ("val", 3), "00008": ("test", 2)}
    invalid = invalid if invalid is not None else {"00002": [1]}
    truth: dict = {"root": root, "labels": {}, "valid": {}, "split": {}}
    frame = Image.fromarray(_frame())
    for rec, (split, n) in recordings.items():
        d = root / rec
        (d / "frames").mkdir(parents=True, exist_ok=True)
        names = [f"{k:05d}.jpg" for k in range(n)]
        for name in names:
            frame.save(d / "frames" / name, quality=95)
        bad = set(invalid.get(rec, []))

        def boxes(box: tuple, bad_frames: set = frozenset(), n: int = n) -> dict:
            x, y, w, h = box
            return {"H": [float(h)] * n, "W": [float(w)] * n, "X": [float(x)] * n,
                    "Y": [float(y)] * n,
                    "IsValid": [0 if k in bad_frames else 1 for k in range(n)]}

        xcam = [round(-3.0 + 0.5 * k + int(rec) * 0.01, 3) for k in range(n)]
        ycam = [round(-2.0 - 0.25 * k, 3) for k in range(n)]
        files = {
            "appleFace.json": boxes(FACE),
            "appleLeftEye.json": boxes(LEFT, bad),
            "appleRightEye.json": boxes(RIGHT),
            "faceGrid.json": boxes(GRID_BOX, bad),  # = intersection of the apple IsValids
            "dotInfo.json": {"DotNum": list(range(n)), "XPts": [100.0] * n,
                             "YPts": [200.0] * n, "XCam": xcam, "YCam": ycam,
                             "Time": [0.1 * k for k in range(n)]},
            "frames.json": names,
            "info.json": {"TotalFrames": n, "NumFaceDetections": n,
                          "NumEyeDetections": n - len(bad), "Dataset": split,
                          "DeviceName": "iPhone 6"},
            "screen.json": {"H": [568.0] * n, "W": [320.0] * n, "Orientation": [1] * n},
        }
        for fname, obj in files.items():
            (d / fname).write_text(json.dumps(obj))
        valid = [k for k in range(n) if k not in bad]
        truth["labels"][rec] = np.array([[xcam[k], ycam[k]] for k in valid], np.float32)
        truth["valid"][rec] = valid
        truth["split"][rec] = split
    return truth


def corrupt_jpeg(path: Path, how: str = "garbage") -> None:
    """Break a JPEG: `garbage` (not an image at all) or `truncated` (first 40% kept)."""
    data = path.read_bytes()
    path.write_bytes(b"this is not a jpeg" * 4 if how == "garbage" else data[: len(data) * 2 // 5])
