"""Any device: measurement backends, incremental profiling, the device bundle (standalone
runner, import, tampered and foreign results), few-shot adaptation, `lut validate --no-fit`
and the `predict(arch)` seam. Small on purpose: the tiny space, a few keys and subnets."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.errors import UserError
from nas.latency import LatencyTable, profile_space, validate_table
from nas.latency import bundle_runner as runner
from nas.latency.adapt import COUNTS, FEATURES, SIZES, fit_adaptation
from nas.latency.backends import (BundleBackend, check_measuring_into, get_backend,
                                  known_backends, register_backend)
from nas.latency.bundle import make_bundle
from nas.latency.keys import all_keys, arch_keys
from nas.latency.predictor import LatencyModel, MacsModel, TableModel, latency_model
from nas.latency.validate import sample_archs
from nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "search_spaces" / "tiny.yaml"
# Imports a bundle runner may not make: it must run where only numpy + onnxruntime exist.
BLOCKER = """
import runpy, sys
for name in ("nas", "torch", "yaml", "scipy", "optuna"):
    sys.modules[name] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def tiny() -> SearchSpace:
    return SearchSpace.load(TINY)


def _plain_env() -> dict[str, str]:
    """A Python that sees only site-packages (numpy, onnxruntime, ...): no gaze-nas, whose
    editable install needs the `site` machinery that `-S` turns off."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": sysconfig.get_paths()["purelib"], "HOME": os.environ.get("HOME", "/")}


def _run_bundle(bundle: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-c", BLOCKER, str(bundle / "run_bundle.py"),
                           "--out", str(out), "--rounds", "2", "--runs-per-round", "3",
                           *extra], cwd=out.parent, env=_plain_env(), capture_output=True,
                          text=True, timeout=120)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _refused(argv: list[str], capsys, *want: str) -> str:
    rc, _, err = _cli(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gaze-nas: error: ")
    for w in want:
        assert w in lines[0], lines[0]
    return lines[0]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundled(tiny, tmp_path_factory):
    """A bundle of the keys of 4 subnets (+ anchors) and those 4 subnets, measured by the
    standalone runner in a Python where gaze-nas is not importable."""
    d = tmp_path_factory.mktemp("bundle")
    archs = sample_archs(tiny, 4, seed=0)
    keys = sorted({k for a in archs for k in arch_keys(tiny, a)})
    manifest = make_bundle(tiny, d / "B", samples=4, seed=0, keys=keys, workers=1,
                           log=lambda _: None)
    proc = _run_bundle(d / "B", d / "results.json")
    return {"dir": d, "bundle": d / "B", "results": d / "results.json", "archs": archs,
            "keys": keys, "manifest": manifest, "proc": proc}


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory) -> Path:
    """A complete reference table of the tiny space (synthetic entries, seeded)."""
    rng = np.random.default_rng(0)
    table = LatencyTable(meta={"device": "ref-dev", "backend": "onnxruntime", "complete": True},
                         space_hashes=[tiny.space_hash()],
                         entries={k: {"p50_ms": round(float(rng.uniform(0.005, 0.2)), 6)}
                                  for k in all_keys(tiny)})
    return table.save(tmp_path_factory.mktemp("ref") / "ref.yaml")


# ---------------------------------------------------------------------- backends
def test_backend_registry(tiny):
    assert {"onnxruntime", "onnxruntime-noopt", "onnxruntime-2t", "torch",
            "bundle"} <= set(known_backends())
    key = next(k for k in all_keys(tiny) if k.startswith("mbconv"))
    kind, spec = all_keys(tiny)[key]
    infos = {}
    for name in ("onnxruntime", "onnxruntime-noopt", "torch"):
        be = get_backend(name)
        info = be.info()
        infos[name] = info
        assert info["backend"] == name and info["device"] and info["threads"] == 1
        sess, feed = be.open_key(tiny, kind, spec)
        sess.run(None, feed)  # what time_runs calls
        sess, feed = be.open_arch(tiny, tiny.smallest().to_string())
        sess.run(None, feed)
    assert infos["torch"]["runtime"] == "torch" and "opset" not in infos["torch"]
    assert infos["onnxruntime-noopt"]["graph_optimization_level"] == "off"
    assert get_backend("onnxruntime-2t").info()["threads"] == 2
    with pytest.raises(UserError, match="unknown backend.*expected one of"):
        get_backend("tpu-magic")
    with pytest.raises(UserError, match="lut bundle"):
        get_backend("bundle").open_key(tiny, kind, spec)
    # a backend is a "module:factory" name, imported when asked for
    register_backend("torch-again", "nas.latency.backends:_torch", "test")
    try:
        assert get_backend("torch-again").name == "torch-again"
    finally:
        from nas.latency import backends

        backends._REGISTRY.pop("torch-again")


def test_profile_is_incremental_and_refuses_mixing(tiny, tmp_path):
    keys = list(all_keys(tiny))[:12]
    path = tmp_path / "torch.yaml"
    first = profile_space(tiny, path, keys=keys[:8], rounds=1, backend="torch",
                          log=lambda _: None, max_wait=1)
    assert first.stats["measured"] == 8 and first.meta["backend"] == "torch"
    again = profile_space(tiny, path, keys=keys, rounds=1, backend="torch",
                          log=lambda _: None, max_wait=1)
    assert again.stats["measured"] == 4 and again.stats["already"] == 8
    assert all(again.entries[k] == first.entries[k] for k in keys[:8])
    # measurements of another backend are never mixed into this table
    with pytest.raises(UserError, match="meta.backend"):
        profile_space(tiny, path, keys=keys[:1] + [list(all_keys(tiny))[20]],
                      backend="onnxruntime", log=lambda _: None)


def test_profile_backend_cli_flag(tiny, tmp_path, capsys):
    _refused(["profile", "--space", TINY, "--out", tmp_path / "t.yaml", "--backend", "gpu9"],
             capsys, "--backend", "expected one of")


# ---------------------------------------------------------------------- bundle
def test_runner_is_standalone_python38(bundled):
    src = (bundled["bundle"] / "run_bundle.py").read_text()
    ast.parse(src, feature_version=(3, 8))
    tree = ast.parse(src)
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"nas", "torch", "yaml", "scipy"}
    # the interpreter the runner ran in cannot import gaze-nas at all
    probe = subprocess.run([sys.executable, "-S", "-c", "import nas"], cwd=bundled["dir"],
                           env=_plain_env(), capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'nas'" in probe.stderr


def test_bundle_round_trip(bundled, tiny, tmp_path, capsys):
    proc = bundled["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "ETA" in proc.stderr and "models" in proc.stderr
    res = json.loads(bundled["results"].read_text())
    assert res["complete"] and res["bundle_id"] == bundled["manifest"]["bundle_id"]
    for f in ("device", "cpu_model", "cores", "platform", "runtime_version", "provider",
              "threads"):
        assert res["device"][f] not in (None, ""), f
    assert len(res["entries"]) == len(bundled["manifest"]["models"])
    out = tmp_path / "dev.yaml"
    rc, stdout, err = _cli(["lut", "import", bundled["results"], "--bundle", bundled["bundle"],
                            "--out", out, "--space", TINY, "--json"], capsys)
    assert rc == 0, err
    rep = json.loads(stdout)
    assert rep["n"] == 4 and set(rep) >= {"mape", "within_5", "within_10", "kendall_tau"}
    table = LatencyTable.load(out)
    assert table.meta["backend"] == "bundle" and table.meta["provider"] == "CPUExecutionProvider"
    assert table.meta["bundles"][0]["bundle_id"] == bundled["manifest"]["bundle_id"]
    assert set(bundled["keys"]) <= set(table.entries)
    assert table.validation["n"] == 4 and len(table.validation["per_sample"]) == 4
    for a in bundled["archs"]:
        assert table.predict(tiny, a) > 0
    # writing the same bundle again keeps it, and its bundle_id
    same = make_bundle(tiny, bundled["bundle"], samples=4, seed=0, keys=bundled["keys"],
                       workers=1, log=lambda _: None)
    assert same["bundle_id"] == bundled["manifest"]["bundle_id"]
    with pytest.raises(UserError, match="--out"):
        make_bundle(tiny, bundled["bundle"], samples=3, seed=0, keys=bundled["keys"],
                    workers=1, log=lambda _: None)
    # resuming a finished run measures nothing; an interrupted one only what is missing
    again = _run_bundle(bundled["bundle"], bundled["results"])
    assert again.returncode == 0 and "(%d done)" % len(res["entries"]) in again.stderr
    part = dict(res, complete=False, entries=dict(list(res["entries"].items())[:-5]))
    part["digest"] = runner.results_digest(part)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(part))
    resumed = _run_bundle(bundled["bundle"], partial)
    assert resumed.returncode == 0, resumed.stderr
    done = json.loads(partial.read_text())
    assert done["complete"] and len(done["entries"]) == len(res["entries"])
    kept = list(res["entries"])[:-5]
    assert all(done["entries"][k] == res["entries"][k] for k in kept
               if k not in bundled["manifest"]["anchors"])
    # an unavailable execution provider: one clear line, nothing written
    bad = _run_bundle(bundled["bundle"], tmp_path / "nnapi.json", "--provider", "nnapi")
    assert bad.returncode == 2 and "available" in bad.stderr
    assert not (tmp_path / "nnapi.json").exists()
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def subnets_bundle(tiny, tmp_path_factory, bundled):
    """A second bundle (whole subnets only, via the CLI) and its runner's results."""
    d = tmp_path_factory.mktemp("bundle2")
    rc = main(["lut", "bundle", "--space", str(TINY), "--out", str(d / "S"), "--samples", "5",
               "--seed", "3", "--subnets-only", "--workers", "1", "--zip"])
    assert rc == 0
    proc = _run_bundle(d / "S", d / "s-results.json")
    assert proc.returncode == 0, proc.stderr
    return {"dir": d, "bundle": d / "S", "results": d / "s-results.json"}


