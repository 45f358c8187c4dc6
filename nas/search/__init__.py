"""Multi-objective search over a SearchSpace: strategies (ask/tell), Pareto arithmetic, the
trial store, the executor seam, the resumable loop and its outputs. Knows objectives only
through the callables it is given; never imports torch, the supernet or the latency package."""

from nas.search.devices import latency_key, write_device_outputs
from nas.search.evolution import Evolution
from nas.search.executors import Executor, SequentialExecutor
from nas.search.loop import run_search
from nas.search.outputs import load_front, write_outputs
from nas.search.pareto import (best_under_budget, crowding_distance, hypervolume,
                               hypervolume_2d, non_dominated_mask, nondominated_sort)
from nas.search.plot import replot
from nas.search.random_search import RandomSearch
from nas.search.strategy import (Strategy, check_strategy, known_strategies, make_strategy,
                                 register_strategy)
from nas.search.trials import read_trials

__all__ = [
    "Evolution", "Executor", "RandomSearch", "SequentialExecutor", "Strategy",
    "best_under_budget", "check_strategy", "crowding_distance", "hypervolume", "hypervolume_2d",
    "known_strategies", "latency_key", "load_front", "make_strategy", "non_dominated_mask",
    "nondominated_sort", "read_trials", "register_strategy", "replot", "run_search",
    "write_device_outputs", "write_outputs",
]
