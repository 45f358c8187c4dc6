"""Latency LUT: keys, per-key modules, profiling/resume, file validation, fidelity, fit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nas.errors import UserError
from nas.latency import LatencyTable, profile_space, validate_table
from nas.latency.build import export_onnx, module_for_key
from nas.latency.export import export_many
from nas.latency.fit import (apply_correction, fidelity, fit_correction, kendall_tau,
                             kendall_tau_b, loo_predictions)
from nas.latency.gate import Gate, pick_anchors, quiet_level, slowdown
from nas.latency.keys import all_keys as keys_of, arch_keys
from nas.latency.runtime import device_info, make_feed, make_session, measure, summarize
from nas.latency.timing import Attempt, interleave, judge, neighbours, time_keys
from nas.latency.validate import sample_archs
from nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


@pytest.fixture(scope="module")
def tiny() -> SearchSpace:
    return SearchSpace.load(SPACES / "tiny.yaml")


@pytest.fixture(scope="module")
def eye() -> SearchSpace:
    return SearchSpace.load(SPACES / "gaze_eye.yaml")


@pytest.fixture(scope="module")
def profiled(tiny, tmp_path_factory):
    """A table of tiny holding exactly the keys of 6 random archs (those validation samples)."""
    archs = sample_archs(tiny, 6, seed=0)
    keys = sorted({k for a in archs for k in arch_keys(tiny, a)})
    path = tmp_path_factory.mktemp("lut") / "dev.yaml"
    lines: list[str] = []
    table = profile_space(tiny, path, workers=1, rounds=2, keys=keys, log=lines.append,
                          max_wait=2)
    return {"path": path, "archs": archs, "keys": keys, "table": table, "log": lines}


# ---------------------------------------------------------------- keys and modules
@pytest.mark.parametrize("space_name", ["tiny", "eye"])
def test_arch_keys_are_all_in_all_keys(space_name, request):
    space = request.getfixturevalue(space_name)
    all_keys = keys_of(space)
    rng = np.random.default_rng(1)
    for _ in range(50):
        arch = space.sample(rng)
        missing = [k for k in arch_keys(space, arch) if k not in all_keys]
        assert not missing, (arch.to_string(), missing[:3])


def test_default_space_key_count(eye, tiny):
    assert len(keys_of(eye)) == 4271
    assert len(keys_of(tiny)) == 466


@pytest.mark.parametrize("space_name", ["tiny", "eye"])
def test_modules_chain_shapes(space_name, request):
    """Each key's module produces exactly the input the arch's next part expects."""
    space = request.getfixturevalue(space_name)
    all_keys = keys_of(space)
    rng = np.random.default_rng(2)
    for _ in range(3):
        arch = space.sample(rng)
        x = torch.randn(1, space.in_channels, *arch.resolution)
        with torch.no_grad():
            for key in arch_keys(space, arch):
                mod, shape = module_for_key(space, *all_keys[key])
                assert not mod.training
                assert tuple(x.shape) == shape, key
                x = mod(x)
        assert tuple(x.shape) == (1, space.outputs)


def test_module_weights_are_deterministic(tiny):
    kind, spec = next(v for v in keys_of(tiny).values() if v[0] == "layer")
    a, _ = module_for_key(tiny, kind, spec)
    b, _ = module_for_key(tiny, kind, spec)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


def test_export_runs_in_onnxruntime_like_torch(tiny):
    kind, spec = next(v for k, v in keys_of(tiny).items() if k.startswith("mbconv"))
    mod, shape = module_for_key(tiny, kind, spec)
    sess = make_session(export_onnx(mod, shape))
    feed = make_feed(sess)
    (out,) = sess.run(None, feed)
    with torch.no_grad():
        ref = mod(torch.from_numpy(feed["input"])).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_measure_reports_protocol_fields(tiny):
    kind, spec = keys_of(tiny)[next(iter(keys_of(tiny)))]
    sess = make_session(export_onnx(*module_for_key(tiny, kind, spec)))
    out = measure({"m": (sess, make_feed(sess))}, rounds=3, runs_per_round=4, warmup=1)
    e = out["m"]
    assert e["n"] == 12 and e["p50_ms"] > 0 and e["std_ms"] >= 0
    assert e["p50_ms"] <= e["mean_ms"] * 3


def test_device_info_has_meta_fields():
    info = device_info()
    for field in ("device", "cpu_model", "runtime", "runtime_version", "provider", "threads",
                  "batch", "dtype", "opset"):
        assert field in info
    assert info["threads"] == 1 and info["opset"] == 17
    assert device_info("lab-pc")["device"] == "lab-pc"


# ---------------------------------------------------------------- profiling, prediction
def test_profile_saves_and_reloads(profiled, tiny):
    table = LatencyTable.load(profiled["path"])
    assert set(table.entries) == set(profiled["keys"])
    # n counts the quiet runs kept: whole rounds of 5, more when the gate re-timed a chunk
    # because the machine was busy (so not a fixed number under a loaded test run)
    assert all(e["p50_ms"] > 0 and e["n"] >= 5 and e["n"] % 5 == 0
               for e in table.entries.values())
    assert table.meta["device"] and table.meta["complete"] is True
    text = profiled["path"].read_text()
    body = text.split("\nentries:\n")[1].split("\ncorrection:")[0]
    lines = [ln.split(": {")[0].strip() for ln in body.splitlines()]
    assert len(lines) == len(profiled["keys"]) and lines == sorted(lines)  # stable diffs
    assert table.correction == {"a": 1.0, "b": 0.0, "c": 0.0} or table.validation


def test_predict_is_sum_with_default_correction(profiled, tiny):
    table = LatencyTable.load(profiled["path"])
    table.correction = {"a": 1.0, "b": 0.0, "c": 0.0}
    for arch in profiled["archs"][:3]:
        keys = arch_keys(tiny, arch)
        expect = sum(table.entries[k]["p50_ms"] for k in keys)
        assert table.predict(tiny, arch) == pytest.approx(expect)
        assert table.raw_sum(tiny, arch) == (pytest.approx(expect), len(keys))


def test_predict_refuses_missing_keys(profiled, tiny):
    table = LatencyTable.load(profiled["path"])
    rng = np.random.default_rng(123)
    while True:
        arch = tiny.sample(rng)
        miss = table.missing(arch_keys(tiny, arch))
        if miss:
            break
    with pytest.raises(UserError) as exc:
        table.predict(tiny, arch)
    assert miss[0] in str(exc.value) and str(profiled["path"]) in str(exc.value)
    with pytest.raises(UserError, match="space_hash.*gaze-nas profile"):
        table.check_space(tiny)


def test_resume_profiles_nothing_new(profiled, tiny):
    lines: list[str] = []
    table = profile_space(tiny, profiled["path"], workers=1, rounds=2,
                          keys=profiled["keys"], log=lines.append, max_wait=2)
    assert table.stats["measured"] == 0 and table.stats["exported"] == 0
    assert table.stats["already"] == len(profiled["keys"])
    assert any("0 to measure" in ln for ln in lines)
    # the first run exported its keys and the gate's anchors; the cache makes reruns export-free
    first = profiled["table"]
    assert first.stats["exported"] == len(set(profiled["keys"]) | set(pick_anchors(tiny)))
    assert first.meta["gate"]["timings"] >= 1
    assert set(first.meta["anchors"]) == set(pick_anchors(tiny))


def test_resume_adds_only_missing_keys(profiled, tiny, tmp_path):
    path = tmp_path / "dev.yaml"
    path.write_text(profiled["path"].read_text())
    # the ONNX cache lives next to the LUT: a fresh folder has none, so export happens
    extra = next(k for k in keys_of(tiny) if k not in profiled["keys"])
    table = profile_space(tiny, path, workers=1, rounds=1, keys=profiled["keys"] + [extra],
                          log=lambda _: None, max_wait=2)
    assert table.stats["measured"] == 1 and extra in table.entries
    old = LatencyTable.load(profiled["path"]).entries
    assert all(table.entries[k] == old[k] for k in profiled["keys"])


def test_profile_refuses_other_device(profiled, tiny, tmp_path):
    path = tmp_path / "dev.yaml"
    path.write_text(profiled["path"].read_text())
    with pytest.raises(UserError, match="meta.device"):
        profile_space(tiny, path, device="some-phone", keys=profiled["keys"][:1],
                      log=lambda _: None)
    table = LatencyTable.load(path)
    table.meta["cpu_model"] = "Other CPU 9000"
    with pytest.raises(UserError, match="meta.cpu_model"):
        table.check_device(device_info())


def test_profile_rejects_unknown_keys(tiny, tmp_path):
    with pytest.raises(UserError, match="not keys of space"):
        profile_space(tiny, tmp_path / "x.yaml", keys=["nonsense|key"], log=lambda _: None)


def test_parallel_export_matches_in_process(tiny, tmp_path):
    """The worker-pool path writes the same models the in-process path builds."""
    items = list(keys_of(tiny).items())[:24]
    jobs = [(k, kind, spec, str(tmp_path / f"{i}.onnx")) for i, (k, (kind, spec))
            in enumerate(items)]
    export_many(tiny, jobs, workers=2, log=lambda _: None)
    for i, (k, (kind, spec)) in enumerate(items[:3]):
        assert (tmp_path / f"{i}.onnx").read_bytes() == export_onnx(
            *module_for_key(tiny, kind, spec))


# ---------------------------------------------------------------- malformed files
def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


GOOD = {"meta": {"device": "dev"}, "space_hash": ["abc"],
        "entries": {"stem|x": {"p50_ms": 0.1, "mean_ms": 0.11, "std_ms": 0.01, "n": 5}}}


def _with(**changes) -> str:
    d = yaml.safe_load(yaml.safe_dump(GOOD))
    for path, value in changes.items():
        node = d
        parts = path.split("__")
        for p in parts[:-1]:
            node = node[p]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return yaml.safe_dump(d)


_DELETE = object()


def test_good_minimal_file_loads(tmp_path):
    t = LatencyTable.load(_write(tmp_path, yaml.safe_dump(GOOD)))
    assert t.entries["stem|x"]["p50_ms"] == 0.1 and t.correction["a"] == 1.0


@pytest.mark.parametrize("text, field", [
    ("meta: {device: dev\nentries: [", None),
    (_with(meta={"cpu_model": "x"}), "meta.device"),
    (_with(meta=_DELETE), "meta"),
    (_with(entries={"stem|x": {"p50_ms": float("nan")}}), "entries.stem|x.p50_ms"),
    (_with(entries={"stem|x": {"p50_ms": -0.5}}), "entries.stem|x.p50_ms"),
    (_with(entries={"stem|x": {"p50_ms": 0}}), "entries.stem|x.p50_ms"),
    (_with(entries={"stem|x": {"p50_ms": "fast"}}), "entries.stem|x.p50_ms"),
    (_with(entries={"stem|x": {"mean_ms": 0.1}}), "entries.stem|x.p50_ms"),
    (_with(entries={"stem|x": {"p50_ms": 0.1, "n": 0}}), "entries.stem|x.n"),
    (_with(entries={"stem|x": 0.1}), "entries.stem|x"),
    (_with(entries=[1, 2]), "entries"),
    (_with(space_hash={"a": 1}), "space_hash"),
    (_with(correction={"a": 1, "b": "x"}), "correction.b"),
    (_with(correction={"a": float("inf")}), "correction.a"),
    (_with(validation={"mape": float("nan")}), "validation.mape"),
    ("- just\n- a list\n", None),
])
def test_malformed_lut_is_a_user_error(tmp_path, text, field):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as exc:
        LatencyTable.load(path)
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)
    if field is not None:
        assert exc.value.field == field, str(exc.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="gaze-nas profile"):
        LatencyTable.load(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- validation
def test_validate_small_k(profiled, tiny):
    table = LatencyTable.load(profiled["path"])
    lines: list[str] = []
    report = validate_table(table, tiny, samples=6, seed=0, rounds=2, log=lines.append,
                            max_wait=2)
    for k in ("mape", "within_5", "within_10", "kendall_tau", "n"):
        assert k in report
    assert report["n"] == 6 and report["gate"]["anchors"] == len(pick_anchors(tiny))
    assert 0 <= report["within_5"] <= report["within_10"] <= 1
    assert report["mape"] >= 0 and -1 <= report["kendall_tau"] <= 1
    assert set(report["in_sample"]) >= {"mape", "within_10"}
    assert set(report["raw_sum"]) >= {"mape", "within_10"}
    assert len(report["per_sample"]) == 6
    assert all(s["measured_ms"] > 0 for s in report["per_sample"])
    saved = LatencyTable.load(profiled["path"])
    assert saved.correction == pytest.approx(table.correction)
    assert saved.validation["n"] == 6
    arch = profiled["archs"][0]
    s, n = saved.raw_sum(tiny, arch)
    c = saved.correction
    assert saved.predict(tiny, arch) == pytest.approx(float(apply_correction(c, s, n)))
    assert saved.predict(tiny, arch) > 0


def test_validate_refuses_table_without_keys(tiny, tmp_path):
    table = LatencyTable(meta={"device": "dev"}, path=tmp_path / "t.yaml")
    with pytest.raises(UserError, match="gaze-nas profile"):
        validate_table(table, tiny, samples=2, log=lambda _: None)


# ---------------------------------------------------------------- correction fit
def test_fit_recovers_known_correction():
    rng = np.random.default_rng(0)
    sums = rng.uniform(0.1, 1.0, 40)
    parts = rng.integers(8, 20, 40).astype(float)
    a, b, c = 1.12, -0.006, 0.015
    measured = a * sums + b * parts + c
    fit = fit_correction(sums, parts, measured, "linear")
    assert fit["a"] == pytest.approx(a) and fit["b"] == pytest.approx(b)
    assert fit["c"] == pytest.approx(c, abs=1e-9)
    loo = loo_predictions(sums, parts, measured, "linear")
    np.testing.assert_allclose(loo, measured, rtol=1e-9)
    noisy = measured * (1 + rng.normal(0, 0.02, 40))
    m_in = fidelity(apply_correction(fit_correction(sums, parts, noisy, "linear"), sums, parts),
                    noisy)
    m_loo = fidelity(loo_predictions(sums, parts, noisy, "linear"), noisy)
    assert m_loo["mape"] >= m_in["mape"]  # cross-validation never flatters
    assert m_loo["within_10"] >= 0.9


def test_power_fit_recovers_a_known_power_law_and_is_the_default():
    rng = np.random.default_rng(1)
    sums = rng.uniform(0.05, 1.0, 40)
    parts = rng.integers(6, 20, 40).astype(float)
    measured = 0.9 * sums ** 1.3 * np.exp(-0.02 * parts)
    fit = fit_correction(sums, parts, measured)
    assert set(fit) == {"scale", "exponent", "per_part"}
    assert fit["scale"] == pytest.approx(0.9) and fit["exponent"] == pytest.approx(1.3)
    assert fit["per_part"] == pytest.approx(-0.02)
    np.testing.assert_allclose(loo_predictions(sums, parts, measured), measured, rtol=1e-9)


# 40 whole subnets validated on this machine's onnxruntime table (runs/qs4, 2026-11-22):
# parts' raw sum (ms), part count, measured (ms); the first is the table's fastest subnet.
QS4_SUMS = [0.0555, 0.0693, 0.0740, 0.0783, 0.1114, 0.1106, 0.1053, 0.1239, 0.1140, 0.1303,
            0.1289, 0.1230, 0.1357, 0.1359, 0.1472, 0.1532, 0.1400, 0.1663, 0.1389, 0.1714,
            0.1638, 0.1857, 0.1412, 0.1829, 0.1930, 0.1876, 0.1886, 0.2511, 0.2230, 0.2085,
            0.1954, 0.2241, 0.2542, 0.2787, 0.2826, 0.2929, 0.3039, 0.2889, 0.3205, 0.4526]
QS4_PARTS = [7, 7, 7, 7, 9, 9, 8, 9, 8, 10, 10, 9, 10, 9, 10, 9, 9, 12, 9, 12, 9, 13, 8, 10,
             11, 11, 13, 15, 10, 13, 12, 12, 15, 15, 15, 15, 15, 15, 15, 15]
QS4_MEASURED = [0.0234, 0.0395, 0.0448, 0.0494, 0.0713, 0.0770, 0.0791, 0.0826, 0.0826,
                0.0883, 0.0921, 0.0958, 0.1048, 0.1110, 0.1119, 0.1154, 0.1176, 0.1203,
                0.1284, 0.1445, 0.1452, 0.1495, 0.1525, 0.1620, 0.1759, 0.1800, 0.1897,
                0.2019, 0.2034, 0.2181, 0.2253, 0.2273, 0.2745, 0.2951, 0.3192, 0.3193,
                0.3261, 0.3438, 0.3796, 0.5904]


def test_power_fit_beats_linear_on_a_real_table():
    """Leave-one-out on real measurements: the linear form, dominated by the big nets'
    absolute errors, predicts the fastest subnet at ~0.3x; the power form's relative errors
    keep it within 25 % and lower the MAPE."""
    lin = loo_predictions(QS4_SUMS, QS4_PARTS, QS4_MEASURED, "linear")
    pw = loo_predictions(QS4_SUMS, QS4_PARTS, QS4_MEASURED)
    m = np.array(QS4_MEASURED)
    assert lin[0] / m[0] < 0.5 and 0.8 < pw[0] / m[0] < 1.25
    assert fidelity(pw, m)["mape"] < fidelity(lin, m)["mape"] - 2
    assert fidelity(pw, m)["max_err"] < 30


def test_loo_catches_an_outlier():
    sums = np.linspace(0.1, 1.0, 10)
    parts = np.full(10, 10.0)  # constant parts: design is rank-deficient, b must drop out
    measured = 2.0 * sums + 0.01
    measured[4] *= 1.5
    fit = fit_correction(sums, parts, measured)
    assert fit["b"] == 0.0 and fit["a"] > 0
    loo = loo_predictions(sums, parts, measured)
    rel = np.abs(loo - measured) / measured
    assert rel[4] > 0.2 and np.median(rel) < 0.1


def test_fit_falls_back_to_scale_with_few_samples():
    fit = fit_correction([1.0, 2.0, 3.0], [5, 6, 7], [2.0, 4.0, 6.0])
    assert fit == {"a": pytest.approx(2.0), "b": 0.0, "c": 0.0}
    assert fit_correction([], [], []) == {"a": 1.0, "b": 0.0, "c": 0.0}


def test_kendall_tau_b_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 30).astype(float)
    y = x + rng.integers(0, 4, 30)
    assert kendall_tau_b(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic)
    assert kendall_tau(x, y) == pytest.approx(kendall_tau_b(x, y))
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 1], [1, 1]))


def test_fidelity_counts_within_bands():
    m = fidelity([1.04, 1.08, 1.2, 0.5], [1.0, 1.0, 1.0, 1.0])
    assert m["within_5"] == 0.25 and m["within_10"] == 0.5 and m["n"] == 4
    assert m["mape"] == pytest.approx((4 + 8 + 20 + 50) / 4)


def test_gate_slowdown_and_quiet_level():
    # quiet level: the slow state (1.5x) and the lucky low tail do not drag it
    assert quiet_level([1.0, 1.02, 1.04, 1.5, 1.6, 1.55, 1.58]) == pytest.approx(1.02)
    assert quiet_level([0.8, 1.0, 1.01, 1.02]) == pytest.approx(0.8)
    ref = {"a": 1.0, "b": 1.0}
    assert slowdown({"a": 1.5, "b": 1.5, "c": 9.0}, ref) == pytest.approx(1.5)
    assert slowdown({}, ref) == 1.0


def test_anchors_are_fixed_and_cover_families(tiny):
    anchors = pick_anchors(tiny)
    assert anchors == pick_anchors(tiny) and len(anchors) == 8
    assert {a.split("|")[0] for a in anchors} == {"mbconv", "ghost", "shuffle", "resblock"}


def test_gate_retimes_slowed_chunks_within_budget(tiny):
    """A reference the anchors can never reach: every round is slowed, chunks are timed
    again at once only while the budget lasts, the keys end unsettled with best-effort
    entries, and a frozen reference never moves."""
    all_keys = keys_of(tiny)
    anchor = pick_anchors(tiny)[0]
    keys = [k for k in all_keys if k.startswith("shuffle")][:3]

    def open_key(k: str) -> tuple:
        sess = make_session(export_onnx(*module_for_key(tiny, *all_keys[k])))
        return sess, make_feed(sess)

    gate = Gate({anchor: open_key(anchor)}, {anchor: 1e-6}, budget_s=0.3, frozen=True)
    lines: list[str] = []
    entries, stats = time_keys(keys, gate, open_key, rounds=2, chunk=8, log=lines.append,
                               max_passes=2)
    assert set(entries) == set(keys) and all(e["p50_ms"] > 0 for e in entries.values())
    assert stats["unsettled"] == 3 and stats["passes"] == 2 and stats["quiet_round_share"] == 0
    assert stats["timings"] > 2 and 0.3 <= gate.spent_s < 2.0
    assert stats["anchor_speed_best"] > 100 and stats["slowed_timings"] == stats["timings"]
    assert gate.ref == {anchor: 1e-6}
    assert any("budget" in ln for ln in lines)
    broke = Gate({anchor: open_key(anchor)}, {anchor: 1e-6}, budget_s=0, frozen=True)
    stats = time_keys(keys, broke, open_key, rounds=2, chunk=8, log=lines.append,
                      max_passes=2)[1]
    assert stats["timings"] == 2  # no budget: one timing per chunk and pass
    assert any("fewer than" in ln for ln in lines)
    fresh = Gate({anchor: open_key(anchor)}, {})
    fresh.observe({anchor: np.full((5, 5), 0.02)})
    fresh.observe({anchor: np.full((5, 5), 0.03)})  # a slowed chunk does not move the reference
    assert fresh.ref == {anchor: 0.02} and fresh.quiet({anchor: 0.021})
    assert not fresh.quiet({anchor: 0.03})


def test_attempt_uses_only_quiet_rounds():
    """A round counts only when the anchors timed just before and after the model were
    quiet; quiet rounds of several attempts are pooled; without any: best effort."""
    runs = np.array([[1.5] * 5, [1.6] * 5, [1.0, 1.0, 1.1, 1.0, 1.0], [1.02] * 5, [1.5] * 5])
    before = ("a", np.array([3.0, 3.1, 2.0, 2.05, 2.0]))  # round 4 quiet before ...
    after = ("b", np.array([1.5, 1.5, 1.0, 1.0, 1.5]))  # ... but slow after: state flipped
    ref = {"a": 2.0, "b": 1.0}
    att = Attempt(runs, before, after)
    assert att.quiet_rounds(ref, 0.1).tolist() == [False, False, True, True, False]
    entry, n_quiet = judge([att], ref, 0.1)
    assert n_quiet == 2 and entry == summarize(runs[2:4]) and entry["p50_ms"] == 1.0
    slow = Attempt(np.full((5, 5), 0.9), ("a", np.full(5, 3.0)), ("b", np.full(5, 1.5)))
    assert judge([slow], ref, 0.1) == (summarize(np.full((5, 5), 0.9)), 0)
    assert judge([slow, att], ref, 0.1)[1] == 2  # the slowed attempt adds nothing
    assert Attempt(runs).quiet_rounds(ref, 0.1).all()  # no anchors: nothing to judge by


def test_interleave_puts_every_model_between_anchors():
    keys = [f"k{i}" for i in range(11)]
    order = interleave(keys, ["A", "B", "C"])
    assert order[0] == "A" and order[-1] == "C"
    assert sorted(set(order) - {"A", "B", "C"}) == sorted(keys)
    near = neighbours(order, {"A", "B", "C"})
    assert near["k0"] == ("A", "B") and near["k10"] == ("B", "C")
    assert interleave(keys, []) == keys


def test_fit_never_takes_a_negative_fixed_cost():
    """A fit on mid-sized nets with c < 0 predicts near-zero times for the fastest subnets
    (seen on a real table: 0.004 ms for a 0.3 MMAC net); c is a fixed cost, so c >= 0."""
    sums = np.linspace(0.10, 0.25, 20)
    parts = np.linspace(9, 14, 20).round()
    measured = 1.4 * sums - 0.09 + 0.0004 * parts  # what an unconstrained fit would find
    fit = fit_correction(sums, parts, measured, "linear")
    assert fit["c"] >= 0 and fit["a"] > 0
    assert apply_correction(fit, 0.07, 6) > 0.02  # the smallest subnet stays plausible


def test_validation_sample_spans_the_size_range(tiny):
    archs = sample_archs(tiny, 8, seed=0)
    assert tiny.smallest() in archs and tiny.largest() in archs
    assert len({a.arch_id for a in archs}) == 8


def test_validation_always_measures_the_tables_fastest_subnet(tiny_space):
    """Searches seed the subnet the table predicts fastest, so the correction is fitted
    (and judged) with it among the samples, in place of the last random one."""
    from nas.latency.validate import sample_archs, with_table_fastest
    from nas.search.extremes import fastest_arch

    class Table:  # additive per-layer costs, as a LUT's raw sum
        def predict(self, space, arch):
            return sum(0.01 + 0.001 * op.kernel * w
                       for w, ops in zip(arch.widths, arch.active_ops()) for op in ops)

    archs = sample_archs(tiny_space, 8, 0)
    got = with_table_fastest(Table(), tiny_space, archs)
    fast = fastest_arch(tiny_space, lambda a: Table().predict(tiny_space, a))
    assert len(got) == len(archs) and got[-1] == fast
    assert len({a.arch_id for a in got}) == len(got)
