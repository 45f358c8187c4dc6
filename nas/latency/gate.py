"""Contention gate: keep only timings taken while the machine ran at its quiet speed.

On this shared (virtualised) 2-core machine, load we cannot see (the host, other tenants,
other processes) slows every model together, by ~1.4-1.8x, for seconds to minutes at a
time, and the state can flip within a second; measured with the machine otherwise idle.
Part of it is cache contention: a loop over a few small models that fit in this core's
L2 cache often runs at full speed while a chunk of 64 models, whose working set lives in
the shared L3, runs 1.7x slower. So the state can only be read from inside a chunk.

A few fixed anchor models stay loaded for the whole run and are timed, spread through every
round of every chunk, with the same neighbours as the models they judge. The typical
per-round time of each anchor in the quiet state is the reference; a model's round counts
only if the anchors timed just before and just after it ran within `TOLERANCE` of their
quiet speed. A chunk without enough quiet rounds is timed again at once, waiting out the
slowed spell within a time budget, and models still short of quiet rounds are timed again
in a later pass (`nas.latency.timing`). Nothing is rescaled: every value in a table is a
measurement, taken while quiet.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from nas.latency.keys import all_keys
from nas.latency.runtime import Feed
from nas.space import SearchSpace

ANCHORS_PER_FAMILY = 2
TOLERANCE = 0.10  # anchors > 10 % slower than their quiet level: a slowed round
QUIET_BAND = 0.15  # an anchor's quiet level: median of its times within 15 % of its best
MAX_PASSES = 3  # first pass + up to 2 re-timing passes over the models without quiet rounds
WAIT_BUDGET_S = 60.0  # most time one run spends re-timing chunks that ran slowed


def pick_anchors(space: SearchSpace, per_family: int = ANCHORS_PER_FAMILY) -> list[str]:
    """A fixed, seeded choice of layer keys, `per_family` from each block family, so the
    gate sees compute-heavy and overhead-bound layers alike."""
    by_family: dict[str, list[str]] = {}
    for key, (kind, spec) in all_keys(space).items():
        if kind == "layer":
            by_family.setdefault(spec[0].family, []).append(key)
    rng = np.random.default_rng(20240607)
    out = []
    for fam in sorted(by_family):
        keys = sorted(by_family[fam])
        idx = rng.choice(len(keys), size=min(per_family, len(keys)), replace=False)
        out += [keys[i] for i in sorted(idx)]
    return out


def quiet_level(times: list[float], band: float = QUIET_BAND) -> float:
    """Typical time in the quiet state: the median of the times within `band` of the best.
    Not the best itself: over hundreds of rounds the minimum drifts into the lucky tail and
    would make ordinary quiet rounds look slow."""
    lo = min(times)
    return float(np.median([t for t in times if t <= lo * (1 + band)]))


def slowdown(anchor_ms: Mapping[str, float], ref: Mapping[str, float]) -> float:
    """Median over anchors of time / quiet time: 1.0 is quiet, 1.5 is 50 % slower."""
    ratios = [anchor_ms[k] / ref[k] for k in anchor_ms if k in ref and ref[k] > 0]
    return float(np.median(ratios)) if ratios else 1.0


class Gate:
    """The anchors' live sessions, their quiet reference, and the re-timing budget."""

    def __init__(self, sessions: dict[str, tuple[object, Feed]], ref: Mapping[str, float],
                 tolerance: float = TOLERANCE, budget_s: float = WAIT_BUDGET_S,
                 frozen: bool = False):
        self.sessions = sessions
        self.history: dict[str, list[float]] = {k: [float(v)] for k, v in ref.items()
                                                if k in sessions}
        self.ref = {k: v[0] for k, v in self.history.items()}
        self.tolerance, self.budget_s = tolerance, budget_s
        self.frozen = frozen  # validation judges against the table's reference, never moves it
        self.spent_s = 0.0  # time spent re-timing chunks at once because they ran slowed

    @property
    def budget_left(self) -> float:
        return max(self.budget_s - self.spent_s, 0.0)

    def quiet(self, anchor_ms: Mapping[str, float]) -> bool:
        """Whether anchors ran within tolerance of their quiet speed (median over anchors)."""
        return slowdown(anchor_ms, self.ref) <= 1 + self.tolerance

    def observe(self, runs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-round medians of the anchors in a chunk's run times, folded into the
        reference unless frozen."""
        mine = {k: np.median(runs[k], axis=1) for k in self.sessions if k in runs}
        if not self.frozen:
            for k, v in mine.items():
                self.history.setdefault(k, []).extend(float(x) for x in v)
                self.ref[k] = quiet_level(self.history[k])
        return mine
