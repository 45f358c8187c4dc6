"""Label-distribution presets of the eye renderer: `uniform` unchanged byte for byte,
`mpiigaze` matching MPIIGaze's published gaze range, images agreeing with labels, and the
`labels` option reaching users (validated, fingerprinted)."""

import copy
import hashlib

import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG

import nas.gaze.synthetic as synth
from nas.cli import main
from nas.errors import UserError
from nas.gaze.data import splits_from
from nas.gaze.datasets import open_dataset
from nas.gaze.geometry import pitchyaw_to_vector
from nas.gaze.synthetic import (
    IRIS_DEPTH,
    NOMINAL_EYE_WIDTH,
    RenderConfig,
    ScreenSetup,
    load_or_render,
    render_dataset,
    render_sample,
    sample_labels,
)

MPII = RenderConfig(labels="mpiigaze")
# Recorded from the renderer before label presets existed (commit 2a28243): the default
# must keep rendering these bytes, under this cache fingerprint.
BEFORE_FINGERPRINT = "14439620e1d2546d"
BEFORE_SHA256 = "0b0aad86c3107589a8b4166140bf159bf081a797408d575cc77bf64a08d06844"
# MPIIGaze's published normalized gaze range (TPAMI 2017), in this project's convention
# (pitch = asin(-y): looking down is negative); see nas.gaze.synthetic.LABEL_PRESETS.
PITCH_RANGE, YAW_RANGE = (-20.0, 1.5), (-18.0, 18.0)


def _digest(data: dict) -> str:
    h = hashlib.sha256()
    for k in ("images", "gaze", "head"):
        h.update(data[k].tobytes())
    return h.hexdigest()


# ------------------------------------------------------------- uniform: unchanged


def test_uniform_preset_renders_what_it_rendered_before():
    for cfg in (RenderConfig(), RenderConfig(labels="uniform")):
        assert cfg.fingerprint() == BEFORE_FINGERPRINT
        assert _digest(render_dataset(24, seed=11, cfg=cfg)) == BEFORE_SHA256


# ------------------------------------------------------------ mpiigaze: statistics


def test_mpiigaze_labels_match_the_published_range():
    gaze, head = (np.degrees(a) for a in sample_labels(2000, seed=3, cfg=MPII))
    pitch, yaw = gaze[:, 0], gaze[:, 1]
    # a uniform fill of the published range: pitch -9.25 +- 6.2, yaw 0 +- 10.4
    assert -12.0 < pitch.mean() < -7.0 and 3.5 < pitch.std() < 8.0
    assert abs(yaw.mean()) < 1.5 and 7.0 < yaw.std() < 12.5
    assert (pitch < 0).mean() > 0.99  # the screen is below the camera: looking down
    inside = ((pitch >= PITCH_RANGE[0]) & (pitch <= PITCH_RANGE[1])
              & (yaw >= YAW_RANGE[0]) & (yaw <= YAW_RANGE[1]))
    assert inside.mean() > 0.95
    assert head[:, 0].mean() < -5.0 and abs(head[:, 1].mean()) < 1.5  # facing the screen
    assert 3.0 < head[:, 0].std() < 10.0 and 4.0 < head[:, 1].std() < 12.0

    u_gaze, _ = (np.degrees(a) for a in sample_labels(2000, seed=3))
    u_inside = ((u_gaze[:, 0] >= PITCH_RANGE[0]) & (u_gaze[:, 0] <= PITCH_RANGE[1])
                & (np.abs(u_gaze[:, 1]) <= YAW_RANGE[1]))
    assert u_inside.mean() < 0.3 and abs(u_gaze[:, 0].mean()) < 2.0  # what it replaces


def test_sample_labels_are_the_rendered_labels():
    for cfg in (RenderConfig(), MPII):
        data = render_dataset(6, seed=4, cfg=cfg)
        gaze, head = sample_labels(6, seed=4, cfg=cfg)
        assert np.array_equal(gaze, data["gaze"]) and np.array_equal(head, data["head"])


# ------------------------------------------------------- mpiigaze: pixels and labels


def _label_iris_px(cfg: RenderConfig, label: np.ndarray) -> np.ndarray:
    """Where the label alone puts the iris centre in a clean render (eyeball centre at the
    patch centre, no jitter): the projection of the iris-plane centre along the gaze."""
    h, w = cfg.size
    f = cfg.eye_width_frac * w * cfg.eye_distance_mm / NOMINAL_EYE_WIDTH
    q = np.array([0.0, 0.0, cfg.eye_distance_mm]) + IRIS_DEPTH * pitchyaw_to_vector(label)
    return np.array([w / 2, h / 2]) + f * q[:2] / q[2]


