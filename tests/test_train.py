import signal

import numpy as np
import pytest
import torch

import nas.train as train_mod
from nas.errors import UserError
from nas.gaze.data import GazeSplits
from nas.train import TrainConfig, load_supernet, train_supernet


def _splits(n=256, nv=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-0.5, 0.5, (n + nv, 2)).astype(np.float32)
    # images whose brightness encodes the label: learnable, deterministic
    x = (np.clip(0.5 + 0.4 * y[:, :1, None], 0, 1) * 255).astype(np.uint8)
    x = np.broadcast_to(x, (n + nv, 36, 60)).copy()
    return GazeSplits(x[:n], y[:n], x[n:], y[n:], f"toy-{seed}")


CFG = TrainConfig(epochs=2, batch_size=32, warmup_steps=2, threads=1, eval_images=32,
                  checkpoint_every_s=1e9)


def test_resume_mid_epoch_matches_uninterrupted(tiny_space, tmp_path, monkeypatch):
    splits = _splits()
    a = train_supernet(tiny_space, splits, CFG, 0, tmp_path / "a", log=lambda m: None)
    ref, _ = load_supernet(a)

    calls = {"n": 0}
    real = train_mod.F.l1_loss

    def flaky(*args, **kw):
        calls["n"] += 1
        # 8 steps/epoch; 7 losses/step (teacher + 3 children x (KD + ground truth))
        if calls["n"] == 7 * 10 + 1:  # first loss of step 10 = epoch 2, step 2
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: honoured at the step's end
        return real(*args, **kw)

    monkeypatch.setattr(train_mod.F, "l1_loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(tiny_space, splits, CFG, 0, tmp_path / "b", log=lambda m: None)
    ck = train_mod.load_checkpoint(tmp_path / "b" / "train" / "checkpoint.pt")
    assert (ck["epoch"], ck["step"]) == (1, 3)
    monkeypatch.setattr(train_mod.F, "l1_loss", real)
    msgs = []
    b = train_supernet(tiny_space, splits, CFG, 0, tmp_path / "b", log=msgs.append)
    assert any("resuming at epoch 2 step 3" in m for m in msgs)
    got, meta = load_supernet(b)
    for (k, v), (k2, v2) in zip(ref.state_dict().items(), got.state_dict().items()):
        assert k == k2
        assert torch.allclose(v.float(), v2.float(), atol=1e-6), k
    assert len(__import__("json").loads(meta["history"])) == 2


def test_training_reduces_error(tiny_space, tmp_path):
    splits = _splits(n=512, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=32, warmup_steps=5, threads=1, eval_images=64)
    path = train_supernet(tiny_space, splits, cfg, 0, tmp_path, log=lambda m: None)
    hist = __import__("json").loads(load_supernet(path)[1]["history"])
    assert hist[-1]["err_largest"] < hist[0]["err_largest"] or hist[-1]["err_largest"] < 5


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    p = tmp_path / "supernet.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load_supernet(p)
    with pytest.raises(UserError, match="not found"):
        load_supernet(tmp_path / "missing.pt")


def test_nan_labels_rejected():
    s = _splits()
    s.train_y[3, 0] = np.nan
    with pytest.raises(UserError, match="train_y"):
        s.check("data.npz")


def test_feature_distillation_targets_teacher_slices():
    from nas.train import feature_distillation

    t = [torch.randn(4, 24, 10, 16), torch.randn(4, 48, 5, 8)]
    same = [t[0][:, :16].clone(), t[1][:, :32].clone()]  # narrower child, same size
    assert feature_distillation(same, t).item() == pytest.approx(0.0, abs=1e-7)
    small = [torch.nn.functional.adaptive_avg_pool2d(t[0][:, :16], (6, 10)),
             torch.nn.functional.adaptive_avg_pool2d(t[1][:, :32], (3, 5))]
    assert feature_distillation(small, t).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_distillation([x + 1 for x in same], t).item() > 0.1


def test_random_subnets_on_batch_slices(tiny_space, tmp_path, monkeypatch):
    """Each random subnet sees its own slice; largest and smallest see the whole batch."""
    from nas.supernet import Supernet

    seen = []
    real = Supernet.forward

    def spy(self, x, arch, return_features=False):
        if torch.is_grad_enabled():
            seen.append(len(x))
        return real(self, x, arch, return_features)

    monkeypatch.setattr(Supernet, "forward", spy)
    cfg = TrainConfig(epochs=1, batch_size=32, warmup_steps=2, threads=1, eval_images=32,
                      random_subnets=4, random_subnet_images=8, sampling="mixed",
                      feature_kd=0.5)
    train_supernet(tiny_space, _splits(n=64), cfg, 0, tmp_path, log=lambda m: None)
    assert seen[:6] == [32, 32, 8, 8, 8, 8]
    assert len(seen) == 2 * 6  # 2 steps of largest + smallest + 4 random


def test_head_refit_is_the_ridge_fit_and_is_what_gets_exported(tiny_space):
    """The refitted head is the closed-form ridge fit of the pooled features (a fit on the
    training images beats the inherited head there), and evaluate() reports the error of
    exactly the net subnet() returns, i.e. the one exported."""
    from nas.evaluation import SubnetEvaluator
    from nas.supernet import Supernet

    torch.manual_seed(0)
    net = Supernet(tiny_space)
    splits = _splits()
    arch = tiny_space.largest()
    plain = SubnetEvaluator(net, tiny_space, splits, recal_images=128)
    refit = SubnetEvaluator(net, tiny_space, splits, recal_images=128, head_refit_images=256)
    a, b = plain.subnet(arch), refit.subnet(arch)
    assert not torch.equal(a.head.fc.weight, b.head.fc.weight)
    assert torch.equal(a.head.conv.conv.weight, b.head.conv.conv.weight)  # only the fc changes
    x = refit._fit_by_res[tuple(arch.resolution)]
    y = torch.from_numpy(splits.train_y[:256])
    with torch.no_grad():
        mse = [float(((m(x) - y) ** 2).mean()) for m in (a, b)]
    assert mse[1] < mse[0]
    row = refit.evaluate(arch)
    assert row["error_deg"] == pytest.approx(refit.error_of(refit.subnet(arch), arch), abs=1e-4)


def test_device_is_recorded_but_not_part_of_the_recipe(tiny_space):
    """A run moved between CPU and GPU resumes: the fingerprint ignores `device`."""
    from dataclasses import replace

    from nas.train import train_fingerprint

    splits = _splits()
    assert (train_fingerprint(tiny_space, splits, CFG, 0)
            == train_fingerprint(tiny_space, splits, replace(CFG, device="cuda"), 0))
    assert (train_fingerprint(tiny_space, splits, CFG, 0)
            != train_fingerprint(tiny_space, splits, replace(CFG, lr=1e-2), 0))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a CUDA device")
def test_cuda_without_a_gpu_is_a_one_line_error(tiny_space, tmp_path):
    from dataclasses import replace

    with pytest.raises(UserError, match="sees no CUDA device, got cuda") as e:
        train_supernet(tiny_space, _splits(), replace(CFG, device="cuda"), 0, tmp_path,
                       log=lambda m: None)
    assert e.value.field == "train.device"
    assert not (tmp_path / "train" / "checkpoint.pt").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_writes_a_cpu_supernet(tiny_space, tmp_path):
    from dataclasses import replace

    path = train_supernet(tiny_space, _splits(), replace(CFG, device="cuda"), 0, tmp_path,
                          log=lambda m: None)
    net, meta = load_supernet(path)
    assert meta["device"].startswith("cuda")
    assert all(t.device.type == "cpu" for t in net.state_dict().values())


def test_layer_pool_default_keeps_earlier_fingerprints(tiny_space):
    """`layer_pool` and `family_largest` came after supernets were trained: at their
    defaults they are not hashed (the fingerprint of an earlier run is unchanged); other
    values are another recipe."""
    from dataclasses import asdict, replace

    from nas.io import json_hash
    from nas.train import SUPERNET_FORMAT, train_fingerprint

    splits = _splits()
    earlier = {k: v for k, v in asdict(CFG).items()
               if k not in ("device", "layer_pool", "family_largest")}
    assert train_fingerprint(tiny_space, splits, CFG, 0) == json_hash(
        {"space": tiny_space.space_hash(), "data": splits.fingerprint, "cfg": earlier,
         "seed": 0, "version": SUPERNET_FORMAT})
    assert (train_fingerprint(tiny_space, splits, CFG, 0)
            != train_fingerprint(tiny_space, splits, replace(CFG, layer_pool="family"), 0))
    assert (train_fingerprint(tiny_space, splits, CFG, 0)
            != train_fingerprint(tiny_space, splits, replace(CFG, family_largest=True), 0))


def test_family_largest_trains_each_other_familys_top_on_the_full_batch(tiny_space, tmp_path,
                                                                       monkeypatch):
    """With `family_largest`, every step adds one full-batch student: the largest subnet of
    a family other than the teacher's, each such family in turn."""
    from nas.supernet import Supernet
    from nas.train import family_tops

    big = tiny_space.largest()
    tops = family_tops(tiny_space, big)
    teacher = {o.family for st in big.active_ops() for o in st}
    assert len(tops) == len(tiny_space.blocks) - len(teacher) >= 1
    assert all(not teacher & {o.family for st in t.active_ops() for o in st} for t in tops)
    seen = []
    real = Supernet.forward

    def spy(self, x, arch, return_features=False):
        if torch.is_grad_enabled():
            seen.append((arch.arch_id, len(x)))
        return real(self, x, arch, return_features)

    monkeypatch.setattr(Supernet, "forward", spy)
    cfg = TrainConfig(epochs=1, batch_size=16, warmup_steps=2, threads=1, eval_images=16,
                      random_subnets=1, random_subnet_images=4, family_largest=True)
    train_supernet(tiny_space, _splits(n=16 * len(tops)), cfg, 0, tmp_path, log=lambda m: None)
    per_step = [seen[i:i + 4] for i in range(0, len(seen), 4)]
    assert len(per_step) == len(tops)
    assert [s[2] for s in per_step] == [(t.arch_id, 16) for t in tops]


def test_family_layer_pool_balances_families(eye_space):
    """Per-layer draws over ops give MBConv (36 of 52 ops) most layers; drawing the family
    first gives each family about a quarter."""
    from collections import Counter

    def shares(pool):
        rng = np.random.default_rng(0)
        c = Counter(o.family for _ in range(200)
                    for st in eye_space.sample(rng, layer_pool=pool).ops for o in st)
        return {f: n / sum(c.values()) for f, n in c.items()}

    by_op, by_family = shares("op"), shares("family")
    assert by_op["mbconv"] > 0.6 and by_op["resblock"] < 0.05
    assert all(0.2 < s < 0.3 for s in by_family.values()) and len(by_family) == 4
    with pytest.raises(ValueError, match="layer_pool"):
        eye_space.sample(np.random.default_rng(0), layer_pool="any")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a CUDA device")
def test_train_stage_error_names_the_config_file(tmp_path, tiny_config, capsys):
    """`train.device: cuda` is refused when training starts, deep in the pipeline; the one
    line still names the config file, not just the field."""
    import yaml

    from nas.cli import main

    tiny_config["train"]["device"] = "cuda"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(cfg) in err and "train.device" in err and "Traceback" not in err
