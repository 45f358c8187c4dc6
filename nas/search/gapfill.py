"""Gap filling: spend a share of the evaluations inside the front's widest latency steps.

A front with a 2.5x step between two neighbours leaves every budget inside the step to the
faster, worse net. Such a step is usually a matter of where the search looked, not of the
supernet: on the quickstart's supernet, half of 30 random mutants of the fastest subnet
that the table put inside its 2.5x step were more accurate than it (measured), yet
evolution, drawn to the crowded middle of the front, had tried only a handful there.
Latency is a table lookup, so the candidates can be placed in the step before any error
is measured: `GapFilled` breeds mutants of the step's two end points, keeps those the
table puts inside it, and asks for the one nearest the step's geometric middle. Every
error reported is measured; only where to look is chosen.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from nas.errors import UserError
from nas.search.operators import crossover, mutate
from nas.search.pareto import non_dominated_mask
from nas.search.strategy import Strategy, Wrapper
from nas.space import Arch

MUTATION_PROBS = (0.1, 0.2, 0.3)  # small and larger moves away from a step's end point
WARMUP = 16  # results told before the front is worth filling (the first are mostly random)


class GapFilled(Wrapper):
    """Wrap `inner` so that, while some device's measured front has two neighbours more
    than `max_ratio` apart in latency, up to `share` of all asks are gap fillers; the rest
    (and every ask while there is no such step) are `inner`'s. `latency(arch)` gives the
    arch's table latency on each device, in the order of the latency objectives. Fillers
    are told to `inner` like any result, so it breeds from them too."""

    def __init__(self, inner: Strategy, latency: Callable[[Arch], Sequence[float]],
                 max_ratio: float = 2.0, share: float = 0.25, tries: int = 300):
        super().__init__(inner)
        if not isinstance(max_ratio, (int, float)) or not max_ratio > 1:
            raise UserError(f"expected a latency ratio > 1, got {max_ratio!r}",
                            field="search.fill_gaps")
        if not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise UserError(f"expected a share in (0, 1], got {share!r}",
                            field="search.fill_share")
        self.latency, self.max_ratio, self.share = latency, float(max_ratio), float(share)
        self.tries = int(tries)
        self._rng = np.random.default_rng([self.seed, 0x6A9])
        self._told: dict[str, tuple[Arch, tuple[float, ...]]] = {}  # feasible results
        self._handed: set[str] = set()  # every arch asked through this wrapper or told
        self._planned: dict[str, tuple[float, ...]] = {}  # fillers asked, not yet told
        self._asked = 0
        self._fills = 0

    # ------------------------------------------------------------------ contract
    def ask(self, n: int) -> list[Arch]:
        out: list[Arch] = []
        for _ in range(max(0, int(n))):
            if self._fills >= self.share * (self._asked + 1):
                break
            arch = self._filler()
            if arch is None:
                break
            self._fills += 1
            self._asked += 1
            out.append(arch)
        if len(out) < n:
            rest = self.inner.ask(n - len(out))
            self._asked += len(rest)
            self._handed.update(a.arch_id for a in rest)
            out += rest
        return out

    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        self._planned.pop(arch.arch_id, None)
        self._handed.add(arch.arch_id)
        objs = tuple(float(v) for v in objectives)
        if feasible and all(math.isfinite(v) for v in objs):
            self._told.setdefault(arch.arch_id, (arch, objs))
        self.inner.tell(arch, objectives, feasible)

    def state_dict(self) -> dict[str, Any]:
        return {"gap_fill": [self.max_ratio, self.share], "asked": self._asked,
                "fills": self._fills, "rng": self._rng.bit_generator.state,
                "told": [[a.to_string(), list(o)] for a, o in self._told.values()],
                "handed": sorted(self._handed), "inner": self.inner.state_dict()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("gap_fill") != [self.max_ratio, self.share]:
            raise ValueError("the saved search filled gaps with other settings")
        self._asked, self._fills = int(d["asked"]), int(d["fills"])
        self._rng.bit_generator.state = d["rng"]
        self._told = {}
        for s, o in d["told"]:
            arch = self.space.parse(s)
            self._told[arch.arch_id] = (arch, tuple(float(v) for v in o))
        self._handed = set(d["handed"])
        self._planned = {}  # asks of an interrupted batch are asked again
        self.inner.load_state_dict(d["inner"])

    # ------------------------------------------------------------------ internals
    def widest_step(self) -> tuple[int, float, Arch, Arch, float, float] | None:
        """(device, ratio, faster end, slower end, their latencies) of the widest step over
        `max_ratio` on any device's front of measured results, counting the fillers already
        asked as points at their table latency (so one batch spreads over the step)."""
        if len(self._told) < max(2, WARMUP):
            return None
        archs = [a for a, _ in self._told.values()]
        F = np.array([o for _, o in self._told.values()], dtype=np.float64)
        planned = np.array(list(self._planned.values()), dtype=np.float64).reshape(
            -1, F.shape[1] - 1)
        best = None
        for d in range(1, F.shape[1]):
            pts = F[:, [0, d]]
            mask = non_dominated_mask(pts)
            idx = np.flatnonzero(mask)
            idx = idx[np.argsort(pts[idx, 1], kind="stable")]
            lats = pts[idx, 1]
            for i in range(len(idx) - 1):
                lo, hi = lats[i], lats[i + 1]
                if lo <= 0:
                    continue
                inner_pts = planned[(planned[:, d - 1] > lo) & (planned[:, d - 1] < hi), d - 1]
                edges = np.concatenate([[lo], np.sort(inner_pts), [hi]])
                ratio = float(np.max(edges[1:] / edges[:-1]))
                if ratio > self.max_ratio and (best is None or ratio > best[1]):
                    best = (d - 1, ratio, archs[idx[i]], archs[idx[i + 1]], lo, hi)
        return best

    def _filler(self) -> Arch | None:
        step = self.widest_step()
        if step is None:
            return None
        dev, _, fast, slow, lo, hi = step
        target = math.log(lo * hi) / 2
        best: tuple[float, str, Arch, tuple[float, ...]] | None = None
        for k in range(self.tries):
            parent = (fast, slow)[k % 2]
            if k % 5 == 4:
                parent = crossover(fast, slow, self._rng)
            prob = MUTATION_PROBS[int(self._rng.integers(len(MUTATION_PROBS)))]
            arch = mutate(self.space, parent, self._rng, prob)
            if arch.arch_id in self._handed:
                continue
            lats = tuple(float(v) for v in self.latency(arch))
            if not lo < lats[dev] < hi:
                continue
            key = abs(math.log(lats[dev]) - target)
            if best is None or (key, arch.arch_id) < best[:2]:
                best = (key, arch.arch_id, arch, lats)
        if best is None:
            return None
        arch = best[2]
        self._handed.add(arch.arch_id)
        self._planned[arch.arch_id] = best[3]
        return arch