def test_tampered_and_foreign_results_are_refused(bundled, subnets_bundle, tmp_path, capsys):
    out = tmp_path / "t.yaml"
    res = json.loads(bundled["results"].read_text())
    first = next(iter(res["entries"]))
    res["entries"][first]["p50_ms"] *= 0.5
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(res))
    base = ["--bundle", bundled["bundle"], "--out", out]
    _refused(["lut", "import", tampered, *base], capsys, str(tampered), "digest")
    # a genuine results file, of another bundle
    _refused(["lut", "import", subnets_bundle["results"], *base], capsys,
             str(subnets_bundle["results"]), "bundle_id", "another bundle")
    # a bundle file changed after it was written
    copy = tmp_path / "B"
    shutil.copytree(bundled["bundle"], copy)
    model = copy / bundled["manifest"]["models"][0]["file"]
    model.write_bytes(model.read_bytes() + b"\0")
    _refused(["lut", "import", bundled["results"], "--bundle", copy, "--out", out], capsys,
             str(model), "sha256")
    # a manifest edited by hand
    man = json.loads((copy / "manifest.json").read_text())
    shutil.copy(bundled["bundle"] / man["models"][0]["file"], model)
    man["protocol"]["rounds"] = 1
    (copy / "manifest.json").write_text(json.dumps(man))
    _refused(["lut", "import", bundled["results"], "--bundle", copy, "--out", out], capsys,
             "manifest.json", "bundle_id")
    # a space that is not the bundle's
    _refused(["lut", "import", bundled["results"], *base, "--space",
              ROOT / "search_spaces" / "gaze_eye.yaml"], capsys, "space_hash")
    # whole subnets only cannot make a table by themselves
    _refused(["lut", "import", subnets_bundle["results"], "--bundle", subnets_bundle["bundle"],
              "--out", out], capsys, "lut adapt")
    assert not out.exists()


