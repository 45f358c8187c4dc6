"""Time many ONNX models in gated, interleaved chunks: the measure phase of profiling and
of validation alike.

Sessions live only while their chunk is timed (thousands of sessions would not fit in
memory), the anchors' sessions for the whole run. Every attempt keeps its raw run times and
its chunk's anchor times, so that at the end of a pass each model is judged round by round
against the final quiet reference: its entry uses only the rounds the anchors call quiet,
and a model with fewer than `MIN_QUIET_ROUNDS` of them is timed again in the next pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.latency.export import cache_file, export_many
from nas.latency.gate import MAX_PASSES, Gate
from nas.latency.progress import Progress
from nas.latency.runtime import make_feed, make_session, summarize, time_runs
from nas.space import SearchSpace

RUNS_PER_ROUND = 5
WARMUP = 3
MIN_QUIET_ROUNDS = 2  # a model is settled once it has this many quiet rounds, pooled

Entry = dict[str, float]


@dataclass
class Attempt:
    """One timing of one model: its (rounds, runs) times, and per round the median time of
    the anchor timed just before it and just after it (None: no anchors, all rounds quiet)."""

    runs: np.ndarray
    before: tuple[str, np.ndarray] | None = None
    after: tuple[str, np.ndarray] | None = None

    def quiet_rounds(self, ref: dict[str, float], tolerance: float) -> np.ndarray:
        """Rounds in which both neighbouring anchors ran at their quiet speed: the state
        can flip within a round, so the round-wide anchor median is not enough."""
        ok = np.ones(len(self.runs), dtype=bool)
        for side in (self.before, self.after):
            if side is not None and ref.get(side[0], 0) > 0:
                ok &= side[1] / ref[side[0]] <= 1 + tolerance
        return ok


def judge(attempts: list[Attempt], ref: dict[str, float],
          tolerance: float) -> tuple[Entry, int]:
    """A model's entry from the quiet rounds of all its attempts, pooled, and how many quiet
    rounds there were; with none, the entry from every round (best effort)."""
    quiet = [a.runs[a.quiet_rounds(ref, tolerance)] for a in attempts]
    n_quiet = sum(len(q) for q in quiet)
    if n_quiet:
        return summarize(np.vstack([q for q in quiet if len(q)])), n_quiet
    return summarize(np.vstack([a.runs for a in attempts])), 0


def interleave(keys: list[str], anchors: list[str]) -> list[str]:
    """Round order: anchors spread evenly, one first and one last, so every model sits
    between two anchors timed moments before and after it."""
    if not anchors:
        return list(keys)
    if len(anchors) == 1:
        return [anchors[0]] + list(keys)
    gaps = len(anchors) - 1
    bounds = [round(i * len(keys) / gaps) for i in range(gaps + 1)]
    order = [anchors[0]]
    for i in range(gaps):
        order += keys[bounds[i]:bounds[i + 1]] + [anchors[i + 1]]
    return order


def neighbours(order: list[str], anchors: set[str]) -> dict[str, tuple[str, str]]:
    """For each model in `order`, the nearest anchor before it and after it."""
    out, prev = {}, None
    pending: list[str] = []
    for k in order:
        if k in anchors:
            for p in pending:
                out[p] = (prev or k, k)
            pending, prev = [], k
        else:
            pending.append(k)
    for p in pending:
        out[p] = (prev, prev)
    return out


def open_cached(folder: Path, key: str, space: SearchSpace, all_keys: dict) -> tuple:
    """(session, feed) of a cached model; a damaged cache file is rebuilt once."""
    f = cache_file(folder, key)
    try:
        sess = make_session(f)
    except Exception:  # truncated or stale file: export it again, here
        export_many(space, [(key, *all_keys[key], str(f))], workers=1, log=lambda _: None)
        sess = make_session(f)
    return sess, make_feed(sess)


def _settled(attempts: list[Attempt], gate: Gate) -> bool:
    return judge(attempts, gate.ref, gate.tolerance)[1] >= MIN_QUIET_ROUNDS


class _Timer:
    """State of one `time_keys` call: every attempt so far, and what the log was told."""

    def __init__(self, gate: Gate, rounds: int, log: Callable[[str], None]):
        self.gate, self.rounds, self.log = gate, rounds, log
        self.anchors = list(gate.sessions)
        self.attempts: dict[str, list[Attempt]] = {}
        self.speeds: list[float] = []  # per timing: median of anchors' time / quiet time
        self.timings = 0
        self.budget_told, self.last_told = False, 0.0

    def time_once(self, part: list[str], order: list[str], feeds: dict) -> int:
        """Time the chunk once, record an attempt per model; returns how many of the
        chunk's models are still short of quiet rounds."""
        runs = time_runs(feeds, rounds=self.rounds, runs_per_round=RUNS_PER_ROUND,
                         warmup=WARMUP)
        anchor_rounds = self.gate.observe(runs)
        ratios = [v / self.gate.ref[k] for k, v in anchor_rounds.items() if k in self.gate.ref]
        if ratios:
            self.speeds.append(float(np.median(np.concatenate(ratios))))
        near = neighbours(order, set(self.anchors))
        for k in part:
            b, a = near.get(k, (k, k))  # an anchor that is also a target: itself
            self.attempts.setdefault(k, []).append(Attempt(
                runs[k], (b, anchor_rounds[b]) if b else None,
                (a, anchor_rounds[a]) if a else None))
        self.timings += 1
        return sum(not _settled(self.attempts[k], self.gate) for k in part)

    def time_chunk(self, part: list[str], open_session: Callable[[str], tuple]) -> None:
        """Time a chunk; while the anchors say the machine ran slowed, time it again at
        once (the sessions are open), within the gate's budget."""
        plain = [k for k in part if k not in self.gate.sessions]
        order = interleave(plain, self.anchors)
        sessions = {k: open_session(k) for k in plain}
        sessions.update(self.gate.sessions)
        feeds = {k: sessions[k] for k in order}
        short = self.time_once(part, order, feeds)
        while short and self.anchors:
            if not self.gate.budget_left:
                if not self.budget_told:
                    self.budget_told = True
                    self.log(f"gate: re-timing budget ({self.gate.budget_s:.0f}s) spent; "
                             f"the rest is timed once per pass")
                return
            now = time.perf_counter()
            if now - self.last_told > 10:
                self.last_told = now
                self.log(f"gate: machine slowed (anchors x{self.recent_speed():.2f} their "
                         f"quiet time); timing the chunk again, "
                         f"{self.gate.budget_left:.0f}s of re-timing budget left")
            short = self.time_once(part, order, feeds)
            self.gate.spent_s += time.perf_counter() - now

    def recent_speed(self) -> float:
        return self.speeds[-1] if self.speeds else 1.0


