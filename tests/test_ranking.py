"""Ranking statistics against scipy, arch selection for bench_ranking, scratch cache."""

import numpy as np
import pytest

from nas.ranking import (ScratchCache, fidelity, kendall_tau, mix_kind, select_archs,
                         spearman_rho)


@pytest.mark.parametrize("seed", range(5))
def test_rank_correlations_match_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 15).astype(float)  # ties on purpose
    b = a + rng.normal(0, 2, 15)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert spearman_rho(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_fidelity_perfect_and_reversed():
    x = [1.0, 2.0, 3.0, 4.0]
    f = fidelity([v + 1 for v in x], x)
    assert f["kendall_tau"] == 1 and f["spearman_rho"] == 1 and f["median_gap_deg"] == 1
    assert fidelity(x[::-1], x)["kendall_tau"] == -1


def test_select_archs_spread_and_mixed(eye_space):
    macs = {}

    def fake_macs(a):  # monotone in the arch's size, cheap to compute
        return macs.setdefault(a, 1 + sum(a.depths) * sum(a.widths) * a.resolution[0])

    archs = select_archs(eye_space, 12, seed=0, candidates=120, macs_of=fake_macs)
    assert len(set(archs)) == 12
    assert sum(mix_kind(a) != "single" for a in archs) >= 6
    m = [fake_macs(a) for a in archs]
    assert max(m) / min(m) > 3  # spread over the range, not clustered
    again = select_archs(eye_space, 12, seed=0, candidates=120, macs_of=fake_macs)
    assert again == archs


def test_mix_kinds(eye_space):
    rng = np.random.default_rng(1)
    assert mix_kind(eye_space.sample(rng, single_family=True)) == "single"
    kinds = {mix_kind(eye_space.sample(rng, family_mix="stage")) for _ in range(30)}
    assert "layer" not in kinds and "stage" in kinds
    assert any(mix_kind(eye_space.sample(rng)) == "layer" for _ in range(30))


def test_scratch_cache_survives_torn_line(tmp_path):
    c = ScratchCache(tmp_path / "s.jsonl")
    c.put({"key": "a", "scratch_error": 1.0})
    with open(tmp_path / "s.jsonl", "a") as fh:
        fh.write('{"key": "b", "scr')  # killed mid-write
    c2 = ScratchCache(tmp_path / "s.jsonl")
    assert c2.get("a")["scratch_error"] == 1.0 and c2.get("b") is None
