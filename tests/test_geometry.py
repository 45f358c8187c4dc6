"""Gaze angle conventions: round trips, signs and angular error."""

import numpy as np
import pytest
import torch

from nas.gaze.geometry import (
    angular_error_deg,
    angular_error_deg_torch,
    pitchyaw_to_vector,
    vector_to_pitchyaw,
)


def test_vectors_are_unit_and_round_trip():
    rng = np.random.default_rng(0)
    py = np.stack([rng.uniform(-1.5, 1.5, 500), rng.uniform(-3.1, 3.1, 500)], 1)
    v = pitchyaw_to_vector(py)
    assert v.shape == (500, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(vector_to_pitchyaw(v), py, atol=1e-10)
    # vector -> angles -> vector also round trips, for non-unit input too
    w = rng.normal(size=(200, 3)) * 3
    np.testing.assert_allclose(
        pitchyaw_to_vector(vector_to_pitchyaw(w)),
        w / np.linalg.norm(w, axis=1, keepdims=True),
        atol=1e-10,
    )


def test_sign_conventions():
    np.testing.assert_allclose(pitchyaw_to_vector(np.zeros((1, 2))), [[0, 0, -1]], atol=1e-12)
    up = pitchyaw_to_vector(np.array([[0.3, 0.0]]))[0]
    assert up[1] < 0  # pitch > 0 looks up (y is down)
    left = pitchyaw_to_vector(np.array([[0.0, 0.3]]))[0]
    assert left[0] < 0  # yaw > 0 points to negative x
    assert pitchyaw_to_vector(np.array([0.1, 0.2])).shape == (3,)


def test_angular_error_known_pairs():
    a = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.1, -0.2], [0.1, 0.0]])
    b = np.array([[0.0, 0.0], [0.0, np.pi / 2], [np.pi / 2, 0.0], [0.1, -0.2], [-0.1, 0.0]])
    err = angular_error_deg(a, b)
    assert err.shape == (5,)
    np.testing.assert_allclose(err, [0, 90, 90, 0, np.degrees(0.2)], atol=1e-6)
    opposite = angular_error_deg(np.array([[0.0, 0.0]]), np.array([[0.0, np.pi]]))
    assert opposite[0] == pytest.approx(180)


def test_torch_matches_numpy_and_has_gradients():
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.8, 0.8, (64, 2))
    b = rng.uniform(-0.8, 0.8, (64, 2))
    b[:4] = a[:4]  # identical pairs must not give NaN gradients
    ref = angular_error_deg(a, b)
    for dtype, tol in ((torch.float64, 1e-5), (torch.float32, 2e-3)):
        pred = torch.tensor(a, dtype=dtype, requires_grad=True)
        err = angular_error_deg_torch(pred, torch.tensor(b, dtype=dtype))
        assert err.shape == (64,) and err.dtype == dtype
        np.testing.assert_allclose(err.detach().numpy(), ref, atol=tol)
        err.mean().backward()
        assert torch.isfinite(pred.grad).all()
