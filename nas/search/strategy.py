"""The ask/tell contract every search strategy meets, and the registry that names them.

The search loop (`loop.py`) only speaks this contract, so a strategy never learns how
latency or error are computed, and new back-ends (Optuna, NNI) plug in with
`register_strategy` without touching the loop.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas.errors import UserError, excerpt
from nas.space import Arch, SearchSpace


class Strategy(ABC):
    """Ask/tell search strategy over the archs of one `SearchSpace`.

    `ask` may be called again before earlier asks are told, and `tell` may come in any
    order; `ask` may return fewer than `n` archs when the space runs out of unseen ones.
    `state_dict` is JSON-able and, loaded into a strategy built with the same space, seed
    and options, reproduces the same future asks.
    """

    name: str = "base"
    discardable_asks: bool = False  # True: an asked arch may never be told (screening drops
                                    # candidates); the strategy just never hears of it again

    def __init__(self, space: SearchSpace, seed: int):
        self.space = space
        self.seed = int(seed)

    @abstractmethod
    def ask(self, n: int) -> list[Arch]:
        """Up to `n` new archs to evaluate, never one already asked or told."""

    @abstractmethod
    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        """Report the (minimised) objectives of an evaluated arch."""

    def set_objectives(self, objectives: Sequence[str],
                       budgets: Mapping[str, Sequence[float]]) -> None:
        """Called by the runner first: the minimised objectives `tell` will report (the
        error, then one latency per device) and the budgets of each latency objective.
        Strategies that rank by Pareto dominance need nothing (the default); those that fix
        the problem's shape up front (an Optuna study's directions and constraints, NNI's
        tuner per budget) size it here."""

    def attach(self, out_dir: Path, budgets: Sequence[float]) -> None:
        """Called by the runner before anything else but `set_objectives`: the search folder
        (a strategy that persists itself, e.g. in an Optuna storage, puts it there) and the
        budgets (with several devices, the first device's; `set_objectives` has them all)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-able snapshot sufficient to resume exactly."""

    @abstractmethod
    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a snapshot made by `state_dict`."""


# name -> factory, or "module:attribute" resolved lazily (keeps optional back-ends optional)
_REGISTRY: dict[str, Callable[..., Strategy] | str] = {
    "evolution": "nas.search.evolution:Evolution",
    "random": "nas.search.random_search:RandomSearch",
    "optuna-tpe": "nas.search.optuna_strategy:OptunaTPE",
    "optuna-nsga2": "nas.search.optuna_strategy:OptunaNSGA2",
    "optuna-gp": "nas.search.optuna_strategy:OptunaGP",
    "nni-tpe": "nas.search.nni_strategy:NNITPE",          # needs .[nni]
    "nni-evolution": "nas.search.nni_strategy:NNIEvolution",
    "nni-random": "nas.search.nni_strategy:NNIRandom",
}


def register_strategy(name: str, factory: Callable[..., Strategy] | str) -> None:
    """Make `make_strategy(name, ...)` build `factory(space, seed, **opts)`.

    `factory` may be a "module:attribute" string so that importing the registry never
    imports an optional dependency.
    """
    _REGISTRY[name] = factory


ENTRY_POINT_GROUP = "gaze_nas.strategies"


def _entry_points() -> dict[str, str]:
    """Strategies other packages declare under the `gaze_nas.strategies` entry-point group."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_strategies() -> list[str]:
    """Registered and entry-point strategy names, sorted."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def check_strategy(name: str, field: str = "search.strategy") -> None:
    """Refuse an unknown name before any work starts (the CLI calls it while parsing flags,
    so a typo costs no data loading), suggesting the nearest known name. A "module:attr"
    name is an external strategy class, imported here to check it exists. `field` is what
    the error names: the config field, or the CLI flag that set it."""
    if name in _REGISTRY or name in _entry_points():
        return
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError, TypeError) as exc:  # "", ".rel"
            raise UserError(f"cannot import external strategy {excerpt(name)} ({exc})",
                            field=field) from None
        if not (inspect.isclass(obj) and issubclass(obj, Strategy)) and not callable(obj):
            raise UserError(f"{excerpt(name)} is not a Strategy class or factory", field=field)
        return
    known = known_strategies()
    near = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise UserError(f"unknown strategy {excerpt(name)}; {hint}expected one of "
                    f"{', '.join(known)}, or module:attr for your own", field=field)


def _resolve(entry: Callable[..., Strategy] | str) -> Callable[..., Strategy]:
    if not isinstance(entry, str):
        return entry
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_strategy(name: str, space: SearchSpace, seed: int, **opts: Any) -> Strategy:
    """Build a registered strategy; an unknown name or option is a UserError naming the
    known ones (these come straight from an experiment config)."""
    check_strategy(name)
    factory = _resolve(_REGISTRY.get(name) or _entry_points().get(name) or name)
    try:
        inspect.signature(factory).bind(space, seed, **opts)
    except TypeError as exc:
        params = [p for p in list(inspect.signature(factory).parameters)[2:]
                  if p not in ("args", "kwargs")]
        raise UserError(f"bad options for strategy {name!r} ({exc}); it takes: "
                        f"{', '.join(params) or 'no options'}", field="search.options") from None
    return factory(space, seed, **opts)


class Wrapper(Strategy):
    """A strategy that adds behaviour around `inner` (seeding, screening, gap filling): it
    takes `inner`'s space, seed and name, and passes the runner's set-up calls through."""

    def __init__(self, inner: Strategy):
        super().__init__(inner.space, inner.seed)
        self.inner, self.name = inner, inner.name

    def set_objectives(self, objectives: Sequence[str],
                       budgets: Mapping[str, Sequence[float]]) -> None:
        self.inner.set_objectives(objectives, budgets)

    def attach(self, out_dir: Path, budgets: Sequence[float]) -> None:
        self.inner.attach(out_dir, budgets)


class Seeded(Wrapper):
    """A strategy whose first asks are given archs (a previous front re-ranked on a new
    table, the baselines, the extremes), told to it as results like any other, then its own
    asks. Wrapping keeps every strategy seedable without each re-implementing a queue."""

    def __init__(self, inner: Strategy, seeds: list[Arch]):
        super().__init__(inner)
        seen: set[str] = set()
        self.seeds = [a for a in seeds if not (a.arch_id in seen or seen.add(a.arch_id))]
        self._served = 0

    def ask(self, n: int) -> list[Arch]:
        out = self.seeds[self._served:self._served + max(0, int(n))]
        self._served += len(out)
        if len(out) < n:
            out += self.inner.ask(n - len(out))
        return out

    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        self.inner.tell(arch, objectives, feasible)

    def state_dict(self) -> dict[str, Any]:
        return {"seeded": [a.arch_id for a in self.seeds], "served": self._served,
                "inner": self.inner.state_dict()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("seeded") != [a.arch_id for a in self.seeds]:
            raise ValueError("the saved search was seeded with other archs")
        self._served = int(d["served"])
        self.inner.load_state_dict(d["inner"])
