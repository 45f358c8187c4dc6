"""Real-dataset readers on fixtures written in each dataset's published on-disk format
(see tests/dataset_fixtures.py): shapes, label conventions, mirroring, subject splits,
lazy reading, the prepared cache, and a one-line error for every kind of bad input."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import dataset_fixtures as fx
from nas.errors import UserError
from nas.gaze.datasets import (LazyArray, available_sources, leave_one_subject_out,
                               open_dataset, register_source)
from nas.gaze.datasets.convert import (gaze_vectors_to_pitchyaw, head_rotvec_to_pitchyaw,
                                       rodrigues)

ROOT = Path(__file__).resolve().parents[1]


def _needs(*modules: str) -> None:
    for m in modules:
        pytest.importorskip(m, reason=f"{m} is needed to write / read this dataset format")


@pytest.fixture
def mpii(tmp_path):
    _needs("scipy.io")
    return fx.mpiigaze(tmp_path / "MPIIGaze")


@pytest.fixture
def facegaze(tmp_path):
    _needs("h5py")
    return fx.mpiifacegaze(tmp_path / "MPIIFaceGaze_normalized")


@pytest.fixture
def xgaze(tmp_path):
    _needs("h5py")
    return fx.ethxgaze(tmp_path / "ETH-XGaze")


@pytest.fixture
def gc(tmp_path):
    _needs("PIL.Image")
    return fx.gazecapture(tmp_path / "GazeCapture")


def _raises(match_source: str | Path, field: str | None, fn, *args, **kwargs) -> UserError:
    """Call; expect a one-line UserError naming the file (and the field)."""
    with pytest.raises(UserError) as ei:
        fn(*args, **kwargs)
    err = ei.value
    assert "\n" not in str(err)
    assert str(match_source) in (err.source or ""), (err.source, str(err))
    if field is not None:
        assert err.field == field, (err.field, str(err))
    return err


# ------------------------------------------------------------------ registry
def test_registry_lists_sources_and_suggests():
    assert {"synthetic", "mpiigaze", "mpiifacegaze", "ethxgaze", "gazecapture",
            "cache"} <= set(available_sources())
    with pytest.raises(UserError, match="did you mean 'mpiigaze'"):
        open_dataset("mpigaze", "/nowhere")


def test_unknown_option_suggests(xgaze):
    err = _raises(xgaze["root"], "sise", open_dataset, "ethxgaze", xgaze["root"], sise=112)
    assert "did you mean 'size'" in str(err)


def test_bad_option_value_names_option(xgaze):
    _raises(xgaze["root"], "size", open_dataset, "ethxgaze", xgaze["root"], size=-3)
    _raises(xgaze["root"], "split", open_dataset, "ethxgaze", xgaze["root"], split="tran")


def test_missing_dataset_folder(tmp_path):
    _raises(tmp_path / "absent", "data.path", open_dataset, "mpiigaze", tmp_path / "absent")


def test_a_new_source_is_one_class():
    from nas.gaze.datasets import registry
    from nas.gaze.datasets.dataset import GazeDataset

    @register_source
    class Toy:
        name, task, needs_path, options = "toy", "pog2d", False, {"n": 3}

        def open(self, path, opts, log):
            n = opts["n"]
            return GazeDataset(name="toy", task="pog2d", root=None,
                               images=np.zeros((n, 4, 4), np.uint8),
                               labels=np.zeros((n, 2), np.float32),
                               subjects=np.arange(n), fingerprint="toy")

    try:
        assert "toy" in available_sources()
        assert len(open_dataset("toy", n=5)) == 5
    finally:
        registry._SOURCES.pop("toy")


def test_missing_dependency_is_one_line(xgaze, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UserError, match=r"needs `pip install gaze-nas\[data\]`"):
        open_dataset("ethxgaze", xgaze["root"])


# ------------------------------------------------------------------ conventions
def test_gaze_vector_round_trip_matches_design():
    rng = np.random.default_rng(0)
    py = rng.uniform([-1.2, -2.5], [1.2, 2.5], size=(200, 2))
    vec = np.stack([fx.gaze_vector(p, y) for p, y in py])
    np.testing.assert_allclose(gaze_vectors_to_pitchyaw(vec), py, atol=1e-6)
    np.testing.assert_allclose(gaze_vectors_to_pitchyaw(vec * 3.0), py, atol=1e-6)  # any length


def test_known_gaze_vectors():
    a = 0.3
    got = gaze_vectors_to_pitchyaw(np.array([
        [0, 0, -1],                     # into the camera
        [0, np.sin(a), -np.cos(a)],     # y down: looking down
        [0, -np.sin(a), -np.cos(a)],    # looking up
        [np.sin(a), 0, -np.cos(a)],     # towards the camera's +x
    ]))
    np.testing.assert_allclose(got, [[0, 0], [-a, 0], [a, 0], [0, -a]], atol=1e-6)
    # DESIGN.md: pitch > 0 looks up (g_y = -sin p < 0), yaw > 0 points towards -x


def test_head_pose_is_the_facing_direction():
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    rng = np.random.default_rng(1)
    rv = rng.normal(0, 0.4, size=(50, 3))
    np.testing.assert_allclose(rodrigues(rv), Rotation.from_rotvec(rv).as_matrix(), atol=1e-9)
    py = head_rotvec_to_pitchyaw(rv)
    facing = -rodrigues(rv)[:, :, 2]  # the head frame's z points into the head
    np.testing.assert_allclose(np.stack([fx.gaze_vector(p, y) for p, y in py]), facing,
                               atol=1e-5)
    np.testing.assert_allclose(head_rotvec_to_pitchyaw(np.zeros((1, 3))), [[0, 0]], atol=1e-7)
    # rotating about x by -0.3 turns the face up (its facing direction gets y < 0)
    np.testing.assert_allclose(head_rotvec_to_pitchyaw(np.array([[-0.3, 0, 0]])), [[0.3, 0]],
                               atol=1e-6)


# ------------------------------------------------------------------ MPIIGaze
def test_mpiigaze_fixture_reads_like_the_real_files(mpii):
    sio = pytest.importorskip("scipy.io")
    m = sio.loadmat(mpii["root"] / "Data/Normalized/p00/day01.mat", struct_as_record=False,
                    squeeze_me=True)
    assert m["data"].left.image.shape == (4, 36, 60) and m["data"].left.image.dtype == np.uint8
    assert m["data"].right.gaze.shape == (4, 3) and m["data"].right.pose.shape == (4, 3)
    assert list(m["filenames"]) == ["0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg"]


def test_mpiigaze_all_frames_both_eyes(mpii):
    ds = open_dataset("mpiigaze", mpii["root"], evaluation_subset=False)
    assert len(ds) == 2 * (4 + 3 + 3) and ds.task == "gaze3d"
    assert ds.images.shape == (20, 36, 60) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.float32 and ds.labels.shape == (20, 2)
    assert ds.head_pose.dtype == np.float32 and ds.head_pose.shape == (20, 2)
    assert set(ds.subjects) == {"p00", "p01"}
    assert not isinstance(ds.images, np.ndarray)  # lazy


def test_mpiigaze_labels_and_right_eye_mirroring(tmp_path):
    _needs("scipy.io")
    look = fx.gaze_vector(0.2, 0.3)
    truth = fx.mpiigaze(tmp_path / "m", persons={"p00": {"day01": 2}}, eval_subset=False,
                        gaze={("p00", "day01", "left", 0): (0.0, 0.0, -1.0),
                              ("p00", "day01", "right", 0): look})
    ds = open_dataset("mpiigaze", truth["root"])
    day = truth["days"][("p00", "day01")]
    # order: left eyes then right eyes
    np.testing.assert_allclose(ds.labels[0], [0, 0], atol=1e-6)
    np.testing.assert_allclose(ds.labels[2], [0.2, -0.3], atol=1e-6)  # mirrored: yaw negated
    np.testing.assert_array_equal(ds.images[0], day["left"]["image"][0])
    np.testing.assert_array_equal(ds.images[2], day["right"]["image"][0][:, ::-1])
    np.testing.assert_array_equal(ds.images[[3, 1]], np.stack(
        [day["right"]["image"][1][:, ::-1], day["left"]["image"][1]]))
    head_r = head_rotvec_to_pitchyaw(day["right"]["pose"][:1])[0]
    np.testing.assert_allclose(ds.head_pose[2], [head_r[0], -head_r[1]], atol=1e-6)
    head_l = head_rotvec_to_pitchyaw(day["left"]["pose"][:1])[0]
    np.testing.assert_allclose(ds.head_pose[0], head_l, atol=1e-6)


def test_mpiigaze_evaluation_subset(mpii):
    ds = open_dataset("mpiigaze", mpii["root"])  # default: on, as the folder exists
    listed = [(pid, *item) for pid, items in mpii["eval"].items() for item in items]
    assert len(ds) == len(listed)
    for i, (pid, day, name, side) in enumerate(listed):  # the list's order
        d = mpii["days"][(pid, day)]
        r = d["filenames"].index(name)
        img = d[side]["image"][r]
        np.testing.assert_array_equal(ds.images[i], img[:, ::-1] if side == "right" else img)
        g = d[side]["gaze"][r] * ((-1, 1, 1) if side == "right" else (1, 1, 1))
        np.testing.assert_allclose(ds.labels[i], gaze_vectors_to_pitchyaw(g[None])[0],
                                   atol=1e-6)
        assert ds.subjects[i] == pid
    assert len(open_dataset("mpiigaze", mpii["root"], evaluation_subset=False)) > len(ds)


def test_mpiigaze_evaluation_subset_required_but_missing(tmp_path):
    _needs("scipy.io")
    t = fx.mpiigaze(tmp_path / "m", eval_subset=False)
    _raises("p00.txt", None, open_dataset, "mpiigaze", t["root"], evaluation_subset=True)
    assert len(open_dataset("mpiigaze", t["root"])) == 20  # auto: no folder, all eyes


def test_mpiigaze_single_frame_day_survives_squeeze(tmp_path):
    _needs("scipy.io")
    t = fx.mpiigaze(tmp_path / "m", persons={"p03": {"day01": 1, "day02": 2}},
                    eval_subset=False)
    ds = open_dataset("mpiigaze", t["root"])
    assert len(ds) == 6
    np.testing.assert_array_equal(ds.images[0], t["days"][("p03", "day01")]["left"]["image"][0])


def test_mpiigaze_bad_inputs(tmp_path):
    sio = pytest.importorskip("scipy.io")
    t = fx.mpiigaze(tmp_path / "m", persons={"p00": {"day01": 2}}, eval_subset=True)
    mat = t["root"] / "Data/Normalized/p00/day01.mat"
    day = t["days"][("p00", "day01")]

    def write(left: dict) -> None:
        sio.savemat(mat, {"data": {"left": left, "right": dict(day["right"])},
                          "filenames": np.array(day["filenames"], dtype=object)})

    write({"image": day["left"]["image"], "pose": day["left"]["pose"]})  # no gaze
    _raises(mat, "data.left.gaze", open_dataset, "mpiigaze", t["root"])
    g = day["left"]["gaze"].copy()
    g[1, 2] = np.nan
    write({**day["left"], "gaze": g})
    err = _raises(mat, "data.left.gaze", open_dataset, "mpiigaze", t["root"])
    assert "NaN" in str(err) and "row 1" in str(err)
    write(dict(day["left"]))
    txt = t["root"] / "Evaluation Subset/sample list for eye image/p00.txt"
    txt.write_text("day01/0001.jpg left\nday01/0009.jpg right\n")
    _raises(txt, "line 2", open_dataset, "mpiigaze", t["root"])
    txt.write_text("day01/0001.jpg up\n")
    _raises(txt, "line 1", open_dataset, "mpiigaze", t["root"])
    txt.write_text("day01/0001.jpg left\n")
    mat.write_bytes(b"MATLAB 5.0 MAT-file garbage" * 10)
    _raises(mat, None, open_dataset, "mpiigaze", t["root"])
    _raises(tmp_path, "Data/Normalized", open_dataset, "mpiigaze", tmp_path)


# ------------------------------------------------------------------ MPIIFaceGaze
def test_mpiifacegaze_matlab_v73_layout(facegaze):
    import h5py

    path = facegaze["root"] / "p00.mat"
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path, "r") as f:
        assert f["Data/data"].shape == (4, 3, 32, 32) and f["Data/label"].shape == (4, 16)
    ds = open_dataset("mpiifacegaze", facegaze["root"])
    assert ds.images.shape == (7, 32, 32, 3) and ds.images.dtype == np.uint8
    got = np.asarray(ds.images[:])
    want = np.concatenate([facegaze["rgb"]["p00"], facegaze["rgb"]["p01"]])
    np.testing.assert_array_equal(got, want)  # transposed back, BGR -> RGB
    assert (got[:, :4, :4] == (255, 0, 0)).all()  # red top-left corner: rows are rows
    lab = np.concatenate([facegaze["labels"]["p00"], facegaze["labels"]["p01"]])
    np.testing.assert_allclose(ds.labels, lab[:, :2], atol=1e-6)
    np.testing.assert_allclose(ds.head_pose, lab[:, 2:4], atol=1e-6)
    assert list(ds.subjects) == ["p00"] * 4 + ["p01"] * 3


def test_mpiifacegaze_resize_and_float_images(tmp_path):
    _needs("h5py")
    t = fx.mpiifacegaze(tmp_path / "f", persons={"p02": 2}, float_images=True)
    ds = open_dataset("mpiifacegaze", t["root"])
    np.testing.assert_allclose(ds.images[:].astype(int), t["rgb"]["p02"].astype(int), atol=1)
    small = open_dataset("mpiifacegaze", t["root"], size=16).images[:]
    want = t["rgb"]["p02"].reshape(2, 16, 2, 16, 2, 3).astype(float).mean(axis=(2, 4))
    assert small.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(small, want, atol=1.01)  # area resize = 2x2 mean


def test_mpiifacegaze_reads_images_only_when_indexed(facegaze, monkeypatch):
    import h5py

    reads = []
    orig = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__",
                        lambda self, key: reads.append(self.name) or orig(self, key))
    ds = open_dataset("mpiifacegaze", facegaze["root"])
    assert "/Data/data" not in reads and "/Data/label" in reads
    ds.images[5]
    assert reads.count("/Data/data") == 1


def test_mpiifacegaze_bad_inputs(facegaze):
    import h5py

    path = facegaze["root"] / "p01.mat"
    with h5py.File(path, "r+") as f:
        lab = f["Data/label"][()]
        lab[2, 1] = np.nan
        f["Data/label"][...] = lab
    err = _raises(path, "Data/label", open_dataset, "mpiifacegaze", facegaze["root"])
    assert "row 2" in str(err)
    with h5py.File(path, "r+") as f:
        del f["Data/label"]
    _raises(path, "Data/label", open_dataset, "mpiifacegaze", facegaze["root"])
    path.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    _raises(path, None, open_dataset, "mpiifacegaze", facegaze["root"])


# ------------------------------------------------------------------ ETH-XGaze
def test_ethxgaze_reads_and_converts(xgaze):
    ds = open_dataset("ethxgaze", xgaze["root"].parent)  # the parent of xgaze_224 works too
    order = ["subject0000", "subject0003", "subject0005"]
    np.testing.assert_array_equal(np.asarray(ds.images[:]),
                                  np.concatenate([xgaze["rgb"][s] for s in order]))
    np.testing.assert_allclose(ds.labels, np.concatenate([xgaze["gaze"][s] for s in order]))
    np.testing.assert_allclose(ds.head_pose, np.concatenate([xgaze["head"][s] for s in order]))
    assert list(ds.subjects) == ["subject0000"] * 3 + ["subject0003"] * 2 + ["subject0005"] * 2
    assert list(ds.official) == ["train"] and len(ds.official["train"]) == 7
    np.testing.assert_array_equal(ds.meta["cam_index"], [0, 1, 2, 0, 1, 0, 1])
    # unsorted and repeated indices across files come back in the asked order
    want = np.stack([xgaze["rgb"]["subject0005"][1], xgaze["rgb"]["subject0000"][0],
                     xgaze["rgb"]["subject0005"][1]])
    np.testing.assert_array_equal(ds.batch([6, 0, 6])[0], want)
    np.testing.assert_array_equal(ds.images[-1], xgaze["rgb"]["subject0005"][1])
    assert ds.images[2:5, 0, 0].shape == (3, 3)


def test_ethxgaze_reads_images_only_when_indexed(xgaze, monkeypatch):
    import h5py

    reads = []
    orig = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__",
                        lambda self, key: reads.append(self.name) or orig(self, key))
    ds = open_dataset("ethxgaze", xgaze["root"])
    assert "/face_patch" not in reads and "/face_gaze" in reads
    ds.batch([0, 4])
    assert "/face_patch" in reads


def test_ethxgaze_unlabeled_test_split(xgaze):
    test = xgaze["root"] / "test" / "subject0001.h5"
    err = _raises(test, "face_gaze", open_dataset, "ethxgaze", xgaze["root"], split="test")
    assert "unlabeled" in str(err)
    ds = open_dataset("ethxgaze", xgaze["root"], split="test", unlabeled=True)
    assert ds.labels is None and not ds.labeled and ds.images.shape == (2, 16, 16, 3)
    _raises(xgaze["root"], "face_gaze", ds.require_labels)
    both = open_dataset("ethxgaze", xgaze["root"], split="all", unlabeled=True)
    assert {len(v) for v in both.official.values()} == {7, 2}
    import h5py

    with h5py.File(test, "r+") as f:
        del f["face_head_pose"]
    assert open_dataset("ethxgaze", xgaze["root"], split="test",
                        unlabeled=True).head_pose is None


def test_ethxgaze_labeled_test_files_open(tmp_path):
    _needs("h5py")
    t = fx.ethxgaze(tmp_path / "e", test_labels=True)
    ds = open_dataset("ethxgaze", t["root"], split="all")
    assert len(ds) == 9 and set(ds.subjects[ds.official["test"]]) == {"subject0001"}


def test_ethxgaze_bad_inputs(xgaze):
    import h5py

    root = xgaze["root"]
    path = root / "train" / "subject0003.h5"
    with h5py.File(path, "r+") as f:
        g = f["face_gaze"][()]
        g[1, 0] = np.nan
        f["face_gaze"][...] = g
    _raises(path, "face_gaze", open_dataset, "ethxgaze", root)
    with h5py.File(path, "r+") as f:
        del f["face_patch"]
    _raises(path, "face_patch", open_dataset, "ethxgaze", root)
    path.unlink()
    err = _raises(path, None, open_dataset, "ethxgaze", root)
    assert "train_test_split.json" in str(err)
    split = json.loads((root / "train_test_split.json").read_text())
    (root / "train_test_split.json").write_text(json.dumps({"train": split["train"]}))
    _raises("train_test_split.json", "test", open_dataset, "ethxgaze", root)
    (root / "train_test_split.json").unlink()
    _raises("train_test_split.json", None, open_dataset, "ethxgaze", root)


def test_ethxgaze_corrupt_chunk_is_a_bad_sample(xgaze, tmp_path):
    import h5py

    from nas.gaze.datasets.prepare import prepare

    path = xgaze["root"] / "train" / "subject0003.h5"
    with h5py.File(path, "r") as f:  # the gzip chunk of row 1 (one row per chunk)
        info = f["face_patch"].id.get_chunk_info_by_coord((1, 0, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    ds = open_dataset("ethxgaze", xgaze["root"])  # labels are fine: it opens
    np.testing.assert_array_equal(ds.images[3], xgaze["rgb"]["subject0003"][0])
    _raises(path, "face_patch", ds.read_images, [4])
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable samples of 7.*subject0003.h5 "
                                         r"row 1"):
        prepare("ethxgaze", xgaze["root"], tmp_path / "c", max_bad_fraction=0.2, log=None)
    cached = open_dataset("cache", tmp_path / "c")
    assert len(cached) == 6 and list(cached.subjects).count("subject0003") == 1


def test_ethxgaze_split_file_mixing_subjects_is_refused(tmp_path):
    _needs("h5py")
    t = fx.ethxgaze(tmp_path / "e", train={"subject0000": 2}, test={"subject0000": 2},
                    test_labels=True)
    _raises(t["root"], "split", open_dataset, "ethxgaze", t["root"], split="all")


# ------------------------------------------------------------------ GazeCapture
def test_gazecapture_inputs_labels_and_split(gc):
    ds = open_dataset("gazecapture", gc["root"])
    assert ds.task == "pog2d" and ds.head_pose is None
    recs = ["00002", "00003", "00005", "00008"]
    assert len(ds) == sum(len(gc["valid"][r]) for r in recs) == 11  # frame 1 of 00002: no eye
    assert set(ds.images) == {"face", "left_eye", "right_eye", "face_grid"}
    assert ds.images["face"].shape == (11, 64, 64, 3)
    assert ds.images["left_eye"].shape == ds.images["right_eye"].shape == (11, 64, 64, 3)
    assert ds.images["face_grid"].shape == (11, 25, 25)
    np.testing.assert_allclose(ds.labels, np.concatenate([gc["labels"][r] for r in recs]))
    assert list(ds.subjects[:3]) == ["00002"] * 3
    off = ds.split_of()
    assert [set(ds.subjects[off[s]]) for s in ("train", "val", "test")] == \
        [{"00002", "00003"}, {"00005"}, {"00008"}]
    imgs, labels = ds.batch([0, 10])
    assert all(v.dtype == np.uint8 for v in imgs.values()) and labels.shape == (2, 2)

    def mean(a: np.ndarray) -> np.ndarray:  # the centre, away from JPEG edge ringing
        h, w = a.shape[:2]
        return a[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3).mean(0)

    np.testing.assert_allclose(mean(imgs["left_eye"][0]), fx.COLORS["left"], atol=25)
    np.testing.assert_allclose(mean(imgs["right_eye"][0]), fx.COLORS["right"], atol=25)
    face = imgs["face"][0]  # the face crop is 32 px: 2 px per output pixel at 64
    np.testing.assert_allclose(face[56:60, 4:60].reshape(-1, 3).mean(0), fx.COLORS["face"],
                               atol=25)
    x, y, w, h = fx.GRID_BOX
    want = np.zeros((25, 25), np.uint8)
    want[y - 1:y - 1 + h, x - 1:x - 1 + w] = 1
    np.testing.assert_array_equal(imgs["face_grid"][1], want)


def test_gazecapture_split_option(gc):
    ds = open_dataset("gazecapture", gc["root"], split="val")
    assert set(ds.subjects) == {"00005"} and len(ds) == 3


def test_gazecapture_crops_repeat_edges(tmp_path):
    from nas.gaze.datasets.imaging import crop_repeat_edge

    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(crop_repeat_edge(img, -1, 1, 3, 3),
                                  [[4, 4, 5], [8, 8, 9], [8, 8, 9]])


def test_gazecapture_corrupt_jpeg_below_threshold_warns(gc):
    bad = gc["root"] / "00003" / "frames" / "00001.jpg"
    fx.corrupt_jpeg(bad, "truncated")
    ds = open_dataset("gazecapture", gc["root"])  # verify="stat": not decoded yet
    i = [ds.describe(k) for k in range(len(ds))].index(str(bad))
    _raises(bad, "frames", ds.read_images, [i])  # a lazy read names the frame
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable frames of 11.*00003/frames/"
                                         r"00001\.jpg"):
        ok = open_dataset("gazecapture", gc["root"], verify="decode", max_bad_fraction=0.1)
    assert len(ok) == 10 and str(bad) not in [ok.describe(k) for k in range(len(ok))]


def test_gazecapture_corrupt_jpeg_above_threshold_errors(gc):
    first = gc["root"] / "00002" / "frames" / "00000.jpg"
    fx.corrupt_jpeg(first, "garbage")
    fx.corrupt_jpeg(gc["root"] / "00005" / "frames" / "00002.jpg", "truncated")
    err = _raises(first, "frames", open_dataset, "gazecapture", gc["root"], verify="decode")
    assert "2 of 11" in str(err) and "max_bad_fraction" in str(err)


def test_gazecapture_missing_frame_is_counted(gc):
    (gc["root"] / "00008" / "frames" / "00001.jpg").unlink()
    with pytest.warns(UserWarning, match="skipped 1 unreadable frames"):
        ds = open_dataset("gazecapture", gc["root"], max_bad_fraction=0.5)
    assert len(ds) == 10
    _raises("00008/frames/00001.jpg", "frames", open_dataset, "gazecapture", gc["root"])


def test_gazecapture_bad_inputs(gc):
    rec = gc["root"] / "00003"
    face = json.loads((rec / "appleFace.json").read_text())
    (rec / "appleFace.json").write_text(json.dumps({k: v for k, v in face.items()
                                                    if k != "IsValid"}))
    _raises(rec / "appleFace.json", "IsValid", open_dataset, "gazecapture", gc["root"])
    (rec / "appleFace.json").write_text(json.dumps({**face, "W": face["W"][:-1]}))
    _raises(rec / "appleFace.json", "W", open_dataset, "gazecapture", gc["root"])
    (rec / "appleFace.json").write_text(json.dumps(face))
    dot = json.loads((rec / "dotInfo.json").read_text())
    dot["XCam"][2] = float("nan")
    (rec / "dotInfo.json").write_text(json.dumps(dot))
    err = _raises(rec / "dotInfo.json", "XCam/YCam", open_dataset, "gazecapture", gc["root"])
    assert "NaN" in str(err)
    (rec / "dotInfo.json").unlink()
    _raises(rec / "dotInfo.json", None, open_dataset, "gazecapture", gc["root"])
    info = json.loads((rec / "info.json").read_text())
    (rec / "info.json").write_text(json.dumps({**info, "Dataset": "training"}))
    _raises(rec / "info.json", "Dataset", open_dataset, "gazecapture", gc["root"])
    (rec / "info.json").write_text("{not json")
    _raises(rec / "info.json", None, open_dataset, "gazecapture", gc["root"])


# ------------------------------------------------------------------ splits
def test_subject_splits_never_share_a_subject(xgaze):
    ds = open_dataset("ethxgaze", xgaze["root"])
    sp = ds.split_of({"val": ["subject0003"], "test": "subject0005"})
    assert set(sp) == {"train", "val", "test"}
    groups = [set(ds.subjects[v]) for v in sp.values()]
    assert groups == [{"subject0000"}, {"subject0003"}, {"subject0005"}]
    assert sorted(np.concatenate(list(sp.values()))) == list(range(len(ds)))
    sub = ds.subset(sp["train"])
    assert isinstance(sub.images, LazyArray) and len(sub) == 3
    np.testing.assert_array_equal(sub.images[1], xgaze["rgb"]["subject0000"][1])
    np.testing.assert_array_equal(sub.labels, ds.labels[:3])
    assert set(sub.subjects[sub.split_of()["train"]]) == {"subject0000"}


def test_leave_one_subject_out(mpii):
    ds = open_dataset("mpiigaze", mpii["root"], evaluation_subset=False)
    folds = list(leave_one_subject_out(ds.subjects))
    assert [s for s, _ in folds] == ["p00", "p01"]
    for s, sp in folds:
        assert set(ds.subjects[sp["test"]]) == {s} and s not in set(ds.subjects[sp["train"]])
    err = _raises(mpii["root"], "held_out", ds.split_of, ["p0"])
    assert "did you mean" in str(err)
    _raises(mpii["root"], "held_out", ds.split_of)  # MPIIGaze has no official split
    _raises(mpii["root"], "held_out", ds.split_of, ["p00", "p01"])  # nothing left


def test_synthetic_source_matches_synthetic_splits():
    from nas.gaze.data import synthetic_splits

    ds = open_dataset("synthetic", n_train=6, n_val=3, seed=1)
    sp = synthetic_splits(6, 3, 1, log=lambda m: None)
    assert ds.fingerprint == sp.fingerprint and ds.images.shape == (9, 36, 60)
    tr, va = ds.split_of()["train"], ds.split_of()["val"]
    np.testing.assert_array_equal(ds.images[tr], sp.train_x)
    np.testing.assert_array_equal(ds.labels[va], sp.val_y)
    assert len(set(ds.subjects)) == 9 and ds.head_pose.shape == (9, 2)


# ------------------------------------------------------------------ laziness, fingerprint
def test_lazy_array_indexing():
    calls = []

    def fetch(idx):
        calls.append(idx.copy())
        return np.repeat(idx.astype(np.uint8)[:, None], 3, axis=1)

    a = LazyArray(10, (3,), np.uint8, fetch)
    assert a.shape == (10, 3) and len(a) == 10 and not calls
    assert a[3].tolist() == [3, 3, 3] and a[-1][0] == 9
    assert a[2:8:2][:, 0].tolist() == [2, 4, 6]
    assert a[np.array([5, 1])][:, 0].tolist() == [5, 1]
    assert a[np.arange(10) % 3 == 0][:, 0].tolist() == [0, 3, 6, 9]
    assert np.asarray(a).shape == (10, 3)
    with pytest.raises(IndexError):
        a[10]


def test_fingerprint_is_stable_and_content_derived(xgaze):
    root = xgaze["root"]
    a = open_dataset("ethxgaze", root).fingerprint
    assert a == open_dataset("ethxgaze", root).fingerprint
    assert a != open_dataset("ethxgaze", root, size=8).fingerprint
    f = root / "train" / "subject0005.h5"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert a != open_dataset("ethxgaze", root).fingerprint


def test_datasets_pickle_for_worker_processes(xgaze, gc, mpii):
    for ds in (open_dataset("ethxgaze", xgaze["root"]), open_dataset("gazecapture", gc["root"]),
               open_dataset("mpiigaze", mpii["root"])):
        want = ds.read_images([1, 0])
        ds.read_images([2])  # handles / caches open before pickling
        back = pickle.loads(pickle.dumps(ds))
        got = back.read_images([1, 0])
        for k in (want if isinstance(want, dict) else {"": None}):
            np.testing.assert_array_equal(got[k] if k else got, want[k] if k else want)


def _fake_cache(folder: Path, n: int, hw: tuple[int, int]) -> None:
    """A prepared cache of n tiny samples, written straight to .npy memmaps."""
    from nas.gaze.datasets.cache import FORMAT, VERSION, cache_fingerprint

    folder.mkdir()
    img = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8,
                                    shape=(n, *hw))
    for a in range(0, n, 50_000):
        img[a:a + 50_000] = (np.arange(a, min(a + 50_000, n)) % 251)[:, None, None]
    img.flush()
    del img
    lab = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.float32,
                                    shape=(n, 2))
    lab[:, 0] = np.arange(n) / n
    lab.flush()
    del lab
    np.save(folder / "subjects.npy", (np.arange(n) // 1000).astype(np.int32))
    (folder / "manifest.json").write_text(json.dumps({
        "format": FORMAT, "version": VERSION, "source": "synthetic", "task": "gaze3d",
        "source_fingerprint": "fake", "fingerprint": cache_fingerprint("fake", []),
        "inputs": {"": {"shape": list(hw), "dtype": "uint8"}}, "labeled": True,
        "head_pose": False, "splits": None, "n": n, "complete": True}))


def test_large_cache_is_memory_mapped_not_loaded(tmp_path):
    n, hw = 200_000, (16, 16)  # 51 MB of images
    _fake_cache(tmp_path / "big", n, hw)
    tracemalloc.start()
    try:
        ds = open_dataset("cache", tmp_path / "big")
        assert isinstance(ds.images, np.memmap) and ds.images.shape == (n, *hw)
        total = 0
        for a in range(0, n, 8192):
            imgs, labels = ds.batch(np.arange(a, min(a + 8192, n)))
            total += int(imgs[:, 0, 0].astype(np.int64).sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == int((np.arange(n) % 251).sum())
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for {n * 256 / 2**20:.0f} MiB of images"
    sub = ds.subset(ds.split_of([0, 1])["test"])
    assert isinstance(sub.images, LazyArray) and len(sub) == 2000


# ------------------------------------------------------------------ prepare / cache
def test_prepare_resumes_after_interruption(xgaze, tmp_path, monkeypatch):
    import nas.gaze.datasets.prepare as prep

    out = tmp_path / "cache"
    writes, reads = [], []
    real_write, real_read = prep._write_chunk, prep._read_chunk

    def dying_write(chunks, c, imgs, kept):
        if len(writes) == 2:
            raise KeyboardInterrupt  # killed while the third chunk was being written
        writes.append(c)
        real_write(chunks, c, imgs, kept)

    monkeypatch.setattr(prep, "_write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare("ethxgaze", xgaze["root"], out, chunk_size=2, log=None)
    (out / "chunks" / ".tmp-000002-99999").mkdir()  # a half-written chunk left by kill -9
    _raises(out, "complete", open_dataset, "cache", out)

    monkeypatch.setattr(prep, "_write_chunk", real_write)
    monkeypatch.setattr(prep, "_read_chunk",
                        lambda ds, idx: reads.append(idx.tolist()) or real_read(ds, idx))
    lines = []
    prep.prepare("ethxgaze", xgaze["root"], out, chunk_size=2, log=lines.append)
    assert reads == [[4, 5], [6]]  # the first two chunks were not read again
    assert any("resuming" in m for m in lines) and any("ETA" in m for m in lines)
    assert not (out / "chunks").exists()

    src, ds = open_dataset("ethxgaze", xgaze["root"]), open_dataset("cache", out)
    assert ds.task == "gaze3d" and len(ds) == 7 and isinstance(ds.images, np.memmap)
    np.testing.assert_array_equal(ds.images, np.asarray(src.images[:]))
    np.testing.assert_array_equal(ds.labels, src.labels)
    np.testing.assert_array_equal(ds.head_pose, src.head_pose)
    np.testing.assert_array_equal(ds.subjects, src.subjects)
    assert ds.official.keys() == src.official.keys()
    assert ds.fingerprint == open_dataset("cache", out).fingerprint
    reads.clear()
    prep.prepare("ethxgaze", xgaze["root"], out, chunk_size=2, log=None)  # already complete
    assert reads == []


def test_prepare_survives_kill_9(xgaze, tmp_path):
    out = tmp_path / "cache"
    script = (
        "import sys, time\n"
        "import nas.gaze.datasets.prepare as p\n"
        "real = p._write_chunk\n"
        "def slow(*a):\n"
        "    real(*a)\n"
        "    time.sleep(0.3)\n"
        "p._write_chunk = slow\n"
        f"p.prepare('ethxgaze', {str(xgaze['root'])!r}, {str(out)!r}, chunk_size=1, log=None)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                done = json.loads((out / "manifest.json").read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = {}
            if len(done) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and 2 <= len(manifest["done"]) < 7
    import nas.gaze.datasets.prepare as prep

    prep.prepare("ethxgaze", xgaze["root"], out, chunk_size=1, log=None)
    ds = open_dataset("cache", out)
    np.testing.assert_array_equal(ds.images,
                                  np.asarray(open_dataset("ethxgaze", xgaze["root"]).images[:]))


def test_prepare_multi_input_skips_corrupt_frames(gc, tmp_path):
    from nas.gaze.datasets.prepare import prepare

    bad = gc["root"] / "00005" / "frames" / "00000.jpg"
    fx.corrupt_jpeg(bad, "garbage")
    out = tmp_path / "gc_cache"
    with pytest.raises(UserError, match="1 of 11 samples"):
        prepare("gazecapture", gc["root"], out, chunk_size=4, log=None)
    _raises(out, "complete", open_dataset, "cache", out)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable samples.*00005/frames"):
        prepare("gazecapture", gc["root"], out, chunk_size=4, log=None,
                max_bad_fraction=0.1)
    ds = open_dataset("cache", out)
    src = open_dataset("gazecapture", gc["root"])
    keep = [i for i in range(len(src)) if src.describe(i) != str(bad)]
    assert len(ds) == 10 and ds.task == "pog2d" and set(ds.images) == set(src.images)
    want = src.read_images(keep)
    for k in ds.images:
        np.testing.assert_array_equal(ds.images[k], want[k])
    np.testing.assert_array_equal(ds.labels, src.labels[keep])
    assert [set(ds.subjects[v]) for v in ds.official.values()] == \
        [{"00002", "00003"}, {"00005"}, {"00008"}]
    assert ds.meta["skipped"][0][0] == str(bad)


def test_prepare_refuses_a_folder_of_other_data(xgaze, tmp_path):
    from nas.gaze.datasets.prepare import prepare

    out = tmp_path / "c"
    prepare("ethxgaze", xgaze["root"], out, log=None)
    _raises(out / "manifest.json", "source_fingerprint", prepare, "ethxgaze", xgaze["root"],
            out, size=8, log=None)
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _raises(other, None, prepare, "ethxgaze", xgaze["root"], other, log=None)
    (out / "manifest.json").write_text("{}")
    _raises(out / "manifest.json", "format", open_dataset, "cache", out)


def test_cli_data_commands(xgaze, tmp_path, capsys):
    from nas.gaze.datasets.commands import add_data_commands

    parser = argparse.ArgumentParser(prog="gaze-nas")
    add_data_commands(parser.add_subparsers(dest="cmd", required=True))
    out = tmp_path / "c"
    a = parser.parse_args(["data", "prepare", "ethxgaze", str(xgaze["root"]), "--out", str(out),
                           "--opt", "size=8", "--chunk-size", "3"])
    assert a.fn(a) == 0
    assert open_dataset("cache", out).images.shape == (7, 8, 8, 3)
    err = capsys.readouterr().err
    assert "ETA" in err and "wrote 7 samples" in err
    a = parser.parse_args(["data", "info", "cache", str(out)])
    assert a.fn(a) == 0 and "7 samples" in capsys.readouterr().out
    a = parser.parse_args(["data", "sources"])
    assert a.fn(a) == 0 and "gazecapture" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "prepare", "ethxgaze", "x", "--out", "y", "--opt", "nokey"])
