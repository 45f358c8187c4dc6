"""The re-search path that experiments/bench_research.py measures, without a trained run:
which cached subnets seed a warm start under a cap, and the bench's own figures."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nas.pipeline import warm_start_seeds

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_research",
                                                  ROOT / "experiments" / "bench_research.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Table:
    """A latency table that knows each arch's latency by arch_id."""

    def __init__(self, ms: dict[str, float]):
        self.ms, self.entries, self.correction, self.meta = ms, {"k": 1}, {}, {"device": "x"}

    def predict(self, space, arch) -> float:
        return self.ms[arch.arch_id]


def _cache(space, points: list[tuple[float, float]]):
    """Distinct archs with the given (error, latency), as an evaluator cache and a table."""
    rng, archs = np.random.default_rng(0), {}
    while len(archs) < len(points):
        a = space.sample(rng)
        archs[a.arch_id] = a
    rows, ms = {}, {}
    for (err, lat), a in zip(points, archs.values()):
        rows[a.arch_id] = {"arch_id": a.arch_id, "arch": a.to_string(), "error_deg": err}
        ms[a.arch_id] = lat
    return SimpleNamespace(cache=rows), _Table(ms), {p: a for p, a in zip(points, archs.values())}


def test_capped_warm_start_spreads_over_the_first_front(tiny_space, tmp_path):
    front1 = [(10.0 - i, 1.0 + i) for i in range(8)]       # 8 points, fast/poor to slow/good
    front2 = [(e + 0.5, lat + 0.5) for e, lat in front1]   # each just behind front 1
    ev, table, by_point = _cache(tiny_space, front1 + front2)
    seeds = warm_start_seeds(ev, tiny_space, table, tmp_path, cap=4)
    ids = [a.arch_id for a in seeds]
    assert len(ids) == 4 and all(by_point[p].arch_id in ids for p in (front1[0], front1[-1]))
    assert not {by_point[p].arch_id for p in front2} & set(ids)  # front 1 comes first
    assert [table.ms[i] for i in ids] == sorted(table.ms[i] for i in ids)  # fastest first
    again = warm_start_seeds(SimpleNamespace(cache={}), tiny_space, table, tmp_path, cap=4)
    assert [a.arch_id for a in again] == ids  # a resume reuses seeds.json
    everything = warm_start_seeds(ev, tiny_space, table, tmp_path / "big", cap=100)
    assert len(everything) == 16


def test_bench_figures(bench):
    ref = (10.0, 4.0)
    assert bench.front_hv([{"error_cm": 5, "latency_ms": 2}], ref, "error_cm") == \
        pytest.approx(10.0)
    beyond_ref = [{"error_deg": 11, "latency_ms": 1}]
    assert bench.front_hv(beyond_ref, ref, "error_deg") == 0.0
    best = [{"arch_id": "a"}, {"arch_id": None}, {"arch_id": "b"}, {"arch_id": "a"}]
    assert bench.distinct_picks(best) == ["a", "b"]
    log = "[ 3.0s] search: done, 40 trials (8 evaluated now) in 13.7 s; front of 20; ..."
    assert bench.split_search_log(log) == {"loop_s": 13.7}
    assert bench.split_search_log("nothing") == {"loop_s": None}


def test_run_copy_leaves_the_run_alone(bench, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "supernet.pt").write_bytes(b"w")
    (run / "run_config.json").write_text(json.dumps({"search": {"threads": 2}}))
    (run / "eval_cache.jsonl").write_text("{}\n")
    warm = bench.copy_run(run, tmp_path / "w", with_cache=True, threads=1)
    cold = bench.copy_run(run, tmp_path / "c", with_cache=False, threads=None)
    assert (warm / "eval_cache.jsonl").is_file() and not (cold / "eval_cache.jsonl").exists()
    assert json.loads((warm / "run_config.json").read_text())["search"]["threads"] == 1
    assert json.loads((run / "run_config.json").read_text())["search"]["threads"] == 2
