"""Evaluate a search's batches on Ray actors that each hold the supernet once.

`RayExecutor` is an executor for `nas.search.run_search` (see `nas/search/executors.py`):
`imap(archs)` yields one result per arch in the order asked. Archs whose error is in the
driver's evaluation cache are answered there without Ray; the others go to `workers`
actors, each built once from an `EvaluatorSpec` (the run's data section and seed,
recalibration / validation images, one torch thread) and the supernet's bytes (shipped
through Ray's object store, so no shared file system is needed), with no cache file of its
own. Each actor takes the next arch as soon as it is free, so a batch of subnets of unequal
cost keeps every actor busy. The driver appends each row to `eval_cache.jsonl` as soon as it
arrives (one writer), then the runner tells the results in ask order: the trials, the front
and a resume are those of a sequential search with the same seed, and a search interrupted
mid-batch keeps every subnet already evaluated.

Ray is started only when the first subnet that is not cached has to be evaluated, so a
search served from the cache (a resume of a finished run) costs nothing extra.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from nas.distributed import RayConfig, ray_session, supernet_blob
from nas.errors import UserError
from nas.space import Arch

Row = dict[str, Any]


def _worker_class(ray: Any) -> Any:
    """The actor class, made once Ray is imported (this module imports no ray)."""

    class EvalWorker:
        """One process with the run's evaluator: supernet, data, recalibration images."""

        def __init__(self, spec, blob: bytes | None = None):
            import tempfile

            import torch

            from nas.distributed import local_spec
            from nas.pipeline import evaluator_from_spec

            torch.set_num_threads(spec.threads)
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:  # the supernet, loaded and let go
                self.ev, _ = evaluator_from_spec(local_spec(spec, blob, tmp))
            self.ready_s = time.perf_counter() - t0

        def ready(self) -> float:
            return self.ready_s

        def evaluate(self, arch_text: str) -> Row:
            arch = self.ev.space.parse(arch_text)
            t0 = time.perf_counter()
            row = self.ev.evaluate(arch)
            row["_seconds"] = time.perf_counter() - t0
            return row

    return ray.remote(num_cpus=1)(EvalWorker)


def _unwrap(exc: BaseException) -> BaseException:
    """A user mistake raised inside an actor (e.g. another data set there) as itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, UserError) else exc


class RayExecutor:
    """Evaluates archs on `workers` Ray actors, results in ask order.

    `finish(arch, row)` turns an evaluator row into the runner's result (adds the latency);
    `lookup(arch)` returns the driver's cached row (marked `_reused`) or None; `record(row)`
    appends a row evaluated by an actor to the driver's cache. Use as a context manager or
    call `close()`: it stops the actors and a Ray it started."""

    def __init__(self, spec, finish: Callable[[Arch, Row], Row], *, workers: int = 2,
                 ray: RayConfig | None = None, lookup: Callable[[Arch], Row | None] | None = None,
                 record: Callable[[Row], None] | None = None,
                 log: Callable[[str], Any] = print):
        if workers < 1:
            raise UserError(f"expected an integer >= 1, got {workers!r}", field="search.workers")
        self.spec, self.finish, self.workers = spec, finish, workers
        self.ray_cfg, self.lookup, self.record, self.log = ray, lookup, record, log
        self._session = None
        self._ray: Any = None
        self._actors: list[Any] = []
        self.evaluated = 0  # subnets evaluated on actors (not served from the cache)
        self.startup_s: float | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def actors(self) -> list[Any]:
        """The actor handles (empty before `start`)."""
        return list(self._actors)

    def start(self) -> None:
        """Start Ray and the actors now (otherwise: at the first subnet not cached)."""
        if self._actors:
            return
        from nas.distributed import require_ray

        require_ray("search.executor: ray")  # a one-line error before anything starts
        t0 = time.perf_counter()
        session = ray_session(self.ray_cfg, num_cpus=self.workers, log=self.log,
                              what="search.executor: ray")
        self._ray = session.__enter__()
        self._session = session
        cls = _worker_class(self._ray)
        blob = self._ray.put(supernet_blob(self.spec))  # no shared file system needed
        self._actors = [cls.remote(self.spec, blob) for _ in range(self.workers)]
        try:
            loads = self._ray.get([a.ready.remote() for a in self._actors])
        except Exception as exc:  # noqa: BLE001 - an actor that cannot build its evaluator
            self.close()
            raise _unwrap(exc) from None
        self.startup_s = time.perf_counter() - t0
        self.log(f"search: {self.workers} Ray workers ready in {self.startup_s:.1f} s "
                 f"(each loaded the supernet and data in {max(loads):.1f} s or less)")

    def close(self) -> None:
        if self._ray is not None:
            for a in self._actors:
                try:
                    self._ray.kill(a)
                except Exception:  # noqa: BLE001 - already gone
                    pass
        self._actors = []
        if self._session is not None:
            session, self._session = self._session, None
            session.__exit__(None, None, None)
        self._ray = None

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ evaluation
    def imap(self, archs: Sequence[Arch]) -> Iterator[Row]:
        archs = list(archs)
        cached: dict[int, Row] = {}     # index -> the driver's cached row
        first: dict[str, int] = {}      # arch_id -> index of its first ask to evaluate
        todo: deque[int] = deque()
        for i, arch in enumerate(archs):
            row = self.lookup(arch) if self.lookup else None
            if row is not None:
                cached[i] = row
            elif arch.arch_id not in first:
                first[arch.arch_id] = i
                todo.append(i)
        if todo:
            self.start()
        ray = self._ray
        idle = list(self._actors)
        inflight: dict[Any, tuple[int, Any]] = {}
        got: dict[int, Row] = {}        # index -> row evaluated by an actor
        try:
            for i, arch in enumerate(archs):
                if i in cached:
                    yield self.finish(arch, cached[i])
                    continue
                j = first[arch.arch_id]
                while j not in got:
                    while todo and idle:
                        k, actor = todo.popleft(), idle.pop()
                        inflight[actor.evaluate.remote(archs[k].to_string())] = (k, actor)
                    done, _ = ray.wait(list(inflight), num_returns=1)
                    for ref in done:
                        k, actor = inflight.pop(ref)
                        idle.append(actor)
                        try:
                            row = ray.get(ref)
                        except Exception as exc:  # noqa: BLE001
                            raise _unwrap(exc) from None
                        if self.record:  # at once: an interrupted batch keeps it
                            self.record({key: v for key, v in row.items()
                                         if not key.startswith("_")})
                        self.evaluated += 1
                        got[k] = row
                row = got[j] if i == j else {**got[j], "_reused": True, "_seconds": 0.0}
                yield self.finish(arch, row)
        finally:
            for ref in inflight:  # an interrupted batch: drop what is still running
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001
                    pass