# ---------------------------------------------------------------------- adaptation
def test_adaptation_recovers_a_device_that_is_not_a_scaled_reference(tiny):
    """Synthetic target: 1.7x the reference plus a per-operator overhead; 20 subnets."""
    rng = np.random.default_rng(1)
    keys = list(all_keys(tiny))
    feats = {k: tuple(float(x) for x in np.r_[rng.integers(0, 6, len(COUNTS)),
                                             rng.integers(0, 10**5, len(SIZES))])
             for k in keys}
    calls = {k: sum(feats[k][:len(COUNTS)]) for k in keys}
    macs = {k: feats[k][FEATURES.index("pwconv_macs")] for k in keys}
    ref = LatencyTable(meta={"device": "ref"}, entries={
        k: {"p50_ms": 0.002 + 1e-7 * macs[k] + 3e-4 * calls[k]} for k in keys})
    truth = {k: 1.7 * ref.entries[k]["p50_ms"] + 4e-4 * calls[k] for k in keys}

    def measure(a):
        return sum(truth[k] for k in arch_keys(tiny, a)) + 0.01

    archs = sample_archs(tiny, 20, seed=0)
    model = fit_adaptation(ref, tiny, archs, [measure(a) for a in archs], feats)
    assert set(model.d) == set(FEATURES)
    test = sample_archs(tiny, 30, seed=9)
    from nas.latency.adapt import adapt_table

    table = adapt_table(ref, tiny, archs, [measure(a) for a in archs],
                        {"device": "dev", "backend": "torch"}, feats=feats)
    err = [abs(table.predict(tiny, a) / measure(a) - 1) for a in test]
    assert max(err) < 0.02
    scaled = [abs(model.s * sum(ref.entries[k]["p50_ms"] for k in arch_keys(tiny, a))
                  / measure(a) - 1) for a in test]
    assert np.mean(err) < np.mean(scaled)


