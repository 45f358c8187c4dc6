"""Optuna samplers as search strategies (`optuna-tpe`, `optuna-nsga2`, `optuna-gp`).

Each gene of the space's fixed-length encoding is one categorical parameter; the
objectives (error, latency; with several devices one latency each) are minimised; the largest
latency budget (of each device) is a constraint through `trial.set_constraint` (Optuna 5). The study lives in an Optuna storage: by default
`optuna.db` (SQLite) in the search folder, or any URL given as `storage`, so
`optuna-dashboard sqlite:///.../optuna.db` shows it live.

Resume. Samplers keep no state of their own beyond their random generator (they rebuild
from the study), so the sampler is rebuilt for every ask with a seed derived from (seed,
ask index): the same study gives the same asks. After an interruption the study holds
trials the runner never saved (told after its last batch boundary, or still running); the
study is then rebuilt from the trials the runner had saved, under the name
`<study>~<k>`, so a resumed search asks exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import UserError
from nas.search.strategy import Strategy
from nas.space import Arch, SearchSpace

STATE_VERSION = 1
CONSTRAINT = "latency_over_largest_budget_ms"


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a core dependency
        raise UserError("the optuna strategies need optuna (pip install optuna)",
                        field="search.strategy") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _derived_seed(seed: int, index: int) -> int:
    h = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(h[:4], "little")


class OptunaStrategy(Strategy):
    """Ask/tell over an Optuna study; see the module docstring for storage and resume."""

    sampler_kind = "tpe"

    def __init__(self, space: SearchSpace, seed: int, storage: str | None = None,
                 study_name: str | None = None, seed_extremes: bool = True,
                 population: int | None = None, max_tries: int = 50):
        super().__init__(space, seed)
        if storage is not None and (not isinstance(storage, str) or "://" not in storage):
            raise UserError(f"expected a storage URL such as sqlite:///path/optuna.db, got "
                            f"{str(storage)[:80]!r}", field="search.storage")
        if population is not None and (not isinstance(population, int) or population < 2):
            raise UserError(f"expected an integer >= 2, got {population!r}",
                            field="search.options.population")
        if not isinstance(max_tries, int) or max_tries < 1:
            raise UserError(f"expected an integer >= 1, got {max_tries!r}",
                            field="search.options.max_tries")
        self.storage_url = storage
        self._own_storage = storage is None  # ours (in the search folder) or the user's
        self.study_base = study_name or f"gaze-nas-{self.name}-seed{seed}"
        self.study_name = self.study_base
        self.seed_extremes = bool(seed_extremes)
        self.population = population
        self.max_tries = max_tries
        self.max_budget: float | None = None
        self.n_objectives = 2                 # error + one latency per device
        self._limits: list[tuple[str, int, float]] | None = None  # several devices' constraints
        self._owner = uuid.uuid4().hex  # marks this search's trials in a shared study
        self._genes = space.gene_cardinalities()
        self._study = None
        self._n_asks = 0                      # Optuna asks so far (seeds each one)
        self._n_trials = 0                    # trials of ours in the study (asked or added)
        self._n_told = 0
        self._rebuilds = 0
        self._told: dict[str, tuple[float, ...]] = {}   # arch_id -> objectives
        self._pending: dict[str, Any] = {}              # arch_id -> running optuna Trial

    # ------------------------------------------------------------------ set-up
    def set_objectives(self, objectives: Sequence[str],
                       budgets: Mapping[str, Sequence[float]]) -> None:
        """One direction per objective. With several devices each device's largest budget
        is its own constraint, `latency_over_largest_budget_ms:<objective>`; with one, the
        constraint keeps its name and comes from `attach`."""
        self.n_objectives = len(objectives)
        if len(objectives) > 2:
            self._limits = [(f"{CONSTRAINT}:{o}", i, float(max(budgets[o])))
                            for i, o in enumerate(objectives) if i and budgets.get(o)]

    def _constraints(self, objectives: tuple[float, ...]) -> list[tuple[str, float]]:
        """(name, value) of each constraint: latency minus the largest budget (<= 0: met)."""
        limits = self._limits if self._limits is not None else (
            [(CONSTRAINT, 1, self.max_budget)] if self.max_budget is not None else [])
        return [(name, float(objectives[i]) - limit) for name, i, limit in limits]

    def attach(self, out_dir: Path, budgets: Sequence[float]) -> None:
        """Default storage in the search folder; the largest budget is the constraint."""
        if self.storage_url is None:
            self.storage_url = f"sqlite:///{Path(out_dir).resolve() / 'optuna.db'}"
            self._own_storage = True
        else:
            self._own_storage = False
        self.max_budget = max(budgets) if budgets else None

    def _sampler(self, seed: int):
        optuna = _optuna()
        if self.sampler_kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if self.sampler_kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed,
                                                 population_size=self.population or 32)
        if self.sampler_kind == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        raise ValueError(self.sampler_kind)

    def study(self):
        if self._study is None:
            optuna = _optuna()
            if self.storage_url is None:
                self.storage_url = "sqlite:///optuna.db"  # not attached: a plain ask/tell user
                self._own_storage = True
            self._study = optuna.create_study(
                storage=self.storage_url, study_name=self.study_name,
                directions=["minimize"] * self.n_objectives, load_if_exists=True,
                sampler=self._sampler(self.seed))
            if self._n_asks == 0 and self._n_told == 0 and self._study.trials:
                self._fresh_start()
            if self._n_asks == 0 and self.seed_extremes and not self._study.trials:
                for arch in (self.space.largest(), self.space.smallest()):
                    self._study.enqueue_trial(self.space.encode(arch))
        return self._study

    def _fresh_start(self) -> None:
        """A new search finds its study name taken: in our own storage it is a leftover of
        a discarded search (deleted); in a shared storage, a fresh name is used."""
        optuna = _optuna()
        if self._own_storage:
            optuna.delete_study(study_name=self.study_name, storage=self.storage_url)
        else:
            names = {s.study_name for s in optuna.get_all_study_summaries(self.storage_url)}
            k = 1
            while f"{self.study_base}-{k}" in names:
                k += 1
            self.study_name = f"{self.study_base}-{k}"
        self._study = optuna.create_study(
            storage=self.storage_url, study_name=self.study_name,
            directions=["minimize"] * self.n_objectives, sampler=self._sampler(self.seed))

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int) -> list[Arch]:
        study = self.study()
        out: list[Arch] = []
        for _ in range(max(0, int(n))):
            arch = self._ask_one(study)
            if arch is None:
                break
            out.append(arch)
        return out

    def _ask_one(self, study) -> Arch | None:
        optuna = _optuna()
        for _ in range(self.max_tries):
            study.sampler = self._sampler(_derived_seed(self.seed, self._n_asks))
            self._n_asks += 1
            trial = study.ask()
            trial.set_user_attr("owner", self._owner)
            trial.set_user_attr("seq", self._n_trials)  # creation order (not trial.number)
            self._n_trials += 1
            enc = {g: trial.suggest_categorical(g, list(range(c)))
                   for g, c in self._genes.items()}
            arch = self.space.decode(enc)
            aid = arch.arch_id
            if aid in self._told:  # the same arch again: the sampler learns it is known
                self._finish(study, trial, self._told[aid], True)
                continue
            if aid in self._pending:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            trial.set_user_attr("arch", arch.to_string())
            self._pending[aid] = trial
            return arch
        # the sampler keeps proposing known archs: hand it an unseen random one
        rng = np.random.default_rng(_derived_seed(self.seed, -self._n_asks))
        for _ in range(1000):
            arch = self.space.sample(rng)
            if arch.arch_id not in self._told and arch.arch_id not in self._pending:
                study.enqueue_trial(self.space.encode(arch))
                return self._ask_one(study)
        return None

    def _finish(self, study, trial, objectives: tuple[float, ...], feasible: bool) -> None:
        optuna = _optuna()
        if not feasible or not all(np.isfinite(objectives)):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        for name, value in self._constraints(objectives):
            trial.set_constraint(name, value)
        study.tell(trial, list(map(float, objectives)))

    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        aid = arch.arch_id
        if aid in self._told:
            return
        trial = self._pending.pop(aid, None)
        if trial is None:  # told without an ask (a seed): added as a finished trial
            self._add_finished(arch, tuple(objectives), feasible)
        else:
            self._finish(self.study(), trial, tuple(objectives), feasible)
        self._told[aid] = tuple(float(v) for v in objectives)
        self._n_told += 1

    def _add_finished(self, arch: Arch, objectives: tuple[float, ...], feasible: bool) -> None:
        optuna = _optuna()
        from optuna.distributions import CategoricalDistribution

        study = self.study()
        ok = feasible and all(np.isfinite(objectives))
        system = {f"constraints:{name}": value
                  for name, value in (self._constraints(objectives) if ok else [])}
        study.add_trial(optuna.trial.create_trial(
            params=self.space.encode(arch),
            distributions={g: CategoricalDistribution(list(range(c)))
                           for g, c in self._genes.items()},
            values=list(map(float, objectives)) if ok else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
            user_attrs={"owner": self._owner, "arch": arch.to_string(),
                        "seq": self._n_trials},
            system_attrs=system))
        self._n_trials += 1

    def enqueue(self, archs: Sequence[Arch]) -> None:
        """Evaluate these archs first (a previous front, the baselines)."""
        study = self.study()
        for arch in archs:
            study.enqueue_trial(self.space.encode(arch))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": STATE_VERSION, "seed": self.seed,
                "owner": self._owner,
                "storage": self.storage_url, "study_name": self.study_name,
                "n_asks": self._n_asks, "n_trials": self._n_trials, "n_told": self._n_told,
                "rebuilds": self._rebuilds}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue the saved study; if it holds trials after the saved batch boundary
        (an interruption), rebuild it from the trials up to that boundary."""
        if d.get("name") != self.name or d.get("version") != STATE_VERSION:
            raise ValueError(f"state is for {d.get('name')!r} v{d.get('version')}, "
                             f"not {self.name!r} v{STATE_VERSION}")
        optuna = _optuna()
        self.study_name, self._rebuilds = d["study_name"], int(d.get("rebuilds", 0))
        self._owner = d["owner"]
        self._n_asks, self._n_told = int(d["n_asks"]), int(d["n_told"])
        self._n_trials = int(d.get("n_trials", self._n_asks))
        if d.get("storage") and self.storage_url != d["storage"] and not self._own_storage:
            raise UserError(f"this search's study is in {d['storage']}, not in "
                            f"{self.storage_url}", field="search.storage")
        self.storage_url = d.get("storage") or self.storage_url
        try:
            old = optuna.load_study(study_name=self.study_name, storage=self.storage_url)
        except KeyError:
            raise UserError(f"the search state names study {self.study_name!r}, which "
                            f"{self.storage_url} does not hold; start the search afresh",
                            field="search.storage") from None
        ours = sorted((t for t in old.trials if t.user_attrs.get("owner") == self._owner),
                      key=lambda t: t.user_attrs.get("seq", t.number))
        # At the saved boundary every one of the first n_trials trials was finished;
        # anything later (or still running) happened after it and is dropped by a rebuild.
        keep = ours[:self._n_trials]
        if len(ours) > len(keep) or any(not t.state.is_finished() for t in keep):
            self._rebuilds += 1
            self.study_name = f"{self.study_base}~{self._rebuilds}"
            if self._own_storage:
                try:
                    optuna.delete_study(study_name=self.study_name, storage=self.storage_url)
                except KeyError:
                    pass
            self._study = optuna.create_study(
                storage=self.storage_url, study_name=self.study_name,
                directions=["minimize"] * self.n_objectives, sampler=self._sampler(self.seed))
            if self.seed_extremes:  # extremes not yet asked at the boundary: queued again,
                asked = {t.user_attrs.get("arch") for t in keep}  # first, as originally
                for arch in (self.space.largest(), self.space.smallest()):
                    if arch.to_string() not in asked:
                        self._study.enqueue_trial(self.space.encode(arch))
            # the kept trials in their original order, so samplers see the same history
            self._study.add_trials(sorted(keep, key=lambda t: t.number))
        else:
            self._study = old
        self._told, self._pending = {}, {}
        for t in keep:
            arch_s = t.user_attrs.get("arch")
            if arch_s and t.state.name == "COMPLETE":
                self._told[self.space.parse(arch_s).arch_id] = tuple(t.values)
            elif arch_s and t.state.name == "FAIL":
                self._told[self.space.parse(arch_s).arch_id] = (float("inf"),) * self.n_objectives


class OptunaTPE(OptunaStrategy):
    """Optuna 5's default multi-objective sampler: multivariate TPE with constant liar."""
    name = "optuna-tpe"
    sampler_kind = "tpe"


class OptunaNSGA2(OptunaStrategy):
    """Optuna's NSGA-II (population 32 by default, as our evolution)."""
    name = "optuna-nsga2"
    sampler_kind = "nsga2"


class OptunaGP(OptunaStrategy):
    """Optuna's Gaussian-process sampler: few evaluations, but seconds per ask."""
    name = "optuna-gp"
    sampler_kind = "gp"
