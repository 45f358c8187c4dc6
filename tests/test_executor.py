"""The runner's evaluation-executor seam, with synthetic objectives (no torch, no Ray)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from nas.search import make_strategy, run_search
from nas.search.executors import SequentialExecutor
from nas.space import SearchSpace
from test_search import SPACE, Counting, synthetic  # noqa: E402 (tests/ is on sys.path)

META = {"space": "tiny", "device": "synthetic-cpu"}


class BatchExecutor:
    """Evaluates a whole batch up front, last arch first (as a parallel executor finishes
    in any order), then yields in the order asked; records what it was sent. With
    `interrupt_at=(batch, i)` it raises KeyboardInterrupt instead of yielding result i of
    that batch (1-based batch number)."""

    def __init__(self, interrupt_at: tuple[int, int] | None = None):
        self.sent: list[str] = []
        self.batches = 0
        self.interrupt_at = interrupt_at

    def imap(self, archs):
        archs = list(archs)
        self.batches += 1
        self.sent += [a.arch_id for a in archs]
        results = {a.arch_id: synthetic(a) for a in reversed(archs)}
        for i, a in enumerate(archs):
            if self.interrupt_at == (self.batches, i):
                raise KeyboardInterrupt
            yield results[a.arch_id]


def search(out_dir: Path, *, evaluate=None, executor=None, evals: int = 40,
           space: SearchSpace = SPACE):
    st = make_strategy("evolution", space, 0, population=16)
    return run_search(space, st, evaluate, evals=evals, budgets=[0.5, 1.5], out_dir=out_dir,
                      batch=8, log=lambda s: None, meta=META, executor=executor)


def trial_rows(out_dir: Path) -> list[dict]:
    with open(out_dir / "trials.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_any_executor_gives_the_sequential_trials(tmp_path):
    search(tmp_path / "seq", evaluate=Counting())
    ex = BatchExecutor()
    res = search(tmp_path / "batch", executor=ex)
    assert trial_rows(tmp_path / "batch") == trial_rows(tmp_path / "seq")
    assert len(ex.sent) == 40 == len(set(ex.sent))
    assert res["summary"]["evaluated_this_run"] == 40


def test_sequential_executor_is_lazy():
    calls = []
    ex = SequentialExecutor(lambda a: calls.append(a.arch_id) or synthetic(a))
    it = ex.imap([SPACE.smallest(), SPACE.largest()])
    assert calls == []
    next(it)
    assert calls == [SPACE.smallest().arch_id]


def test_resumed_batch_sends_only_archs_without_rows(tmp_path):
    """Interrupted after 3 results of the 3rd batch: those are flushed, and on resume only
    the archs of that batch without a row are sent to the executor."""
    ref = tmp_path / "ref"
    search(ref, evaluate=Counting())
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        search(run, executor=BatchExecutor(interrupt_at=(3, 3)))
    flushed = {r["arch_id"] for r in trial_rows(run)}
    assert len(flushed) == 19
    second = BatchExecutor()
    search(run, executor=second)
    assert not flushed & set(second.sent)
    assert len(second.sent) == 40 - 19 == len(set(second.sent))
    assert trial_rows(run) == trial_rows(ref)


def test_executor_yielding_too_few_results_is_an_error(tmp_path):
    class Short:
        def imap(self, archs):
            yield synthetic(list(archs)[0])

    with pytest.raises(RuntimeError, match="fewer results"):
        search(tmp_path, executor=Short(), evals=8)


def test_run_search_needs_evaluate_or_executor(tmp_path):
    with pytest.raises(ValueError, match="evaluate callable or an executor"):
        search(tmp_path, evals=8)
