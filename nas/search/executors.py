"""The evaluation-executor seam (as pymoo's elementwise runner): how a batch of asked archs
gets evaluated, kept apart from the loop so a parallel back-end plugs in without touching it.

An executor is any object whose `imap(archs)` yields one result dict per arch, in the order
given, whatever order they were computed in; so the strategy is told exactly what a
sequential run tells it. A result may carry `_seconds` (evaluation time measured where it
ran) and `_reused` (served from a cache). The Ray one is `nas.distributed.RayExecutor`.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

from nas.space import Arch


class Executor(Protocol):
    """Evaluates archs for the loop: `imap(archs)` yields one result dict per arch, in
    the order of `archs` (whatever order they were computed in)."""

    def imap(self, archs: Sequence[Arch]) -> Iterator[dict]: ...


class SequentialExecutor:
    """The default executor: `evaluate(arch)` one arch at a time, lazily, in this process,
    so each result is told (and an interrupted batch flushed) as soon as it exists."""

    def __init__(self, evaluate: Callable[[Arch], dict]):
        self.evaluate = evaluate

    def imap(self, archs: Sequence[Arch]) -> Iterator[dict]:
        for arch in archs:
            yield self.evaluate(arch)
