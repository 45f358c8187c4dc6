"""Synthetic eye renderer: determinism, label geometry on pixels, caching."""

import numpy as np
import pytest

from nas.gaze.synthetic import (
    RenderConfig,
    histeq,
    load_or_render,
    render_dataset,
    render_sample,
)

CFG = RenderConfig()
D = np.radians


def _clean(seed: int, eye_gaze) -> tuple[np.ndarray, dict]:
    """Clean render of one subject (same rng seed) with fixed gaze, head at 0."""
    im, _, _, info = render_sample(np.random.default_rng(seed), CFG, clean=True,
                                   eye_gaze=eye_gaze, head=(0.0, 0.0))
    return im, info


def _dark_centroid(im: np.ndarray, info: dict) -> np.ndarray:
    """(x, y) centroid of the darkest 10% pixels in the box between the eye corners."""
    (x0, y0), (x1, y1) = info["eye_corners_px"]
    ys, xs = np.mgrid[0 : im.shape[0], 0 : im.shape[1]] + 0.5
    box = (xs >= min(x0, x1)) & (xs <= max(x0, x1)) & (np.abs(ys - (y0 + y1) / 2) < 12)
    dark = box & (im <= np.percentile(im[box], 10))
    return np.array([xs[dark].mean(), ys[dark].mean()])


def _iris_mask(seed: int, yaw: float) -> np.ndarray:
    """Iris pixels at `yaw`, segmented from pixels alone.

    With the head fixed the sclera, lids and skin do not depend on the eye
    yaw, so a pixel that differs both from the render at yaw - 50 deg and
    from the one at yaw + 50 deg (whose irises do not overlap) is iris.
    """
    im = _clean(seed, (0.0, D(yaw)))[0].astype(int)
    a = _clean(seed, (0.0, D(yaw - 50)))[0].astype(int)
    b = _clean(seed, (0.0, D(yaw + 50)))[0].astype(int)
    return (np.abs(im - a) > 8) & (np.abs(im - b) > 8)