def time_keys(keys: list[str], gate: Gate, open_session: Callable[[str], tuple], *,
              rounds: int, chunk: int, log: Callable[[str], None],
              on_chunk: Callable[[dict[str, Entry]], None] | None = None,
              max_passes: int = MAX_PASSES,
              label: str = "measure") -> tuple[dict[str, Entry], dict[str, Any]]:
    """Time the models `open_session(key) -> (session, feed)` of `keys`; after each chunk
    `on_chunk(provisional entries of that chunk's keys)` (the caller saves). Returns every
    key's final entry and the gate's statistics."""
    timer = _Timer(gate, rounds, log)
    pending, first_short, passes = list(keys), 0, 0
    for passes in range(1, max_passes + 1):
        prog = Progress(label if passes == 1 else f"re-time (pass {passes})", len(pending), log)
        for start in range(0, len(pending), chunk):
            part = pending[start:start + chunk]
            timer.time_chunk(part, open_session)
            if on_chunk is not None:
                on_chunk({k: judge(timer.attempts[k], gate.ref, gate.tolerance)[0]
                          for k in part})
            prog.update(len(part))
        prog.finish()
        # Judge every key round by round against the reference as it stands now.
        pending = [k for k in keys if not _settled(timer.attempts[k], gate)]
        if passes == 1:
            first_short = len(pending)
        if not pending:
            break
        if passes < max_passes:
            log(f"gate: {len(pending)} have fewer than {MIN_QUIET_ROUNDS} rounds timed while "
                f"the machine was quiet; timing them again")
    final = {k: judge(timer.attempts[k], gate.ref, gate.tolerance) for k in keys}
    if pending:
        log(f"warning: {len(pending)} have fewer than {MIN_QUIET_ROUNDS} rounds timed while "
            f"the machine was quiet; their entries use what there is")
    quiet_share = [q / sum(len(a.runs) for a in timer.attempts[k])
                   for k, (_, q) in final.items()]
    stats = {"tolerance": gate.tolerance, "anchors": len(timer.anchors), "passes": passes,
             "timings": timer.timings, "unsettled_first_pass": first_short,
             "unsettled": len(pending),
             "quiet_round_share": round(float(np.mean(quiet_share)), 4) if keys else 1.0,
             "retime_s": round(gate.spent_s, 1),
             "slowed_timings": sum(v > 1 + gate.tolerance for v in timer.speeds),
             "anchor_speed_best": round(min(timer.speeds), 4) if timer.speeds else 1.0}
    return {k: e for k, (e, _) in final.items()}, stats
