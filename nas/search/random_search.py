"""Random-search baseline: uniform samples of the space, seeded and never repeated.

Every search result should be read against this: a strategy that cannot beat it on the
same budget of evaluations is not earning its complexity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.errors import UserError
from nas.search.strategy import Strategy
from nas.space import Arch, SearchSpace

STATE_VERSION = 1


class RandomSearch(Strategy):
    """Uniform sampling via `space.sample`; `tell` only records which archs are done."""

    name = "random"
    discardable_asks = True

    def __init__(self, space: SearchSpace, seed: int, max_tries: int = 1000):
        super().__init__(space, seed)
        if not isinstance(max_tries, int) or max_tries < 1:
            raise UserError(f"expected an integer >= 1, got {max_tries!r}",
                            field="search.options.max_tries")
        self.max_tries = max_tries
        self._rng = np.random.default_rng(self.seed)
        self._seen: set[str] = set()
        self._n_told = 0

    def ask(self, n: int) -> list[Arch]:
        """Up to `n` unseen samples; fewer only when `max_tries` draws find nothing new."""
        out: list[Arch] = []
        for _ in range(max(0, int(n))):
            for _ in range(self.max_tries):
                arch = self.space.sample(self._rng)
                if arch.arch_id not in self._seen:
                    self._seen.add(arch.arch_id)
                    out.append(arch)
                    break
            else:
                break
        return out

    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        """Random search ignores results; it only marks the arch as seen."""
        self._seen.add(arch.arch_id)
        self._n_told += 1

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": STATE_VERSION, "seed": self.seed,
                "rng": self._rng.bit_generator.state, "seen": sorted(self._seen),
                "n_told": self._n_told}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("name") != self.name or d.get("version") != STATE_VERSION:
            raise ValueError(f"state is for {d.get('name')!r} v{d.get('version')}, "
                             f"not {self.name!r} v{STATE_VERSION}")
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = d["rng"]
        self._seen = set(d["seen"])
        self._n_told = int(d["n_told"])
