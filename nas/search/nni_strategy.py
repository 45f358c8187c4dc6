"""NNI's HPO tuners as search strategies (`nni-tpe`, `nni-evolution`, `nni-random`),
installed with `pip install .[nni]` and imported only when used.

NNI tuners are single-objective, so the search is scalarized: one tuner per latency
budget, asked in turn, each minimising `error * (1 + penalty * max(0, latency / budget -
1))`, the error of a subnet within its budget and a steeply inflated one beyond it. Each
tuner learns only from its own asks, so at equal evaluations every budget gets a third of
the samples; a native multi-objective strategy (evolution, optuna-*) shares all of them
(the README's search comparison measures what this costs).

State: NNI tuners cannot all re-import their history (the evolution tuner's `import_data`
does nothing), so the strategy rebuilds a tuner by replaying its calls: a fresh tuner with
the same seed, given the same asks and results in the same order, is in the same state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import UserError
from nas.search.strategy import Strategy
from nas.space import Arch, SearchSpace

STATE_VERSION = 1


def _nni():
    try:
        import nni  # noqa: F401
    except ImportError:
        raise UserError("the nni-* strategies need NNI: pip install 'gaze-nas[nni]' "
                        "(or pip install nni==3.0)", field="search.strategy") from None
    import logging

    logging.getLogger("nni").setLevel(logging.WARNING)
    return nni


def _make_tuner(kind: str, seed: int, population: int):
    _nni()
    if kind == "tpe":
        from nni.algorithms.hpo.tpe_tuner import TpeTuner

        return TpeTuner(optimize_mode="minimize", seed=seed)
    if kind == "random":
        from nni.algorithms.hpo.random_tuner import RandomTuner

        return RandomTuner(seed=seed)
    if kind == "evolution":
        from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

        return EvolutionTuner(optimize_mode="minimize", population_size=population)
    raise ValueError(kind)


class NNIStrategy(Strategy):
    """One NNI tuner per budget, asked round-robin; see the module docstring."""

    kind = "tpe"

    def __init__(self, space: SearchSpace, seed: int, penalty: float = 10.0,
                 population: int = 32, seed_extremes: bool = True, max_tries: int = 50):
        super().__init__(space, seed)
        if not isinstance(penalty, (int, float)) or not penalty > 0:
            raise UserError(f"expected a number > 0, got {penalty!r}",
                            field="search.options.penalty")
        if not isinstance(population, int) or population < 2:
            raise UserError(f"expected an integer >= 2, got {population!r}",
                            field="search.options.population")
        self.penalty, self.population = float(penalty), population
        self.seed_extremes, self.max_tries = bool(seed_extremes), max_tries
        self.budgets: list[float] = []
        self._lat_of: list[int] = []   # per tuner: the objective index of its latency
        self._targets: list[tuple[int, float]] | None = None  # several devices: (index, budget)
        self._genes = space.gene_cardinalities()
        self._tuners: list[Any] | None = None
        self._events: list[list] = []  # ["a", tuner, pid] / ["t", tuner, pid, loss]
        self._next_pid = 0
        self._turn = 0
        self._queue: list[str] = []     # enqueued arch strings, served first
        self._served_queue = 0
        self._pending: dict[str, tuple[int, int, dict]] = {}  # arch_id -> (tuner, pid, params)
        self._told: set[str] = set()
        self._losses: dict[tuple[str, int], float] = {}  # (arch_id, tuner) -> its loss

    def set_objectives(self, objectives: Sequence[str],
                       budgets: Mapping[str, Sequence[float]]) -> None:
        """With several devices: one tuner per (device, budget), each penalising only its
        own device's latency; the trials they share still give every device its front."""
        if len(objectives) > 2:
            self._targets = [(i, float(b)) for i, o in enumerate(objectives) if i
                             for b in sorted(budgets.get(o, ()))] or [(1, math.inf)]

    def attach(self, out_dir: Path, budgets: Sequence[float]) -> None:
        if self._targets is not None:
            self.budgets = [b for _, b in self._targets]
            self._lat_of = [i for i, _ in self._targets]
        else:
            self.budgets = sorted(float(b) for b in budgets) or [math.inf]
            self._lat_of = [1] * len(self.budgets)
        if self.seed_extremes and not self._queue and not self._events:
            self._queue = [self.space.largest().to_string(), self.space.smallest().to_string()]

    # ------------------------------------------------------------------ tuners
    def _fresh_tuners(self) -> list[Any]:
        search_space = {g: {"_type": "choice", "_value": list(range(c))}
                        for g, c in self._genes.items()}
        tuners = []
        for i in range(len(self.budgets or [math.inf])):
            t = _make_tuner(self.kind, self.seed * 1000 + i, self.population)
            if self.kind == "evolution":  # NNI seeds nothing here: make its draws ours
                t.random_state = np.random.RandomState(self.seed * 1000 + i)
                t.update_search_space(search_space)
                t.random_state = np.random.RandomState(self.seed * 1000 + i)
                t.population = []
                for _ in range(t.population_size):
                    t._random_generate_individual()
            else:
                t.update_search_space(search_space)
            tuners.append(t)
        return tuners

    def _get_tuners(self) -> list[Any]:
        if self._tuners is None:
            self._tuners = self._fresh_tuners()
        return self._tuners

    def _loss(self, objectives: tuple[float, ...], feasible: bool, b: int) -> float:
        err = float(objectives[0])
        lat = float(objectives[self._lat_of[b] if b < len(self._lat_of) else 1])
        if not feasible or not (math.isfinite(err) and math.isfinite(lat)):
            return 1e6
        budget = self.budgets[b] if self.budgets else math.inf
        over = max(0.0, lat / budget - 1.0) if math.isfinite(budget) else 0.0
        return err * (1.0 + self.penalty * over)

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int) -> list[Arch]:
        out: list[Arch] = []
        for _ in range(max(0, int(n))):
            arch = self._ask_one()
            if arch is None:
                break
            out.append(arch)
        return out

    def _ask_one(self) -> Arch | None:
        while self._served_queue < len(self._queue):
            arch = self.space.parse(self._queue[self._served_queue])
            self._served_queue += 1
            if arch.arch_id not in self._told and arch.arch_id not in self._pending:
                self._pending[arch.arch_id] = (-1, -1, {})
                return arch
        tuners = self._get_tuners()
        for _ in range(self.max_tries):
            b = self._turn % len(tuners)
            self._turn += 1
            pid = self._next_pid
            self._next_pid += 1
            try:
                params = tuners[b].generate_parameters(pid)
            except Exception:  # e.g. NNI's NoMoreTrialError: this tuner has nothing now
                self._events.append(["a", b, pid, False])
                continue
            self._events.append(["a", b, pid, True])
            arch = self.space.decode({g: int(params[g]) for g in self._genes})
            aid = arch.arch_id
            if aid in self._told or aid in self._pending:  # known: tell it as such
                self._tell_tuner(b, pid, params, 1e6 if aid in self._pending else None, aid)
                continue
            self._pending[aid] = (b, pid, params)
            return arch
        return None

    def _tell_tuner(self, b: int, pid: int, params: dict, loss: float | None,
                    aid: str) -> None:
        if loss is None:
            loss = self._losses.get((aid, b), 1e6)
        self._get_tuners()[b].receive_trial_result(pid, params, loss)
        self._events.append(["t", b, pid, loss])

    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        aid = arch.arch_id
        if aid in self._told:
            return
        b, pid, params = self._pending.pop(aid, (-1, -1, {}))
        for i in range(len(self.budgets or [math.inf])):
            self._losses[(aid, i)] = self._loss(tuple(objectives), feasible, i)
        if b >= 0:
            self._tell_tuner(b, pid, params, self._losses[(aid, b)], aid)
        self._told.add(aid)

    def enqueue(self, archs: Sequence[Arch]) -> None:
        """Evaluate these archs first."""
        self._queue += [a.to_string() for a in archs]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": STATE_VERSION, "seed": self.seed,
                "budgets": self.budgets, "events": self._events, "turn": self._turn,
                "next_pid": self._next_pid, "queue": self._queue,
                "served_queue": self._served_queue, "told": sorted(self._told),
                "losses": [[a, b, v] for (a, b), v in self._losses.items()],
                "pending": {}} | ({"latency_index": self._lat_of}
                                 if self._targets is not None else {})

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Rebuild every tuner by replaying its asks and results (see module docstring)."""
        if d.get("name") != self.name or d.get("version") != STATE_VERSION:
            raise ValueError(f"state is for {d.get('name')!r} v{d.get('version')}, "
                             f"not {self.name!r} v{STATE_VERSION}")
        self.budgets = [float(b) for b in d["budgets"]]
        self._lat_of = [int(i) for i in d.get("latency_index", [1] * len(self.budgets))]
        self._tuners = self._fresh_tuners()
        params_of: dict[int, dict] = {}
        for ev in d["events"]:
            if ev[0] == "a":
                _, b, pid, ok = ev
                try:
                    params_of[pid] = self._tuners[b].generate_parameters(pid)
                except Exception:
                    if ok:
                        raise ValueError("replaying the NNI tuner gave another result") from None
            else:
                _, b, pid, loss = ev
                self._tuners[b].receive_trial_result(pid, params_of[pid], loss)
        self._events = [list(e) for e in d["events"]]
        self._turn, self._next_pid = int(d["turn"]), int(d["next_pid"])
        self._queue, self._served_queue = list(d["queue"]), int(d["served_queue"])
        self._told = set(d["told"])
        self._losses = {(a, int(b)): float(v) for a, b, v in d["losses"]}
        self._pending = {}


class NNITPE(NNIStrategy):
    """NNI's TPE tuner, one per budget."""
    name = "nni-tpe"
    kind = "tpe"


class NNIEvolution(NNIStrategy):
    """NNI's (naive) evolution tuner, one per budget."""
    name = "nni-evolution"
    kind = "evolution"


class NNIRandom(NNIStrategy):
    """NNI's random tuner: the NNI back-end's own baseline."""
    name = "nni-random"
    kind = "random"
