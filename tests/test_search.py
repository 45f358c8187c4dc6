"""Strategies and the runner on the tiny space with synthetic objectives (no torch)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.search import (Evolution, RandomSearch, check_strategy, hypervolume_2d,
                        known_strategies, load_front, make_strategy, register_strategy,
                        run_search)
from nas.search.pareto import non_dominated_mask
from nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SPACE = SearchSpace.load(ROOT / "search_spaces" / "tiny.yaml")


# ---------------------------------------------------------------------- synthetic problem
def h01(text: str) -> float:
    """Deterministic pseudo-random number in [0, 1] from a string."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def synthetic(arch) -> dict:
    """Error falls with capacity and with a hidden per-op 'quality'; latency is a sum of
    op costs. Cheap high-quality ops are rare, so random sampling finds few of them."""
    res = arch.resolution[0] * arch.resolution[1] / (36 * 60)
    lat, cap, qual = 0.2, 0.0, []
    for w, ops in zip(arch.widths, arch.active_ops()):
        for op in ops:
            c = op.kernel ** 2 / 9 * op.expansion * w / 8
            lat += 0.05 * c * res + 0.03
            cap += c
            qual.append(h01(op.token()))
    err = (9.0 - 1.2 * math.log1p(cap * res) - 3.0 * float(np.mean(qual))
           + 0.1 * h01(arch.arch_id))
    return {"error_deg": err, "latency_ms": lat, "params": int(cap * 1000),
            "macs": int(cap * res * 1e5)}


def objectives(arch) -> tuple[float, float]:
    r = synthetic(arch)
    return r["error_deg"], r["latency_ms"]


HV_REF = (10.0, 1.1 * objectives(SPACE.largest())[1])


def drive(strategy, evals: int, batch: int = 8) -> tuple[list[str], np.ndarray]:
    ids, F = [], []
    while len(ids) < evals:
        archs = strategy.ask(min(batch, evals - len(ids)))
        assert archs
        for a in archs:
            o = objectives(a)
            strategy.tell(a, o)
            ids.append(a.arch_id)
            F.append(o)
    return ids, np.array(F)


def tiny_space(kernels=(3, 5)) -> SearchSpace:
    """A space with only len(kernels) archs, to exhaust."""
    return SearchSpace.from_dict({
        "version": 1, "name": "two", "task": "gaze3d",
        "input": {"channels": 1, "resolutions": [[36, 60]]},
        "stem": {"width": 8, "kernel": 3, "strides": [2], "act": "relu"},
        "stages": [{"widths": [8], "depths": [1], "stride": 2}],
        "blocks": {"shuffle": {"kernels": list(kernels)}},
        "head": {"width": 16, "act": "relu", "outputs": 2}})


# ---------------------------------------------------------------------- registry
def test_registry_and_unknown_name():
    assert {"evolution", "random"} <= set(known_strategies())
    assert isinstance(make_strategy("evolution", SPACE, 0, population=8), Evolution)
    assert isinstance(make_strategy("random", SPACE, 0), RandomSearch)
    with pytest.raises(UserError, match="evolution.*optuna-tpe.*random"):
        make_strategy("simulated-annealing", SPACE, 0)
    with pytest.raises(UserError, match="population"):
        make_strategy("evolution", SPACE, 0, popsize=8)
    with pytest.raises(UserError, match="population"):
        make_strategy("evolution", SPACE, 0, population=1)


def test_external_strategy_by_module_attr():
    st = make_strategy("nas.search.random_search:RandomSearch", SPACE, 3)
    assert isinstance(st, RandomSearch)
    with pytest.raises(UserError, match="cannot import external strategy"):
        make_strategy("no_such_module:Thing", SPACE, 0)


def test_register_lazy_strategy():
    register_strategy("test-random-alias", "nas.search.random_search:RandomSearch")
    try:
        assert isinstance(make_strategy("test-random-alias", SPACE, 3), RandomSearch)
    finally:
        from nas.search import strategy as mod
        mod._REGISTRY.pop("test-random-alias")


def test_strategy_typo_suggests_the_nearest_name():
    with pytest.raises(UserError, match=r"^--strategy: unknown strategy 'evolutoin'; did you "
                       r"mean 'evolution'\? expected one of evolution, .*module:attr"):
        check_strategy("evolutoin", field="--strategy")
    with pytest.raises(UserError, match=r"^search.strategy: unknown strategy 'zzz'; expected"):
        check_strategy("zzz")  # nothing near: no suggestion


