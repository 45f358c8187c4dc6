"""`gaze-nas run` end to end on datasets in their published on-disk layouts (fixtures
generated in the exact formats): data.source + data.path, split by subject, lazy images."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY_CONFIG

import dataset_fixtures as fx
from nas.cli import main
from nas.config import load_config
from nas.errors import UserError
from nas.pipeline import load_splits

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, data: dict, space: str | None = None) -> Path:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["name"] = "real"
    cfg["data"] = {**data, "workers": 1}
    if space:
        cfg["space"] = space
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _face_space(tmp_path: Path) -> str:
    raw = yaml.safe_load((ROOT / "search_spaces" / "tiny.yaml").read_text())
    raw["name"] = "tiny_face"
    raw["input"] = {"channels": 3, "resolutions": [[32, 32], [24, 24]]}
    path = tmp_path / "tiny_face.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_mpiigaze_runs_end_to_end_with_a_subject_split(tmp_path, capsys):
    pytest.importorskip("scipy")
    fx.mpiigaze(tmp_path / "MPIIGaze", {"p00": {"day01": 40, "day02": 30}, "p01": {"day01": 30}},
                eval_subset=False)
    cfg = _config(tmp_path, {"source": "mpiigaze", "path": "MPIIGaze", "train": 0, "val": 0})
    splits = load_splits(load_config(cfg), lambda _m: None)
    assert len(splits.train_x) == 140 and len(splits.val_x) == 60  # p01 held out, both eyes
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    front = json.loads((out / "search" / "pareto.json").read_text())
    assert front and all(np.isfinite(p["error_deg"]) for p in front)
    cap = capsys.readouterr()
    assert "validating on subject 'p01'" in cap.out + cap.err


def test_ethxgaze_face_crops_run_on_an_rgb_space(tmp_path):
    pytest.importorskip("h5py")
    fx.ethxgaze(tmp_path / "xgaze", train={"subject0000": 50, "subject0003": 40,
                                           "subject0005": 20}, size=32)
    cfg = _config(tmp_path, {"source": "ethxgaze", "path": "xgaze", "train": 0, "val": 0,
                             "val_subjects": ["subject0005"]}, _face_space(tmp_path))
    splits = load_splits(load_config(cfg), lambda _m: None)
    assert splits.channels == 3 and len(splits.val_x) == 20
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    card = next((tmp_path / "out" / "export").glob("*/card.json"))
    assert json.loads(card.read_text())["input"]["shape"][1] == 3


def test_caps_draw_by_seed_within_the_subject_split(tmp_path):
    pytest.importorskip("scipy")
    fx.mpiigaze(tmp_path / "MPIIGaze", {"p00": {"day01": 100}, "p01": {"day01": 40}},
                eval_subset=False)
    cfg = load_config(_config(tmp_path, {"source": "mpiigaze", "path": "MPIIGaze",
                                         "train": 0, "val": 64}))
    a = load_splits(cfg, lambda _m: None)
    b = load_splits(cfg, lambda _m: None)
    assert len(a.val_x) == 64 and a.fingerprint == b.fingerprint
    assert np.array_equal(np.asarray(a.val_x[:]), np.asarray(b.val_x[:]))


def test_gray_data_on_an_rgb_space_is_one_line(tmp_path):
    pytest.importorskip("scipy")
    fx.mpiigaze(tmp_path / "MPIIGaze", eval_subset=False)
    cfg = load_config(_config(tmp_path, {"source": "mpiigaze", "path": "MPIIGaze",
                                         "train": 0, "val": 0}, _face_space(tmp_path)))
    with pytest.raises(UserError, match="input.channels: the data have 1 channel"):
        load_splits(cfg, lambda _m: None)


@pytest.mark.parametrize("data, field", [
    ({"source": "mpiigaz", "path": "."}, "data.source"),
    ({"source": "mpiigaze"}, "data.path"),
    ({"source": "mpiigaze", "path": "no/such/folder"}, "data.path"),
    ({"source": "synthetic", "train": 0}, "data.train"),
    ({"source": "mpiigaze", "path": ".", "val_subjects": [1.5]}, "data.val_subjects"),
])
def test_bad_data_sections_name_the_field(tmp_path, data, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        load_config(_config(tmp_path, data))


def test_gazecapture_is_refused_by_the_eye_space_with_one_line(tmp_path):
    cfg = load_config(_config(tmp_path, {"source": "gazecapture", "path": "."}))
    from nas.config import check_inputs

    with pytest.raises(UserError, match="task: data.source 'gazecapture' gives pog2d labels"):
        check_inputs(cfg)


@pytest.mark.parametrize("name", ["mpiigaze", "mpiifacegaze", "ethxgaze"])
def test_shipped_dataset_configs_load_once_pointed_at_data(tmp_path, name):
    """experiments/<dataset>.yaml: unedited, a one-line error naming data.path; pointed at a
    folder, it loads and its space suits the source's task."""
    from nas.config import check_inputs

    shipped = ROOT / "experiments" / f"{name}.yaml"
    with pytest.raises(UserError, match="data.path"):
        load_config(shipped)
    raw = yaml.safe_load(shipped.read_text())
    raw["data"]["path"] = str(tmp_path)
    raw["space"] = str(ROOT / "search_spaces" / Path(raw["space"]).name)
    cfg_path = tmp_path / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    check_inputs(load_config(cfg_path))


def test_mpiifacegaze_runs_end_to_end_on_an_rgb_space(tmp_path):
    pytest.importorskip("h5py")
    fx.mpiifacegaze(tmp_path / "MPIIFaceGaze", {"p00": 60, "p01": 50, "p02": 20}, size=32)
    cfg = _config(tmp_path, {"source": "mpiifacegaze", "path": "MPIIFaceGaze", "train": 0,
                             "val": 0}, _face_space(tmp_path))
    splits = load_splits(load_config(cfg), lambda _m: None)
    assert splits.channels == 3 and len(splits.val_x) == 20  # p02 held out (the last)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "search" / "pareto.json").exists()