def test_adapt_and_validate_no_fit(reference, tiny, tmp_path, capsys):
    out = tmp_path / "adapted.yaml"
    rc, stdout, err = _cli(["lut", "adapt", "--from", reference, "--space", TINY, "--backend",
                            "torch", "--measure", "5", "--rounds", "2", "--out", out, "--json"],
                           capsys)
    assert rc == 0, err
    rep = json.loads(stdout)
    assert rep["n"] == 5 and rep["mape"] >= 0
    table = LatencyTable.load(out)
    ad = table.meta["adapted"]
    assert ad["measured_subnets"] == 5 and ad["reference"]["device"] == "ref-dev"
    assert table.meta["backend"] == "torch" and table.space_hashes == [tiny.space_hash()]
    assert set(table.entries) == set(all_keys(tiny))
    assert all(e["p50_ms"] > 0 for e in table.entries.values())
    assert table.predict(tiny, tiny.sample(np.random.default_rng(4))) > 0
    # the table as it stands, measured with the same backend: nothing written
    before = _sha(out)
    rc, stdout, err = _cli(["lut", "validate", out, "--space", TINY, "--backend", "torch",
                            "--samples", "4", "--rounds", "2", "--no-fit", "--json"], capsys)
    assert rc == 0, err
    rep = json.loads(stdout)
    assert set(rep) == {"mape", "within_5", "within_10", "kendall_tau", "n", "correction"}
    assert rep["n"] == 4 and rep["correction"] == table.correction
    assert _sha(out) == before
    # an adapted table never takes measured entries, and never replaces a measured table
    with pytest.raises(UserError, match="meta.adapted"):
        profile_space(tiny, out, keys=list(all_keys(tiny))[:1], backend="torch",
                      log=lambda _: None)
    _refused(["lut", "adapt", "--from", reference, "--space", TINY, "--backend", "torch",
              "--measure", "5", "--out", reference], capsys, "--out", "measured table")


def test_adapt_from_a_bundle(reference, subnets_bundle, tiny, tmp_path, capsys):
    out = tmp_path / "remote.yaml"
    rc, stdout, err = _cli(["lut", "adapt", "--from", reference, "--bundle",
                            str(subnets_bundle["bundle"]) + ".zip", "--results",
                            subnets_bundle["results"], "--out", out, "--json"], capsys)
    assert rc == 0, err
    table = LatencyTable.load(out)
    assert table.meta["backend"] == "bundle" and table.meta["adapted"]["measured_subnets"] == 5
    assert json.loads(stdout)["n"] == 5


# ---------------------------------------------------------------------- the seams
def test_device_check_applies_to_measuring_not_using(bundled, tiny, tmp_path, capsys):
    """A phone's table is used anywhere; measuring into it here is refused."""
    out = tmp_path / "phone.yaml"
    assert main(["lut", "import", str(bundled["results"]), "--bundle", str(bundled["bundle"]),
                 "--out", str(out), "--device", "pixel-9"]) == 0
    table = LatencyTable.load(out)
    table.meta.update(cpu_model="Google Tensor G4", cores=8)
    table.save()
    phone = LatencyTable.load(out)
    model = latency_model(phone, tiny) if not phone.missing(all_keys(tiny)) else None
    for a in bundled["archs"]:  # using: predict never looks at this machine
        assert phone.predict(tiny, a) > 0
    assert model is None  # (only some keys: a TableModel needs the whole space)
    with pytest.raises(UserError, match="measured on its device by run_bundle.py"):
        validate_table(phone, tiny, samples=2, log=lambda _: None)
    for backend in ("onnxruntime", "onnxruntime-noopt"):  # not the phone: refused
        with pytest.raises(UserError, match="meta.cpu_model|meta.graph_optimization_level"):
            check_measuring_into(phone, get_backend(backend).info())
    with pytest.raises(UserError, match="meta.backend"):
        check_measuring_into(phone, get_backend("torch").info())
    with pytest.raises(UserError, match="meta.cpu_model"):
        check_measuring_into(phone, dict(phone.meta, cpu_model="Intel", backend="bundle"))
    # the bundle ran on this very machine: onnxruntime here may check it
    here = tmp_path / "here.yaml"
    assert main(["lut", "import", str(bundled["results"]), "--bundle", str(bundled["bundle"]),
                 "--out", str(here)]) == 0
    assert check_measuring_into(LatencyTable.load(here), get_backend("onnxruntime").info()) == []
    assert isinstance(BundleBackend(), type(get_backend("bundle")))


def test_predict_interface(reference, tiny):
    table = LatencyTable.load(reference)
    m = latency_model(table, tiny)
    assert isinstance(m, LatencyModel) and isinstance(m, TableModel)
    archs = sample_archs(tiny, 6, seed=1)
    assert all(m.predict(a) == table.predict(tiny, a) for a in archs)
    macs = MacsModel.fit(tiny, archs, [m.predict(a) for a in archs])
    assert isinstance(macs, LatencyModel) and latency_model(macs, tiny) is macs
    assert all(macs.predict(a) > 0 and math.isfinite(macs.predict(a)) for a in archs)