def _extent(mask: np.ndarray) -> tuple[int, int]:
    """(width, height) in px of the bounding box of a mask."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    return int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1


# ------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_workers_agree():
    a = render_dataset(16, seed=7)
    b = render_dataset(16, seed=7)
    c = render_dataset(16, seed=7, workers=2)
    for k in ("images", "gaze", "head"):
        assert a[k].tobytes() == b[k].tobytes()
        assert a[k].tobytes() == c[k].tobytes()
    d = render_dataset(16, seed=8)
    assert a["images"].tobytes() != d["images"].tobytes()
    assert not np.array_equal(a["gaze"], d["gaze"])


def test_sample_depends_only_on_seed_and_index():
    calls: list[tuple[int, int]] = []
    full = render_dataset(6, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (6, 6)
    im, g, h, _ = render_sample(np.random.default_rng([3, 4]), CFG)
    assert np.array_equal(full["images"][4], im)
    assert np.array_equal(full["gaze"][4], g) and np.array_equal(full["head"][4], h)


# ---------------------------------------------------------- label geometry


@pytest.mark.parametrize("seed", range(4))
def test_yaw_moves_iris_left_and_pitch_moves_it_up(seed):
    im_l, info_l = _clean(seed, (0.0, D(25)))  # yaw > 0 -> g_x < 0 -> image left
    im_r, info_r = _clean(seed, (0.0, D(-25)))
    assert info_l["iris_center_px"][0] < info_r["iris_center_px"][0] - 5
    assert _dark_centroid(im_l, info_l)[0] < _dark_centroid(im_r, info_r)[0] - 2

    im_u, info_u = _clean(seed, (D(20), 0.0))  # pitch > 0 looks up -> smaller row
    im_d, info_d = _clean(seed, (D(-20), 0.0))
    assert info_u["iris_center_px"][1] < info_d["iris_center_px"][1] - 5
    assert _dark_centroid(im_u, info_u)[1] < _dark_centroid(im_d, info_d)[1] - 2


def test_labels_follow_head_and_eye_composition():
    _, g, h, info = render_sample(np.random.default_rng(0), CFG, clean=True,
                                  eye_gaze=(D(10), D(-15)), head=(0.0, 0.0))
    np.testing.assert_allclose(g, D([10, -15]), atol=1e-6)
    np.testing.assert_allclose(h, 0, atol=0)
    # with eye-in-head gaze 0 the gaze label is the head direction
    _, g, h, _ = render_sample(np.random.default_rng(0), CFG, eye_gaze=(0.0, 0.0),
                               head=(D(12), D(30)))
    np.testing.assert_allclose(g, h, atol=1e-6)


def test_head_pose_changes_eye_shape_not_just_label():
    corners = {}
    for name, head in (("front", (0.0, 0.0)), ("turned", (0.0, D(40))), ("down", (D(-20), 0.0))):
        _, _, _, info = render_sample(np.random.default_rng(2), CFG, clean=True,
                                      eye_gaze=(0.0, 0.0), head=head)
        corners[name] = info["eye_corners_px"]
    width = {k: np.linalg.norm(c[1] - c[0]) for k, c in corners.items()}
    assert width["turned"] < 0.85 * width["front"]  # foreshortened by head yaw
    assert corners["down"][:, 1].mean() > corners["front"][:, 1].mean() + 0.5  # lids shift


def test_clean_and_noisy_share_labels():
    a = render_sample(np.random.default_rng(9), CFG, clean=True)
    b = render_sample(np.random.default_rng(9), CFG, clean=False)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[0], b[0])


@pytest.mark.parametrize("seed", range(3))
def test_limbus_narrows_with_yaw(seed):
    extents = [_clean(seed, (0.0, D(yaw)))[1]["limbus_extent_px"] for yaw in (0, 20, 40)]
    assert extents[0][0] > extents[1][0] > extents[2][0]
    assert extents[2][0] / extents[0][0] == pytest.approx(np.cos(D(40)), rel=0.05)
    assert extents[2][1] == pytest.approx(extents[0][1], abs=0.5)  # yaw keeps the height
    # and on pixels, for both yaw signs (the visible height is bounded by the lids)
    for sign in (1, -1):
        w0, w20, w40 = (_extent(_iris_mask(seed, sign * y))[0] for y in (0, 20, 40))
        assert w0 > w20 > w40 and w0 - w40 >= 3


# ------------------------------------------------------- ranges and pixels


def test_shapes_dtypes_ranges():
    data = render_dataset(48, seed=1)
    assert data["images"].shape == (48, 36, 60) and data["images"].dtype == np.uint8
    assert data["gaze"].shape == (48, 2) and data["gaze"].dtype == np.float32
    assert data["head"].shape == (48, 2) and data["head"].dtype == np.float32
    assert np.all(np.abs(np.degrees(data["gaze"][:, 0])) <= CFG.max_label_pitch_deg + 1e-3)
    assert np.all(np.abs(np.degrees(data["gaze"][:, 1])) <= CFG.max_label_yaw_deg + 1e-3)
    assert np.all(np.abs(np.degrees(data["head"][:, 0])) <= CFG.head_pitch_deg + 1e-3)
    assert np.all(np.abs(np.degrees(data["head"][:, 1])) <= CFG.head_yaw_deg + 1e-3)
    assert data["gaze"].std(0).min() > D(8)  # labels actually vary
    for im in data["images"]:
        assert im.std() > 10
        assert int(im.min()) <= 15 and int(im.max()) >= 240  # histeq spans 0..255


def test_other_size_and_supersample():
    cfg = RenderConfig(size=(18, 30), supersample=2)
    im, g, h, info = render_sample(np.random.default_rng(0), cfg)
    assert im.shape == (18, 30) and im.dtype == np.uint8
    assert cfg.fingerprint() != CFG.fingerprint()
    assert RenderConfig().fingerprint() == CFG.fingerprint()


def test_histeq_spreads_values():
    im = (np.arange(36 * 60).reshape(36, 60) % 40 + 100).astype(np.uint8)
    out = histeq(im)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0, :40].astype(int)) > 0)  # monotone mapping
    flat = np.full((4, 4), 7, np.uint8)
    assert np.array_equal(histeq(flat), flat)


# ------------------------------------------------------------------- cache


def test_load_or_render_caches_and_recovers(tmp_path):
    cfg = RenderConfig()
    logs: list[str] = []
    first = load_or_render(tmp_path, 8, 5, cfg, log=logs.append)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name == f"synth_{cfg.fingerprint()}_5_8.npz"
    assert any("rendered" in m for m in logs)

    logs.clear()
    second = load_or_render(tmp_path, 8, 5, cfg, log=logs.append)
    assert any("loaded" in m for m in logs) and not any("rendering" in m for m in logs)
    for k in first:
        assert np.array_equal(first[k], second[k])

    files[0].write_bytes(b"not an npz at all")
    logs.clear()
    third = load_or_render(tmp_path, 8, 5, cfg, log=logs.append)
    assert any("corrupt" in m for m in logs)
    assert np.array_equal(third["images"], first["images"])

    np.savez(files[0], images=np.zeros((3, 36, 60), np.uint8))  # wrong keys/shapes
    logs.clear()
    fourth = load_or_render(tmp_path, 8, 5, cfg, log=logs.append)
    assert any("re-rendering" in m for m in logs)
    assert np.array_equal(fourth["gaze"], first["gaze"])
    assert [p.name for p in tmp_path.iterdir()] == [files[0].name]  # no temp files left