def _pupil_px(im: np.ndarray, info: dict) -> np.ndarray:
    """(x, y) centroid of the darkest 3% pixels between the eye corners: the pupil."""
    (x0, y0), (x1, y1) = info["eye_corners_px"]
    ys, xs = np.mgrid[0:im.shape[0], 0:im.shape[1]] + 0.5
    box = (xs >= min(x0, x1)) & (xs <= max(x0, x1)) & (np.abs(ys - (y0 + y1) / 2) < 12)
    dark = box & (im <= np.percentile(im[box], 3))
    return np.array([xs[dark].mean(), ys[dark].mean()])


def test_mpiigaze_images_agree_with_labels():
    labels, pupils = [], []
    for k in range(60):
        rng = np.random.default_rng([5, k])
        im, gaze, head, info = render_sample(rng, MPII, clean=True)
        composed = synth._rot(*head) @ synth._rot(*info["eye_gaze"]) @ [0.0, 0.0, -1.0]
        np.testing.assert_allclose(composed, pitchyaw_to_vector(gaze), atol=1e-6)
        noisy = render_sample(np.random.default_rng([5, k]), MPII)
        assert np.array_equal(noisy[1], gaze) and np.array_equal(noisy[2], head)
        labels.append(gaze)
        pupils.append(_pupil_px(im, info))
    labels, pupils = np.array(labels, float), np.array(pupils)
    dist = np.linalg.norm([_label_iris_px(MPII, g) for g in labels] - pupils, axis=1)
    wrong = np.linalg.norm([_label_iris_px(MPII, g) for g in np.roll(labels, 30, 0)] - pupils,
                           axis=1)
    assert np.median(dist) < 1.5 and np.median(wrong) > 2 * np.median(dist)
    assert np.corrcoef(labels[:, 1], pupils[:, 0])[0, 1] < -0.8  # yaw > 0: image left
    assert np.corrcoef(labels[:, 0], pupils[:, 1])[0, 1] < -0.5  # pitch > 0: image up (lids
    # cover the pupil's top or bottom, and pitch spans only ~5 deg std, so looser)


# ------------------------------------------------------ fingerprints and options


def test_preset_changes_fingerprint_and_cache_name(tmp_path, monkeypatch):
    assert MPII.fingerprint() != RenderConfig().fingerprint()
    load_or_render(tmp_path, 2, 1, RenderConfig(), log=None)
    load_or_render(tmp_path, 2, 1, MPII, log=None)
    assert len(list(tmp_path.glob("synth_*_1_2.npz"))) == 2
    before = MPII.fingerprint()  # the preset's parameters are hashed, not just its name
    monkeypatch.setitem(synth.LABEL_PRESETS, "mpiigaze", ScreenSetup(head_follow=0.5))
    assert MPII.fingerprint() != before
    with pytest.raises(ValueError, match="labels"):
        RenderConfig(labels="laptop")


def test_source_option_and_pipeline_data_use_the_preset(tmp_path):
    uni = open_dataset("synthetic", tmp_path, n_train=6, n_val=3)
    mpii = open_dataset("synthetic", tmp_path, n_train=6, n_val=3, labels="mpiigaze")
    assert uni.fingerprint != mpii.fingerprint and MPII.fingerprint() in mpii.fingerprint
    assert (mpii.labels[:, 0] < 0).all()
    with pytest.raises(UserError, match="labels: expected one of 'uniform', 'mpiigaze'"):
        open_dataset("synthetic", tmp_path, n_train=6, n_val=3, labels="mpiigaz")

    data = {"source": "synthetic", "train": 6, "val": 3, "workers": 1,
            "options": {"labels": "mpiigaze"}}
    splits = splits_from(data, 0, "cfg.yaml", lambda _m: None)
    assert MPII.fingerprint() in splits.fingerprint
    plain = splits_from({**data, "options": {}}, 0, "cfg.yaml", lambda _m: None)
    assert plain.fingerprint != splits.fingerprint
    with pytest.raises(UserError, match="data.options.label.*did you mean 'labels'"):
        splits_from({**data, "options": {"label": "mpiigaze"}}, 0, "cfg.yaml", print)


def test_config_with_unknown_preset_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GAZE_NAS_CACHE", str(tmp_path / "cache"))
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["options"] = {"labels": "mpigaze"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "data.options.labels" in err and "'uniform', 'mpiigaze'" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # before work
