"""The task registry: metrics and units against hand-computed values."""

import numpy as np
import pytest

from nas.errors import UserError
from nas.evaluation import gaze_error
from nas.gaze.tasks import TASKS, get_task


def test_gaze3d_error_is_the_angle_between_gaze_vectors():
    # yaw 0 vs yaw 10 degrees at pitch 0: exactly 10 degrees apart
    pred = np.array([[0.0, 0.0]])
    true = np.array([[0.0, np.radians(10.0)]])
    assert get_task("gaze3d").error(pred, true) == pytest.approx(10.0, abs=1e-9)
    assert gaze_error(pred, true, "gaze3d") == pytest.approx(10.0, abs=1e-9)
    assert get_task("gaze3d").unit == "deg"


def test_pog2d_error_is_euclidean_cm():
    pred = np.array([[0.0, 0.0], [1.0, 1.0]])
    true = np.array([[3.0, 4.0], [1.0, 1.0]])
    assert gaze_error(pred, true, "pog2d") == pytest.approx(2.5)
    assert get_task("pog2d").unit == "cm"


def test_unknown_task_names_the_field():
    with pytest.raises(UserError, match="task: unknown task 'gaze9d'"):
        get_task("gaze9d")
    assert set(TASKS) >= {"gaze3d", "pog2d"}


def test_batches_equal_whole_array_conversion_and_read_lazily(tmp_path):
    """Per-batch reading (what lets a memory-mapped set larger than RAM train) gives the
    same tensors as converting the whole array; RGB goes channels-first."""
    import torch

    from nas.gaze.data import Batches, to_input
    from nas.models import resize_to

    x = np.random.default_rng(0).integers(0, 255, (300, 36, 60), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    idx = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:64]
    whole = resize_to(to_input(x), (24, 40))[idx]
    assert torch.equal(Batches(mm, resolution=(24, 40))[idx], whole)
    rgb = np.random.default_rng(1).integers(0, 255, (4, 8, 9, 3), dtype=np.uint8)
    t = to_input(rgb)
    assert t.shape == (4, 3, 8, 9)
    assert t[1, 2, 3, 4].item() * 255 == pytest.approx(rgb[1, 3, 4, 2])
