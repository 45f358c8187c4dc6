"""Gap filling (no torch): fillers land inside the front's widest latency step, take at
most their share of the asks, resume exactly, and are off unless asked for."""

from __future__ import annotations

import numpy as np
import pytest
from test_search import HV_REF, SPACE, synthetic

from nas.errors import UserError
from nas.search import Evolution, run_search
from nas.search.gapfill import WARMUP, GapFilled
from nas.search.strategy import Seeded


def latency(arch) -> list[float]:
    return [synthetic(arch)["latency_ms"]]


def told_with_a_hole(st: GapFilled, n: int = 40, seed: int = 0) -> tuple[float, float]:
    """Tell `st` n random archs, then make the front skip from its fastest point to one 3x
    slower by telling every arch in between as worse than the fastest. Returns the step."""
    rng = np.random.default_rng(seed)
    archs = {a.arch_id: a for a in (SPACE.sample(rng) for _ in range(n))}
    lats = {k: latency(a)[0] for k, a in archs.items()}
    fast = min(lats, key=lats.get)
    lo = lats[fast]
    hi = min((v for v in lats.values() if v > 3 * lo), default=None)
    assert hi is not None
    for k, a in archs.items():
        err = 5.0 if k == fast else (9.0 if lats[k] < hi else 4.0 - lats[k] / 10)
        st.tell(a, (err, lats[k]))
    return lo, hi


def test_fillers_land_in_the_widest_step_and_split_it():
    st = GapFilled(Evolution(SPACE, 0, population=8), latency, max_ratio=2.0, share=1.0)
    lo, hi = told_with_a_hole(st)
    assert st.widest_step()[1] == pytest.approx(hi / lo)
    first = st.ask(1)[0]
    v = latency(first)[0]
    assert lo < v < hi
    # the filler nearest the step's geometric middle: both halves under 2x here
    assert max(v / lo, hi / v) < 2.0
    # asked but not yet told, it counts as a point: the step is no longer the widest
    rest = st.widest_step()
    assert rest is None or rest[1] < hi / lo


def test_fillers_take_at_most_their_share_and_none_before_the_warmup():
    st = GapFilled(Evolution(SPACE, 0, population=8), latency, max_ratio=1.1, share=0.25)
    assert WARMUP > 2 and st.widest_step() is None  # nothing told yet
    lo, hi = told_with_a_hole(st)
    asked = st.ask(8) + st.ask(8)
    assert 3 <= st._fills <= 0.25 * len(asked)


def test_no_filler_when_every_step_is_narrow():
    st = GapFilled(Evolution(SPACE, 0, population=8), latency, max_ratio=1000.0, share=1.0)
    told_with_a_hole(st)
    assert st.widest_step() is None
    assert len(st.ask(4)) == 4 and st._fills == 0  # all the inner strategy's


def test_settings_are_checked():
    with pytest.raises(UserError, match="search.fill_gaps"):
        GapFilled(Evolution(SPACE, 0), latency, max_ratio=1.0)
    with pytest.raises(UserError, match="search.fill_share"):
        GapFilled(Evolution(SPACE, 0), latency, share=0.0)


def search(out, evals=64, fill=2.0, crash_at=None):
    calls = []

    def evaluate(arch):
        if crash_at is not None and len(calls) == crash_at:
            raise KeyboardInterrupt
        calls.append(arch.arch_id)
        return synthetic(arch)

    inner = Evolution(SPACE, 0, population=16)
    st = GapFilled(inner, latency, max_ratio=fill, share=0.25) if fill else inner
    return run_search(SPACE, Seeded(st, [SPACE.largest(), SPACE.smallest()]), evaluate,
                      evals=evals, budgets=[1.0], out_dir=out, batch=8,
                      log=lambda s: None, hv_ref=HV_REF)


def test_gap_filled_search_resumes_to_the_uninterrupted_front(tmp_path):
    ref = search(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "run", crash_at=37)
    again = search(tmp_path / "run")
    assert again["front"] == ref["front"]
