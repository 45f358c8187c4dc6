"""Every task end to end on embedded data (gaze3d on faces, pog2d) and on a GazeCapture
fixture; the multi-input net through supernet, extraction, LUT keys and ONNX with named
inputs; bad combinations of space and data as one-line errors."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_CONFIG

import dataset_fixtures as fx
from nas.cli import main
from nas.config import check_inputs, load_config
from nas.errors import UserError
from nas.pipeline import load_splits
from nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
POG_INPUTS = ["face", "left_eye", "right_eye", "face_grid"]

TINY_POG = {
    "version": 2, "name": "tiny_pog", "task": "pog2d",
    "input": {"channels": 3, "resolutions": [[24, 24], [16, 16]],
              "inputs": {"face": {"resolutions": [[32, 32], [24, 24]]}, "left_eye": {},
                         "right_eye": {}, "face_grid": {"size": 25}}},
    "stem": {"width": 8, "kernel": 3, "strides": [2], "act": "hswish"},
    "stages": [{"widths": [8, 16], "depths": [1, 2], "stride": 2},
               {"widths": [16, 24], "depths": [1, 2], "stride": 2}],
    "blocks": {"mbconv": {"kernels": [3, 5], "expansions": [3], "se": [False],
                          "acts": ["hswish"]},
               "shuffle": {"kernels": [3]}},
    "head": {"width": 16, "fusion": 32, "act": "hswish", "dropout": 0.0, "outputs": 2},
}
TINY_FACE = {**copy.deepcopy(TINY_POG), "name": "tiny_face", "task": "gaze3d", "version": 1,
             "input": {"channels": 3, "resolutions": [[32, 32], [24, 24]]},
             "head": {"width": 32, "act": "hswish", "dropout": 0.0, "outputs": 2}}


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _config(tmp_path: Path, space: dict, data: dict, **sections) -> Path:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["space"] = str(_write(tmp_path, f"{space['name']}.yaml", space))
    cfg["data"] = {"workers": 1, **data}
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return _write(tmp_path, "run.yaml", cfg)


def _best_and_mean(out: Path, unit: str) -> tuple[float, float, dict]:
    front = json.loads((out / "search" / "pareto.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    return (min(p[f"error_{unit}"] for p in front), manifest[f"mean_gaze_error_{unit}"],
            manifest)


def _json_keys(out: Path) -> set[str]:
    """Every key of every JSON / JSONL file a run wrote, at any depth."""
    keys: set[str] = set()

    def walk(x) -> None:
        if isinstance(x, dict):
            keys.update(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for path in out.rglob("*.json"):
        walk(json.loads(path.read_text()))
    for path in out.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            walk(json.loads(line))
    return keys


def _assert_errors_named(out: Path, unit: str, other: str) -> None:
    """The run's error fields carry the task's unit, never the other task's."""
    key = f"error_{unit}"
    search = out / "search"
    front = json.loads((search / "pareto.json").read_text())
    picks = [b for b in json.loads((search / "best_per_budget.json").read_text())
             if b.get("arch_id")]
    assert front and picks and all(key in p for p in front + picks)
    assert json.loads((search / "summary.json").read_text())["objectives"][0] == key
    assert key in (search / "pareto.csv").read_text().splitlines()[0].split(",")
    card = json.loads(next((out / "export").glob("*/card.json")).read_text())
    assert {key, f"error_inherited_{unit}", f"error_finetuned_{unit}"} <= set(card)
    assert not [k for k in _json_keys(out) if f"_{other}" in k]
    report = (out / "report.md").read_text()
    assert f"error ({unit})" in report and f"({other})" not in report


# ---------------------------------------------------------------------- end to end
def test_synthetic_face_runs_end_to_end_below_the_mean_gaze_error(tmp_path):
    cfg = _config(tmp_path, TINY_FACE, {"source": "synthetic_face", "train": 1024, "val": 128,
                                        "options": {"size": 32}},
                  train={"epochs": 3}, search={"head_refit_images": 512})
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    best, mean, manifest = _best_and_mean(tmp_path / "out", "deg")
    assert manifest["error_unit"] == "deg" and manifest["error_key"] == "error_deg"
    assert best < 0.8 * mean, (best, mean)
    _assert_errors_named(tmp_path / "out", "deg", "cm")


