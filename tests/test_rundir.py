"""Run folders: one owner (lock), a changed input re-runs exactly the stages it affects and
moves their old outputs aside, user inputs are never written, kill -9 resumes to the same
front as an uninterrupted run."""

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_CONFIG

from nas.cli import main
from nas.errors import UserError
from nas.rundir import RunLock, StageLedger


def _write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _status(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["stage_status"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One uninterrupted run of the tiny config; tests work on copies of it."""
    d = tmp_path_factory.mktemp("base")
    cfg = _write_cfg(d / "tiny.yaml", copy.deepcopy(TINY_CONFIG))
    assert main(["run", str(cfg), "--out", str(d / "out")]) == 0
    return d / "out"


@pytest.fixture
def run_copy(base_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    return out


# ------------------------------------------------------------------------- lock
HOLDER = """
import sys, time
from nas.rundir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_second_process_is_refused_naming_the_holder_and_kill9_frees_it(tmp_path, capsys):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {proc.pid} on "):
            with RunLock(folder):
                pass
        cfg = _write_cfg(tmp_path / "c.yaml", copy.deepcopy(TINY_CONFIG))
        assert main(["run", str(cfg), "--out", str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {proc.pid}" in err[0] and "Traceback" not in err[0]
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(folder):  # the kernel dropped the dead holder's lock
        pass


def test_ledger_moves_a_changed_stage_and_everything_downstream(tmp_path):
    outputs = {"a": ["a.txt"], "b": ["bdir"], "c": ["c.txt"]}
    led = StageLedger(tmp_path, outputs, log=lambda m: None)
    for s in outputs:
        led.enter(s, "k1")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "bdir").mkdir()
    (tmp_path / "bdir" / "x").write_text("b")
    (tmp_path / "c.txt").write_text("c")
    led = StageLedger(tmp_path, outputs, log=lambda m: None)  # as a new process sees it
    led.enter("a", "k1")  # unchanged: nothing moves
    led.enter("b", "k2")  # changed: b and c move aside together, a stays
    assert (tmp_path / "a.txt").exists()
    assert not (tmp_path / "bdir").exists() and not (tmp_path / "c.txt").exists()
    (stale,) = (tmp_path / "stale").iterdir()
    assert (stale / "bdir" / "x").read_text() == "b" and (stale / "c.txt").read_text() == "c"
    assert "c" not in led.keys and led.keys["b"] == "k2"


# ------------------------------------------------------------- changed inputs
def test_changed_epochs_retrain_and_leave_no_mixed_artifacts(run_copy, tmp_path):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["train"]["epochs"] = 2
    assert main(["run", str(_write_cfg(tmp_path / "c.yaml", cfg)), "--out", str(run_copy)]) == 0
    st = _status(run_copy)
    assert st["train"] == "ran" and st["search"] == "ran"
    log = (run_copy / "train" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == [1, 2]  # only this training's epochs
    (stale,) = (run_copy / "stale").iterdir()
    assert {"supernet.pt", "train", "search", "export"} <= {p.name for p in stale.iterdir()}
    assert not list(run_copy.glob("train/checkpoint.stale-*"))
    best = json.loads((run_copy / "search" / "best_per_budget.json").read_text())
    cards = {p.parent.name for p in (run_copy / "export").glob("*/card.json")}
    assert cards == {b["arch_id"] for b in best if b.get("arch_id")}


def test_changed_budgets_rerun_search_not_training(run_copy, tmp_path):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["search"]["budgets_ms"] = [0.05, 5.0]
    assert main(["run", str(_write_cfg(tmp_path / "c.yaml", cfg)), "--out", str(run_copy)]) == 0
    st = _status(run_copy)
    assert st["train"] == "reused" and st["search"] == "ran"
    best = json.loads((run_copy / "search" / "best_per_budget.json").read_text())
    assert [b["budget_ms"] for b in best] == [0.05, 5.0]
    cards = {p.parent.name for p in (run_copy / "export").glob("*/card.json")}
    assert cards == {b["arch_id"] for b in best if b.get("arch_id")}


def test_retrained_identical_weights_reuse_the_search(run_copy, tmp_path):
    (run_copy / "supernet.pt").unlink()
    shutil.rmtree(run_copy / "train")
    cfg = _write_cfg(tmp_path / "c.yaml", copy.deepcopy(TINY_CONFIG))
    assert main(["run", str(cfg), "--out", str(run_copy)]) == 0
    st = _status(run_copy)
    assert st["train"] == "ran" and st["search"] == "reused"


def test_a_table_the_user_names_is_never_written(run_copy, tmp_path):
    lut = tmp_path / "mine.yaml"
    data = yaml.safe_load(next((run_copy / "latency").glob("*.yaml")).read_text())
    data["validation"] = None  # no validation: the run validates a copy, not this file
    lut.write_text(yaml.safe_dump(data))
    os.chmod(lut, 0o444)
    before = lut.read_bytes()
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["latency"]["lut"] = str(lut)
    cfg["seed"] = 0
    assert main(["run", str(_write_cfg(tmp_path / "c.yaml", cfg)), "--out", str(run_copy)]) == 0
    assert lut.read_bytes() == before
    copy_path = run_copy / "latency" / "validated" / "mine.yaml"
    assert yaml.safe_load(copy_path.read_text())["validation"]["n"] == 5
    m = json.loads((run_copy / "manifest.json").read_text())
    assert m["lut_path"] == str(copy_path)


# ------------------------------------------------------------------ kill -9
def test_kill9_during_search_resumes_to_the_uninterrupted_front(base_run, tmp_path):
    out = tmp_path / "out"
    conf = copy.deepcopy(TINY_CONFIG)
    # the base run's table (its timings and fitted correction): a table profiled again would
    # time the layers anew, and on a busy machine a near-tie on the front can flip with it
    conf["latency"]["lut"] = str(next((base_run / "latency").glob("*.yaml")))
    cfg = _write_cfg(tmp_path / "c.yaml", conf)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "run", str(cfg), "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    trials = out / "search" / "trials.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if trials.exists() and len(trials.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "search" / "pareto.json").exists()
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    got = json.loads((out / "search" / "pareto.json").read_text())
    want = json.loads((base_run / "search" / "pareto.json").read_text())
    assert [(p["arch_id"], p["error_deg"]) for p in got] == \
        [(p["arch_id"], p["error_deg"]) for p in want]
