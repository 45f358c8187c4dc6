"""An Optuna search killed with SIGKILL resumes from its storage to the front (and the trial
log) of an uninterrupted search with the same seed.

The search is driven through the public API (`make_strategy("optuna-tpe")`, wrapped in
`Seeded` as `gaze-nas search --warm-start` does, and `run_search`) with the synthetic
objectives of test_search: the evaluator plays no part in how the study is stored and
resumed, and a real supernet would cost a training run. The driver is this file run as a
script, so the killed process and the reference run execute the same code.

The kills are made deterministic: the driver's evaluator stops (sleeps) on its K-th subnet,
mid-batch, after it has written a marker, so the process dies with trials told to the study
after the last saved batch boundary and trials still RUNNING in the SQLite storage: the
case a resume has to repair (see `nas/search/optuna_strategy.py`). The resume is killed
too, so a rebuilt study is rebuilt again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nas.search import read_trials

ROOT = Path(__file__).resolve().parents[1]
EVALS, BATCH, SEED = 24, 4, 5
BUDGETS = [0.6, 0.9]  # the largest is the study's constraint; some subnets exceed it
# (evaluations of the process before it is killed, trials saved at the last boundary then):
# the 14th subnet is the 2nd of the 4th batch, past TPE's 10 random start-up trials; the
# resume starts at trial 12 and is killed on trial 18, the 3rd of the 5th batch
KILLS = [(14, 12), (7, 16)]


def search(out: Path, hang_at: int = 0, marker: Path | None = None) -> dict:
    """One optuna-tpe search of the tiny space; with `hang_at`, the evaluator writes
    `marker` and sleeps instead of evaluating its `hang_at`-th subnet."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from test_search import SPACE, h01, synthetic

    from nas.search import make_strategy, run_search
    from nas.search.strategy import Seeded

    calls = []

    def evaluate(arch) -> dict:
        calls.append(arch.arch_id)
        if len(calls) == hang_at:
            marker.write_text(json.dumps(calls))
            time.sleep(600)  # killed here
        r = synthetic(arch)
        r["feasible"] = h01("feasible" + arch.arch_id) > 0.1  # some FAIL trials too
        r["_seconds"] = 0.0  # no timing: trials.csv is then byte-comparable
        return r

    seeds = [SPACE.sample(np.random.default_rng(i)) for i in (1, 2)]
    strategy = Seeded(make_strategy("optuna-tpe", SPACE, SEED), seeds)
    return run_search(SPACE, strategy, evaluate, evals=EVALS, budgets=BUDGETS, out_dir=out,
                      batch=BATCH, log=lambda s: None, meta={"space": SPACE.name})


@pytest.fixture
def folder(tmp_path):
    """Memory-backed where there is one: SQLite syncs every trial to disk, which costs
    seconds on a busy disk and proves nothing here (SIGKILL loses no page-cache data)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="gaze-nas-test-") as d:
        yield Path(d)


def _kill_at(out: Path, hang_at: int, marker: Path) -> None:
    """Run the driver until its evaluator reaches subnet `hang_at`, then SIGKILL it."""
    marker.unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, __file__, str(out), str(hang_at), str(marker)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert marker.exists(), (proc.stderr.read().decode()[-2000:]
                                 if proc.poll() is not None else "no marker after 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_batch_resumes_to_the_uninterrupted_search(folder):
    ref, out, marker = folder / "ref", folder / "out", folder / "hung"
    for hang_at, n_saved in KILLS:
        _kill_at(out, hang_at, marker)
        # the kill hit after the last saved boundary: the storage holds more than the state
        state = json.loads((out / "strategy_state.json").read_text())
        trials = _study(out).trials
        assert state["n_told"] == n_saved and not (out / "pareto.json").exists()
        assert len(trials) > state["strategy_state"]["inner"]["n_trials"]
        assert any(t.state.name == "RUNNING" for t in trials)

    got = search(out)    # resume, in this process
    want = search(ref)   # the uninterrupted search, same seed
    assert got["resumed_complete"] is False
    for name in ("trials.csv", "pareto.json", "pareto.csv", "best_per_budget.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert [e["arch_id"] for e in got["front"]] == [e["arch_id"] for e in want["front"]]

    # the resumed study continues the saved one: the twice rebuilt study (`<name>~2`) holds
    # the same trials, in the same order, as the uninterrupted search's study; none RUNNING,
    # none lost or doubled, numbered without gaps
    resumed, uninterrupted = _study(out), _study(ref)
    assert resumed.study_name == uninterrupted.study_name + "~2"
    assert _trial_log(resumed) == _trial_log(uninterrupted)
    assert [t.number for t in resumed.trials] == list(range(len(resumed.trials)))
    assert not [t for t in resumed.trials if not t.state.is_finished()]
    archs = [t.user_attrs["arch"] for t in resumed.trials if "arch" in t.user_attrs]
    assert sorted(archs) == sorted(r["arch"] for r in read_trials(out / "trials.csv"))


def _study(out: Path):
    """The study the search's saved state names."""
    import optuna

    name = json.loads((out / "strategy_state.json").read_text())["strategy_state"]["inner"][
        "study_name"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'optuna.db'}")


def _trial_log(study) -> list[tuple]:
    """What a sampler learns from a study, trial by trial (owner ids differ per process)."""
    return [(t.state.name, t.params, t.values, t.user_attrs.get("arch"),
             t.user_attrs.get("seq"), t.system_attrs) for t in study.trials]


if __name__ == "__main__":  # the driver: OUT [HANG_AT MARKER]
    search(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0,
           Path(sys.argv[3]) if len(sys.argv) > 3 else None)