def test_synthetic_pog_runs_end_to_end_in_cm_with_named_inputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    cfg = _config(tmp_path, TINY_POG, {"source": "synthetic_pog", "train": 1024, "val": 128,
                                       "options": {"face_size": 32, "eye_size": 24}},
                  train={"epochs": 3, "batch_size": 32}, search={"head_refit_images": 512})
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    best, mean, manifest = _best_and_mean(out, "cm")
    assert manifest["error_unit"] == "cm" and manifest["error_key"] == "error_cm"
    assert best < 0.85 * mean, (best, mean)  # 96 steps on 1024 samples: learning, not done
    assert "distance" in (out / "report.md").read_text().split("## Best")[0]
    _assert_errors_named(out, "cm", "deg")
    card_path = next((out / "export").glob("*/card.json"))
    card = json.loads(card_path.read_text())
    assert card["output"]["error_unit"] == "cm"
    assert [i["name"] for i in card["input"]] == POG_INPUTS
    sess = ort.InferenceSession(str(card_path.parent / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == POG_INPUTS


def test_gazecapture_fixture_runs_end_to_end_on_a_pog_space(tmp_path):
    fx.gazecapture(tmp_path / "gc", {"00002": ("train", 40), "00003": ("train", 30),
                                     "00005": ("val", 20), "00008": ("test", 4)})
    cfg = _config(tmp_path, TINY_POG, {"source": "gazecapture", "path": "gc", "train": 0,
                                       "val": 0, "options": {"face_size": 32, "eye_size": 24}},
                  train={"batch_size": 16, "epochs": 1},
                  finetune={"batch_size": 16})
    splits = load_splits(load_config(cfg), lambda _m: None)
    assert set(splits.train_x) == set(POG_INPUTS) and len(splits.val_y) == 20
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    best, _, manifest = _best_and_mean(tmp_path / "out", "cm")
    assert np.isfinite(best) and manifest["error_unit"] == "cm"


def test_head_pose_input_fuses_face_and_head_pose_end_to_end(tmp_path):
    """gaze3d with a head-pose input (DMAGaze-style fusion, simplified to concatenation):
    the face runs the searched backbone, the head pose a small MLP; ONNX takes both by
    name."""
    ort = pytest.importorskip("onnxruntime")
    space = {**copy.deepcopy(TINY_FACE), "name": "tiny_face_pose", "version": 2}
    space["input"]["inputs"] = {"face": {}, "head_pose": {}}
    cfg = _config(tmp_path, space, {"source": "synthetic_face", "train": 1024, "val": 128,
                                    "options": {"size": 32}},
                  train={"epochs": 3}, search={"head_refit_images": 512})
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    best, mean, _ = _best_and_mean(out, "deg")
    assert best < 0.8 * mean, (best, mean)
    card_path = next((out / "export").glob("*/card.json"))
    sess = ort.InferenceSession(str(card_path.parent / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["face", "head_pose"]


def test_head_pose_space_on_data_without_head_pose_is_one_line(tmp_path):
    space = {**copy.deepcopy(TINY_FACE), "name": "pose1", "version": 2}
    space["input"] = {"channels": 1, "resolutions": [[36, 60]],
                      "inputs": {"face": {}, "head_pose": {}}}
    cfg = load_config(_config(tmp_path, space, {"source": "synthetic", "train": 512,
                                                "val": 128}))
    with pytest.raises(UserError, match="input.inputs: the space takes head_pose"):
        load_splits(cfg, lambda _m: None)


# ---------------------------------------------------------------------- the net
@pytest.fixture
def pog_space(tmp_path) -> SearchSpace:
    return SearchSpace.load(_write(tmp_path, "tiny_pog.yaml", TINY_POG))


def test_error_keys_carry_the_task_unit():
    from nas.gaze.tasks import get_task

    gaze, pog = get_task("gaze3d"), get_task("pog2d")
    assert (gaze.error_key, pog.error_key) == ("error_deg", "error_cm")
    assert pog.key("error_inherited") == "error_inherited_cm"
    assert gaze.key("error", "inherited") == "error_deg_inherited"
    assert pog.error_label == "distance (cm)"


def test_a_pog_cache_row_without_error_cm_is_evaluated_again(pog_space, tmp_path):
    """A pog2d row written before errors were named by unit holds cm under `error_deg`:
    it is a cache miss (evaluated anew), never read as the error nor a missing-key crash."""
    from nas.evaluation import SubnetEvaluator
    from nas.gaze.data import GazeSplits
    from nas.io import append_jsonl
    from nas.supernet import build_supernet

    rng = np.random.default_rng(0)

    def images(n: int) -> dict:
        return {"face": rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
                "left_eye": rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8),
                "right_eye": rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8),
                "face_grid": (rng.random((n, 25, 25)) > 0.5).astype(np.uint8)}

    labels = rng.normal(0, 5, (16, 2)).astype(np.float32)
    splits = GazeSplits(images(8), labels[:8], images(8), labels[8:], "fp")
    torch.manual_seed(0)
    net = build_supernet(pog_space).eval()
    arch = pog_space.smallest()
    cache = tmp_path / "eval_cache.jsonl"
    append_jsonl(cache, {"arch_id": arch.arch_id, "arch": arch.to_string(), "error_deg": 99.0,
                         "params": 1, "macs": 1, "tag": "t"})
    ev = SubnetEvaluator(net, pog_space, splits, recal_images=8, cache_path=cache,
                         cache_tag="t")
    assert ev.cached(arch) is None
    row = ev.evaluate(arch)
    assert "_reused" not in row and "error_deg" not in row
    assert np.isfinite(row["error_cm"]) and row["error_cm"] != 99.0
    again = SubnetEvaluator(net, pog_space, splits, recal_images=8, cache_path=cache,
                            cache_tag="t")  # the new row is the one read back
    assert again.evaluate(arch)["error_cm"] == row["error_cm"]
    assert again.evaluate(arch)["_reused"]


def _random_input(space, arch, n=4, seed=0):
    from nas.export import random_input
    from nas.models import example_input

    return random_input(example_input(space, arch, n), n, seed)


def test_multi_input_supernet_extracts_the_same_net_and_trains_on_dict_batches(pog_space):
    from nas.supernet import FusionSupernet, build_supernet
    from nas.train import TrainConfig, sandwich_step

    torch.manual_seed(0)
    net = build_supernet(pog_space)
    assert isinstance(net, FusionSupernet)
    net.set_output_stats(np.array([[1.0, -8.0], [-1.0, -4.0]]))
    x = _random_input(pog_space, pog_space.largest(), 8)
    y = torch.randn(8, 2)
    sandwich_step(net.train(), pog_space, x, y, TrainConfig(random_subnets=1),
                  np.random.default_rng(0), pog_space.largest(), pog_space.smallest())
    shared = net.teacher_only_parameters()
    grads = [p.grad.clone() for p in shared]
    assert grads and all(g.abs().sum() > 0 for g in grads)
    net.zero_grad()  # the fusion head and encoders keep the largest subnet's gradient only
    torch.nn.functional.l1_loss(net(x, pog_space.largest()), y).backward()
    assert all(torch.allclose(g, p.grad) for g, p in zip(grads, shared))
    net.eval()
    rng = np.random.default_rng(1)
    for arch in [pog_space.largest(), pog_space.smallest(), pog_space.sample(rng)]:
        x = _random_input(pog_space, arch)
        sub = net.extract(arch).eval()
        assert torch.allclose(sub(x), net(x, arch), atol=1e-5)
        assert float(sub.head.out_shift[1]) == -6.0  # the output stats travel with the net


def test_onnx_export_has_named_inputs_and_matches_torch(pog_space, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from nas.export import export_subnet, load_subnet
    from nas.supernet import build_supernet

    torch.manual_seed(0)
    arch = pog_space.sample(np.random.default_rng(3))
    net = build_supernet(pog_space).extract(arch).eval()
    card = export_subnet(net, pog_space, tmp_path / "exp")
    assert card["onnx"]["max_abs_diff_vs_torch"] <= 1e-4
    sess = ort.InferenceSession(str(tmp_path / "exp" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == POG_INPUTS
    x = _random_input(pog_space, arch, n=3, seed=7)
    feed = {k: v.numpy() for k, v in reversed(list(x.items()))}  # by name, not position
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(sess.run(None, feed)[0] - ref).max() < 1e-4
    again = load_subnet(tmp_path / "exp" / "model.pt")
    with torch.no_grad():
        assert torch.equal(again(x), net(x))


def test_lut_keys_price_each_branch_per_input_and_the_table_sums_them(pog_space):
    from nas.latency.build import module_for_key
    from nas.latency.keys import all_keys, arch_keys
    from nas.latency.table import LatencyTable

    every = all_keys(pog_space)
    rng = np.random.default_rng(0)
    archs = [pog_space.largest(), pog_space.smallest()] + [pog_space.sample(rng)
                                                          for _ in range(20)]
    for arch in archs:
        keys = arch_keys(pog_space, arch)
        assert set(keys) <= set(every)
        n_layers = sum(arch.depths)
        eye_stem = f"stem|cin=3|cout=8|s=2|hw={arch.resolution[0]}x{arch.resolution[1]}"
        assert sum(k.startswith(eye_stem) for k in keys) == 2  # left and right eye
        # 3 image inputs x (stem, layers, feat) + grid MLP + fusion
        assert len(keys) == 3 * (n_layers + 2) + 2
        assert sum(k.startswith("enc|in=625") for k in keys) == 1
        assert keys[-1].startswith("fusion|in=64|width=32|out=2")
    table = LatencyTable(meta={"device": "test"}, space_hashes=[pog_space.space_hash()],
                         entries={k: {"p50_ms": 1.0, "mean_ms": 1.0, "std_ms": 0.0, "n": 1}
                                  for k in every})
    arch = pog_space.largest()
    assert table.raw_sum(pog_space, arch) == (len(arch_keys(pog_space, arch)),) * 2
    for kind in ("feat", "enc", "fusion"):  # the new parts build and run
        key, spec = next((k, s) for k, (kd, s) in every.items() if kd == kind)
        mod, shape = module_for_key(pog_space, kind, spec)
        assert mod(torch.zeros(shape)).shape[0] == 1


def test_batches_and_to_input_handle_named_inputs(pog_space):
    from nas.gaze.data import Batches, to_input

    rng = np.random.default_rng(0)
    images = {"face": rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8),
              "left_eye": rng.integers(0, 255, (10, 24, 24, 3), dtype=np.uint8),
              "right_eye": rng.integers(0, 255, (10, 24, 24, 3), dtype=np.uint8),
              "face_grid": (rng.random((10, 25, 25)) > 0.5).astype(np.uint8)}
    whole = to_input(images, pog_space.input_kinds())
    assert whole["face"].shape == (10, 3, 32, 32)
    assert torch.equal(whole["face_grid"], torch.from_numpy(images["face_grid"]).float())
    idx = torch.tensor([3, 1, 7])
    batch = Batches(images, resolution=(16, 16), space=pog_space)[idx]
    assert batch["face"].shape == (3, 3, 24, 24) and batch["left_eye"].shape == (3, 3, 16, 16)
    assert torch.equal(batch["face_grid"], whole["face_grid"][idx])
    assert len(Batches(images, space=pog_space)) == 10


def test_embedded_renders_are_seeded_cached_and_worker_independent(tmp_path):
    from nas.gaze.datasets import open_dataset

    opts = {"n_train": 6, "n_val": 3, "face_size": 24, "eye_size": 16}
    a = open_dataset("synthetic_pog", tmp_path / "c1", **opts)
    b = open_dataset("synthetic_pog", tmp_path / "c2", workers=2, **opts)
    c = open_dataset("synthetic_pog", tmp_path / "c1", **opts)  # from the cache
    assert a.fingerprint == b.fingerprint == c.fingerprint
    for k in POG_INPUTS:
        assert np.array_equal(a.images[k], b.images[k]) and np.array_equal(a.images[k], c.images[k])
    assert a.labels.shape == (9, 2) and a.task == "pog2d"
    assert set(a.official) == {"train", "val"} and len(a.official["val"]) == 3
    face = open_dataset("synthetic_face", tmp_path / "c1", n_train=4, n_val=2, size=24)
    assert face.images.shape == (6, 24, 24, 3) and face.head_pose.shape == (6, 2)


def test_pog_labels_follow_the_gaze_ray_to_the_screen():
    """The label is where the ray from the eyes along the gaze meets the screen plane z=0,
    in GazeCapture's (XCam, YCam) = (-x, -y); the face grid sits where the face is."""
    from nas.gaze.synthetic_pog import PogConfig, face_grid, head_and_eye

    cfg = PogConfig()
    eyes, target = np.array([2.0, 5.0, 30.0]), np.array([-1.5, 8.0, 0.0])
    _, gaze = head_and_eye(np.random.default_rng(0), cfg, eyes, target, target)
    hit = eyes + gaze * (-eyes[2] / gaze[2])
    assert np.allclose(hit, target)
    left = face_grid(cfg, np.array([-10.0, 0.0, 30.0]))
    right = face_grid(cfg, np.array([10.0, 0.0, 30.0]))
    assert left[:, :12].sum() > left[:, 13:].sum() and right[:, 13:].sum() > right[:, :12].sum()
    near, far = face_grid(cfg, np.array([0, 0, 25.0])), face_grid(cfg, np.array([0, 0, 45.0]))
    assert near.sum() > far.sum()


# ---------------------------------------------------------------------- bad inputs
def _space_error(tmp_path, edit) -> str:
    raw = copy.deepcopy(TINY_POG)
    edit(raw)
    with pytest.raises(UserError) as e:
        SearchSpace.load(_write(tmp_path, "bad.yaml", raw))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("edit, field", [
    (lambda r: r.update(version=1), "version"),
    (lambda r: r["input"]["inputs"].pop("face_grid"), "input.inputs"),
    (lambda r: r["input"]["inputs"].update(nose={}), "input.inputs"),
    (lambda r: r["input"].pop("inputs"), "task"),
    (lambda r: r["input"]["inputs"]["face"].update(resolutions=[[32, 32]]),
     "input.inputs.face.resolutions"),
    (lambda r: r["input"]["inputs"]["face"].update(resolution=[[32, 32]]),
     "input.inputs.face.resolution"),
    (lambda r: r["input"]["inputs"]["face_grid"].update(size=0), "input.inputs.face_grid.size"),
    (lambda r: r["input"]["inputs"].update(left_eye=[24, 24]), "input.inputs.left_eye"),
])
def test_bad_pog_spaces_are_one_line_errors(tmp_path, edit, field):
    assert field in _space_error(tmp_path, edit)


def test_fusion_on_a_single_input_space_is_refused(tmp_path):
    raw = copy.deepcopy(TINY_FACE)
    raw["head"]["fusion"] = 32
    with pytest.raises(UserError, match="head.fusion"):
        SearchSpace.load(_write(tmp_path, "bad.yaml", raw))


@pytest.mark.parametrize("space, data, field", [
    (TINY_POG, {"source": "synthetic", "train": 512, "val": 128}, "input.channels"),
    (TINY_POG, {"source": "synthetic_face", "train": 512, "val": 128}, "task"),
    (TINY_FACE, {"source": "synthetic_pog", "train": 512, "val": 128}, "task"),
])
def test_space_and_data_of_different_tasks_are_one_line_errors(tmp_path, space, data, field):
    cfg = load_config(_config(tmp_path, space, data))
    with pytest.raises(UserError, match=field) as e:
        check_inputs(cfg)
    assert "\n" not in str(e.value)


def test_multi_input_data_on_a_single_input_space_fails_at_the_data_check(tmp_path):
    """Whatever the config check lets through (a source whose task is only known once it is
    open, e.g. a prepared cache), the data's inputs are compared with the space's."""
    cfg = load_config(_config(tmp_path, TINY_POG,
                              {"source": "synthetic_pog", "train": 512, "val": 128,
                               "options": {"face_size": 24, "eye_size": 16}}))
    splits = load_splits(cfg, lambda _m: None)
    face_space = SearchSpace.load(_write(tmp_path, "f.yaml", TINY_FACE))
    with pytest.raises(UserError, match="input.inputs: the data give face, left_eye"):
        splits.check_fits(face_space, "f.yaml")


def test_baselines_are_refused_for_a_multi_input_space(tmp_path):
    cfg = load_config(_config(tmp_path, TINY_POG, {"source": "synthetic_pog", "train": 512,
                                                   "val": 128}, baselines={"enabled": True}))
    with pytest.raises(UserError, match="baselines.enabled"):
        check_inputs(cfg)


def test_shipped_pog_space_and_embedded_configs_load():
    space = SearchSpace.load(ROOT / "search_spaces" / "gaze_pog.yaml")
    assert space.layout.name == "itracker" and space.input_sizes((40, 40))["face"] == (56, 56)
    for name in ("synthetic_face", "synthetic_pog"):
        check_inputs(load_config(ROOT / "experiments" / f"{name}.yaml"))
