"""NSGA-II-style multi-objective evolution over Archs, asynchronous ask/tell.

Survival is (mu + lambda): whenever `ask` finds results told since the last survival step,
the population and those results are ranked by non-dominated sort and the last admitted
front is truncated by crowding distance. Told results can arrive in any order and `ask`
can run ahead of `tell`, so a pool of workers never waits for a generation to finish.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nas.errors import UserError
from nas.search.operators import crossover, mutate
from nas.search.pareto import crowding_distance, nondominated_sort
from nas.search.strategy import Strategy
from nas.space import Arch, SearchSpace

STATE_VERSION = 1
# crowding distance measured on the objectives as they are, or on their logarithms: with
# `log`, a 2x step in latency counts the same at 0.03 ms as at 0.3 ms, so the fast end of
# the front (where steps are small in ms) is not crowded out by the slow end
CROWDING = ("linear", "log")


class Evolution(Strategy):
    """Multi-objective evolution: largest + smallest + random initial population, binary
    tournament on (rank, crowding), crossover then mutation, never an arch twice."""

    name = "evolution"
    discardable_asks = True

    def __init__(self, space: SearchSpace, seed: int, population: int = 32,
                 crossover_prob: float = 0.5, mutation_prob: float = 0.15,
                 max_tries: int = 100, single_family_share: float = 0.5,
                 crowding: str = "linear"):
        super().__init__(space, seed)
        if not isinstance(population, int) or population < 2:
            raise UserError(f"expected an integer >= 2, got {population!r}",
                            field="search.options.population")
        for key, p in (("crossover_prob", crossover_prob), ("mutation_prob", mutation_prob),
                       ("single_family_share", single_family_share)):
            if not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise UserError(f"expected a probability in [0, 1], got {p!r}",
                                field=f"search.options.{key}")
        if not isinstance(max_tries, int) or max_tries < 1:
            raise UserError(f"expected an integer >= 1, got {max_tries!r}",
                            field="search.options.max_tries")
        if crowding not in CROWDING:
            raise UserError(f"expected one of {', '.join(CROWDING)}, got {crowding!r}",
                            field="search.options.crowding")
        self.options = {"population": population, "crossover_prob": float(crossover_prob),
                        "mutation_prob": float(mutation_prob), "max_tries": max_tries,
                        "single_family_share": float(single_family_share),
                        "crowding": crowding}
        self._rng = np.random.default_rng(self.seed)
        self._n_initial = 0                      # initial-population archs handed out so far
        self._archive: dict[str, dict[str, Any]] = {}  # told, in tell order
        self._pending: dict[str, Arch] = {}      # asked, not yet told, in ask order
        self._population: list[str] = []         # survivors (arch ids)
        self._unmerged: list[str] = []           # told since the last survival step
        self._rank: dict[str, int] = {}
        self._crowd: dict[str, float] = {}

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int) -> list[Arch]:
        """Up to `n` unseen archs: the initial population first, then offspring."""
        self._survive()
        out: list[Arch] = []
        for _ in range(max(0, int(n))):
            arch = self._next()
            if arch is None:
                break
            self._pending[arch.arch_id] = arch
            out.append(arch)
        return out

    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        """Record a result; a non-finite objective makes it infeasible. A second tell of
        the same arch is ignored (the first result stands)."""
        aid = arch.arch_id
        if aid in self._archive:
            return
        objs = [float(v) for v in objectives]
        if self._archive:
            m = len(next(iter(self._archive.values()))["objectives"])
            if len(objs) != m:
                raise ValueError(f"told {len(objs)} objectives, earlier tells had {m}")
        feasible = bool(feasible) and all(math.isfinite(v) for v in objs)
        if aid not in self._pending and self._n_initial < self.options["population"]:
            self._n_initial += 1  # a seed told without an ask takes an initial slot
        arch = self._pending.pop(aid, arch)
        self._archive[aid] = {"arch": arch, "genes": self._genes(arch), "objectives": objs,
                              "feasible": feasible}
        self._unmerged.append(aid)

    # ------------------------------------------------------------------ internals
    def _seen(self, aid: str) -> bool:
        return aid in self._archive or aid in self._pending

    def _fresh_random(self, tries: int) -> Arch | None:
        # A share of random archs use one block family throughout: the region a supernet
        # trained with single-family sampling knows best, so the search starts there.
        for _ in range(tries):
            single = self._rng.random() < self.options["single_family_share"]
            arch = self.space.sample(self._rng, single_family=single)
            if not self._seen(arch.arch_id):
                return arch
        return None

    def _next(self) -> Arch | None:
        tries = self.options["max_tries"]
        if self._n_initial < self.options["population"]:
            k = self._n_initial
            self._n_initial += 1
            seed_arch = (self.space.largest() if k == 0 else
                         self.space.smallest() if k == 1 else None)
            if seed_arch is not None and not self._seen(seed_arch.arch_id):
                return seed_arch
            return self._fresh_random(tries * 10)
        if self._population:
            for _ in range(tries):
                child = self._breed()
                if not self._seen(child.arch_id):
                    return child
        return self._fresh_random(tries * 10)

    def _tournament(self) -> Arch:
        i, j = self._rng.integers(len(self._population), size=2)
        a, b = self._population[int(i)], self._population[int(j)]
        ka = (self._rank[a], -self._crowd[a])
        kb = (self._rank[b], -self._crowd[b])
        return self._archive[b if kb < ka else a]["arch"]

    def _breed(self) -> Arch:
        p1 = self._tournament()
        if self._rng.random() < self.options["crossover_prob"]:
            p2 = self._tournament()
            p1 = crossover(p1, p2, self._rng)
        return mutate(self.space, p1, self._rng, self.options["mutation_prob"])

    def _survive(self) -> None:
        """Merge results told since the last call into the population (mu + lambda)."""
        if not self._unmerged:
            return
        pool = self._population + [a for a in self._unmerged if a not in self._population]
        self._unmerged = []
        size = self.options["population"]
        feas = [a for a in pool if self._archive[a]["feasible"]]
        infeas = [a for a in pool if not self._archive[a]["feasible"]]
        chosen: list[str] = []
        if feas:
            F = np.array([self._archive[a]["objectives"] for a in feas])
            for front in nondominated_sort(F):
                if len(chosen) + len(front) <= size:
                    chosen += [feas[i] for i in front]
                    continue
                cd = self._crowding(F[front])
                keep = front[np.argsort(-cd, kind="stable")][: size - len(chosen)]
                chosen += [feas[i] for i in sorted(keep)]
                break
        chosen += infeas[: size - len(chosen)]
        self._population = chosen
        self._rank_population()

    def _crowding(self, F: np.ndarray) -> np.ndarray:
        if self.options["crowding"] == "log" and (F > 0).all():
            return crowding_distance(np.log(F))
        return crowding_distance(F)

    def _rank_population(self) -> None:
        """Rank and crowding of the current population (what tournaments compare)."""
        self._rank, self._crowd = {}, {}
        feas = [a for a in self._population if self._archive[a]["feasible"]]
        worst = 0
        if feas:
            F = np.array([self._archive[a]["objectives"] for a in feas])
            for r, front in enumerate(nondominated_sort(F)):
                cd = self._crowding(F[front])
                for i, d in zip(front, cd):
                    self._rank[feas[i]], self._crowd[feas[i]] = r, float(d)
                worst = r + 1
        for a in self._population:
            if a not in self._rank:  # infeasible: behind every feasible arch
                self._rank[a], self._crowd[a] = worst, 0.0

    # ------------------------------------------------------------------ state
    def _genes(self, arch: Arch) -> list[int]:
        """Full genotype (inactive genes too) as choice indices: compact and lossless."""
        return list(self.space.encode(arch).values())

    def _arch(self, genes: list[int]) -> Arch:
        return self.space.decode(dict(zip(self.space.gene_cardinalities(), genes)))

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: options, rng state, archive and pending asks (as gene indices, in
        `space.gene_cardinalities()` order), population."""
        return {
            "name": self.name, "version": STATE_VERSION, "seed": self.seed,
            "options": dict(self.options), "rng": self._rng.bit_generator.state,
            "genes": list(self.space.gene_cardinalities()),
            "n_initial": self._n_initial,
            "archive": [{"genes": e["genes"], "feasible": e["feasible"],
                         "objectives": [v if math.isfinite(v) else None
                                        for v in e["objectives"]]}
                        for e in self._archive.values()],
            "pending": [self._genes(a) for a in self._pending.values()],
            "population": list(self._population), "unmerged": list(self._unmerged),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a `state_dict`; refuses one made by another strategy, options or space."""
        if d.get("name") != self.name or d.get("version") != STATE_VERSION:
            raise ValueError(f"state is for {d.get('name')!r} v{d.get('version')}, "
                             f"not {self.name!r} v{STATE_VERSION}")
        if d["options"] != self.options:
            raise UserError(f"saved search used options {d['options']}, now {self.options}",
                            field="search.options")
        if d["genes"] != list(self.space.gene_cardinalities()):
            raise ValueError("saved search state belongs to a space with other genes")
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = d["rng"]
        self._n_initial = int(d["n_initial"])
        self._archive = {}
        for e in d["archive"]:
            arch = self._arch(e["genes"])
            objs = [float("nan") if v is None else float(v) for v in e["objectives"]]
            self._archive[arch.arch_id] = {"arch": arch, "genes": list(e["genes"]),
                                           "objectives": objs, "feasible": bool(e["feasible"])}
        self._pending = {a.arch_id: a for a in map(self._arch, d["pending"])}
        self._population = list(d["population"])
        self._unmerged = list(d["unmerged"])
        self._rank_population()

    # ------------------------------------------------------------------ views
    @property
    def population(self) -> list[Arch]:
        """Current survivors (for inspection and tests)."""
        return [self._archive[a]["arch"] for a in self._population]