def test_cli_strategy_typo_fails_while_parsing_flags():
    """The flag is refused by argparse's type check, before the run folder is read: torch
    (seconds to import), the supernet and the evaluator are never loaded, so a typo costs
    well under a second (checked by what is imported, not by timing; that no data loads is
    checked by test_bad_inputs' guard)."""
    code = ("import sys; from nas.cli import main; "
            "rc = main(['search', '--run', 'no-such-run', '--lut', 'no.yaml', "
            "'--strategy', 'evolutoin']); "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith("
            "('nas.pipeline', 'nas.supernet', 'nas.train', 'nas.evaluation'))]; "
            "assert rc == 2 and not bad, (rc, bad)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "gaze-nas: error: --strategy: unknown strategy 'evolutoin'; did you mean 'evolution'?")


def test_search_does_not_import_torch():
    code = ("import sys, nas.search; bad = [m for m in sys.modules if m.split('.')[0] == "
            "'torch' or m.startswith(('nas.latency', 'nas.supernet'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------------- strategies
def test_evolution_starts_with_extremes_and_never_repeats():
    st = Evolution(SPACE, seed=1, population=12)
    first = st.ask(2)
    assert [a.arch_id for a in first] == [SPACE.largest().arch_id, SPACE.smallest().arch_id]
    # asynchronous: ask far ahead of tell, then tell out of order
    asked = first + st.ask(20)
    order = np.random.default_rng(0).permutation(len(asked))
    for i in order[:15]:
        st.tell(asked[i], objectives(asked[i]))
    asked += st.ask(10)
    for i in order[15:]:
        st.tell(asked[i], objectives(asked[i]))
    ids, _ = drive(st, 150)
    all_ids = [a.arch_id for a in asked] + ids
    assert len(set(all_ids)) == len(all_ids)
    assert len(st.population) == 12


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_same_seed_same_asks(name):
    a, _ = drive(make_strategy(name, SPACE, 5), 80)
    b, _ = drive(make_strategy(name, SPACE, 5), 80)
    c, _ = drive(make_strategy(name, SPACE, 6), 80)
    assert a == b and a != c
    assert len(set(a)) == len(a)


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_state_round_trip_gives_same_future_asks(name):
    st = make_strategy(name, SPACE, 11, **({"population": 16} if name == "evolution" else {}))
    drive(st, 40)
    pending = st.ask(6)                      # snapshot with asks not yet told
    for a in pending[:2]:
        st.tell(a, objectives(a))
    saved = json.loads(json.dumps(st.state_dict()))
    clone = make_strategy(name, SPACE, 999, **({"population": 16} if name == "evolution" else {}))
    clone.load_state_dict(saved)
    for s in (st, clone):
        for a in pending[2:]:
            s.tell(a, objectives(a))
    assert drive(st, 60)[0] == drive(clone, 60)[0]


def test_state_refuses_other_options():
    st = Evolution(SPACE, 0, population=8)
    drive(st, 10)
    with pytest.raises(UserError, match="options"):
        Evolution(SPACE, 0, population=10).load_state_dict(st.state_dict())


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_exhausted_space_returns_fewer(name):
    space = tiny_space()
    assert space.size() == 2
    st = make_strategy(name, space, 0, max_tries=20)
    got = st.ask(5)
    assert len(got) == 2 and got[0].arch_id != got[1].arch_id
    for a in got:
        st.tell(a, (1.0, 1.0))
    assert st.ask(3) == []


def test_infeasible_results_rank_last():
    st = Evolution(SPACE, 2, population=6)
    archs = st.ask(10)
    for i, a in enumerate(archs):
        o = objectives(a)
        st.tell(a, (o[0], math.inf) if i < 5 else o, feasible=True)
    st.ask(1)
    told = {a.arch_id: i for i, a in enumerate(archs)}
    assert sorted(told[a.arch_id] for a in st.population)[-5:] == [5, 6, 7, 8, 9]


def test_evolution_beats_random():
    """Hypervolume after 120 evaluations, over 4 seeds: evolution >= random on average and
    on most seeds (on this problem evolution wins 10 seeds of 10 by ~5 units of ~75)."""
    he = [hypervolume_2d(drive(Evolution(SPACE, s), 120)[1], HV_REF) for s in range(4)]
    hr = [hypervolume_2d(drive(RandomSearch(SPACE, s), 120)[1], HV_REF) for s in range(4)]
    assert np.mean(he) > np.mean(hr)
    assert sum(e >= r for e, r in zip(he, hr)) >= 3


# ---------------------------------------------------------------------- runner
META = {"space": "tiny", "device": "synthetic-cpu"}


class Counting:
    """An evaluate callable (`f`, default `synthetic`) that records calls and can be told
    to 'crash' at call k."""

    def __init__(self, raise_at: int | None = None, f=None):
        self.calls: list[str] = []
        self.raise_at = raise_at
        self.f = f or synthetic

    def __call__(self, arch) -> dict:
        if self.raise_at is not None and len(self.calls) == self.raise_at:
            raise KeyboardInterrupt
        self.calls.append(arch.arch_id)
        return self.f(arch)


def search(out_dir, evaluate, evals=60, seed=0, strategy="evolution", **kw):
    kw.setdefault("meta", META)
    opts = {"population": 16} if strategy == "evolution" else {}
    st = make_strategy(strategy, SPACE, seed, **opts)
    return run_search(SPACE, st, evaluate, evals=evals,
                      budgets=[0.5, 1.5, 3.0, 0.01], out_dir=out_dir, batch=8,
                      log=lambda s: None, **kw)


def trial_rows(out_dir) -> list[dict]:
    with open(Path(out_dir) / "trials.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_runner_writes_artifacts(tmp_path):
    ev = Counting()
    res = search(tmp_path, ev)
    assert not res["resumed_complete"]
    for f in ("trials.csv", "strategy_state.json", "pareto.json", "pareto.csv",
              "best_per_budget.json", "summary.json", "pareto.png"):
        assert (tmp_path / f).is_file(), f
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = trial_rows(tmp_path)
    assert len(rows) == 60 == len(ev.calls) == len(set(ev.calls))
    assert list(rows[0])[:5] == ["trial", "arch_id", "arch", "error_deg", "latency_ms"]
    assert {"params", "macs"} <= set(rows[0])

    front = load_front(tmp_path)
    assert front == res["front"] and front
    for e in front:
        assert {"arch_id", "arch", "error_deg", "latency_ms", "params", "macs"} <= set(e)
        assert SPACE.parse(e["arch"]).arch_id == e["arch_id"]
    F = np.array([[e["error_deg"], e["latency_ms"]] for e in front])
    assert non_dominated_mask(F).all()
    assert list(F[:, 1]) == sorted(F[:, 1])
    allF = np.array([[float(r["error_deg"]), float(r["latency_ms"])] for r in rows])
    assert len(front) == non_dominated_mask(allF).sum()

    best = json.loads((tmp_path / "best_per_budget.json").read_text())
    assert [b["budget_ms"] for b in best] == [0.5, 1.5, 3.0, 0.01]
    for b in best:
        fits = allF[allF[:, 1] <= b["budget_ms"]]
        if b["arch_id"] is None:
            assert len(fits) == 0 and "reason" in b
        else:
            assert b["latency_ms"] <= b["budget_ms"]
            assert b["error_deg"] == fits[:, 0].min()
            assert b["arch_id"] in {e["arch_id"] for e in front}
    assert best[-1]["arch_id"] is None

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_trials"] == 60 and summary["front_size"] == len(front)
    assert summary["meta"] == META and summary["hypervolume"]["value"] > 0
    assert set(summary["hypervolume"]["reference"]) == {"error_deg", "latency_ms"}


@pytest.mark.parametrize("crash_at,strategy", [(3, "evolution"), (13, "evolution"),
                                               (24, "evolution"), (13, "random"),
                                               (13, "optuna-tpe"), (13, "optuna-nsga2"),
                                               (13, "nni-tpe"), (13, "nni-evolution")])
def test_runner_resume_matches_uninterrupted(tmp_path, crash_at, strategy):
    """Interrupted in the first batch, inside a later batch, and at a batch boundary."""
    if strategy.startswith("nni-"):
        pytest.importorskip("nni", reason="the nni-* strategies need the [nni] extra")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    search(ref_dir, Counting(), strategy=strategy)

    first = Counting(raise_at=crash_at)
    with pytest.raises(KeyboardInterrupt):
        search(run_dir, first, strategy=strategy)
    assert len(trial_rows(run_dir)) == crash_at  # finished work was flushed
    second = Counting()
    search(run_dir, second, strategy=strategy)

    evaluated = first.calls + second.calls
    assert len(evaluated) == 60 == len(set(evaluated))
    assert trial_rows(run_dir) == trial_rows(ref_dir)
    assert load_front(run_dir) == load_front(ref_dir)

    third = Counting()  # a finished run only rewrites the outputs
    res = search(run_dir, third, strategy=strategy)
    assert third.calls == [] and res["resumed_complete"] and res["meta"] == META
    fourth = Counting()  # asking for more continues the same search
    search(run_dir, fourth, evals=70, strategy=strategy)
    assert len(fourth.calls) == 10 and not set(fourth.calls) & set(evaluated)


def test_runner_refuses_other_settings(tmp_path):
    search(tmp_path, Counting(), evals=16)
    with pytest.raises(UserError, match="other settings"):
        search(tmp_path, Counting(), evals=16, meta={"space": "tiny", "device": "phone"})
    fresh = Counting()
    search(tmp_path, fresh, evals=16, meta={"space": "tiny", "device": "phone"}, resume=False)
    assert len(fresh.calls) == 16


def test_runner_keeps_infeasible_off_the_front(tmp_path):
    def evaluate(arch):
        r = synthetic(arch)
        if h01(arch.arch_id) < 0.3:
            r["latency_ms"] = float("inf")
        return r

    res = search(tmp_path, evaluate, evals=40)
    rows = trial_rows(tmp_path)
    bad = {r["arch_id"] for r in rows if r["latency_ms"] == "inf"}
    assert bad and not bad & {e["arch_id"] for e in res["front"]}
    assert res["summary"]["n_feasible"] == 40 - len(bad)


def test_results_from_the_evaluators_cache_are_not_counted_as_new(tmp_path):
    def cached(arch):
        return {**synthetic(arch), "_reused": True}

    res = search(tmp_path, cached, evals=16)
    assert res["summary"]["evaluated_this_run"] == 0
    assert "_reused" not in (tmp_path / "trials.csv").read_text()


def test_fixed_hypervolume_reference_is_recorded(tmp_path):
    res = search(tmp_path, Counting(), evals=16, hv_ref=(10.0, 5.0), hv_rule="fixed: test")
    hv = res["summary"]["hypervolume"]
    assert hv["reference"] == {"error_deg": 10.0, "latency_ms": 5.0}
    assert hv["rule"] == "fixed: test"


@pytest.mark.parametrize("name", ["optuna-tpe", "optuna-nsga2", "optuna-gp"])
def test_optuna_strategies_store_the_study_with_budget_constraints(tmp_path, name):
    import optuna

    res = search(tmp_path, Counting(), evals=12 if name != "optuna-gp" else 6, strategy=name)
    ids = [r["arch_id"] for r in trial_rows(tmp_path)]
    assert len(ids) == len(set(ids))  # never the same arch twice
    assert ids[:2] == [SPACE.largest().arch_id, SPACE.smallest().arch_id]  # extremes first
    (study,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = optuna.load_study(study_name=study.study_name,
                               storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) >= len(ids)
    budget = 3.0  # the largest of search()'s budgets is the constraint
    for t in done:
        assert t.system_attrs["constraints:latency_over_largest_budget_ms"] == \
            pytest.approx(t.values[1] - budget)
    assert res["summary"]["strategy"] == name


@pytest.mark.parametrize("name", ["nni-tpe", "nni-evolution", "nni-random"])
def test_nni_tuners_search_per_budget_and_never_repeat(tmp_path, name):
    pytest.importorskip("nni", reason="the nni-* strategies need the [nni] extra")
    res = search(tmp_path, Counting(), evals=24, strategy=name)
    ids = [r["arch_id"] for r in trial_rows(tmp_path)]
    assert len(ids) == 24 == len(set(ids))
    assert ids[:2] == [SPACE.largest().arch_id, SPACE.smallest().arch_id]
    assert res["front"]


def test_nni_missing_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nni", None)  # as if the extra were not installed
    st = make_strategy("nni-tpe", SPACE, 0)
    st.attach(tmp_path, [1.0])
    with pytest.raises(UserError, match=r"pip install 'gaze-nas\[nni\]'"):
        st.ask(1 + 2)  # the two seeded extremes come first; the third needs a tuner


@pytest.mark.parametrize("name", ["evolution", "optuna-tpe"])
def test_seeded_search_asks_the_seeds_first_and_resumes_exactly(tmp_path, name):
    from nas.search.strategy import Seeded

    rng = np.random.default_rng(5)
    seeds = [SPACE.sample(rng) for _ in range(10)]

    def run(out, evaluate):
        st = Seeded(make_strategy(name, SPACE, 0), seeds)
        return run_search(SPACE, st, evaluate, evals=40, budgets=[1.5, 3.0], out_dir=out,
                          batch=8, log=lambda s: None, meta=META)

    run(tmp_path / "ref", Counting())
    ids = [r["arch_id"] for r in trial_rows(tmp_path / "ref")]
    assert ids[:10] == [a.arch_id for a in seeds] and len(set(ids)) == 40
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", Counting(raise_at=13))
    run(tmp_path / "run", Counting())
    assert trial_rows(tmp_path / "run") == trial_rows(tmp_path / "ref")


def test_log_crowding_keeps_the_fast_end_of_a_front():
    """Log crowding values a point at the fast end (0.05 ms, 2.5x from its neighbour)
    more, relative to one at the slow end (0.34 ms, 1.13x), than linear crowding does."""
    import numpy as np

    from nas.errors import UserError

    front = np.array([[12.0, 0.02], [11.0, 0.05], [10.0, 0.30], [9.9, 0.34], [9.0, 0.60]])
    lin = Evolution(SPACE, 0, crowding="linear")._crowding(front)
    log = Evolution(SPACE, 0, crowding="log")._crowding(front)
    assert log[1] / log[3] > 2 > lin[1] / lin[3]
    assert np.isinf(log[[0, -1]]).all()
    with pytest.raises(UserError) as e:
        Evolution(SPACE, 0, crowding="ratio")
    assert e.value.field == "search.options.crowding"
