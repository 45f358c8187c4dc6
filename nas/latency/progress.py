"""Periodic progress lines with rate and ETA, for work that takes minutes."""

from __future__ import annotations

import time
from typing import Callable


def fmt_duration(seconds: float) -> str:
    """`75.2` -> `1m15s`; short and unambiguous in a log line."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts finished items and logs `label done/total (pct), rate/s, ETA` every `every` s."""

    def __init__(self, label: str, total: int, log: Callable[[str], None], every: float = 5.0):
        self.label, self.total, self.log, self.every = label, total, log, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def line(self) -> str:
        el = self.elapsed
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta_s = fmt_duration(eta) if eta == eta else "?"
        return (f"{self.label}: {self.done}/{self.total} ({pct:.0f}%), {rate:.1f}/s, "
                f"elapsed {fmt_duration(el)}, ETA {eta_s}")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self.log(self.line())

    def finish(self) -> str:
        """Final line (logged), e.g. `export: 4189/4189 (100%), 70.3/s, elapsed 59s`."""
        el = self.elapsed
        rate = self.done / el if el > 0 else 0.0
        msg = f"{self.label}: {self.done}/{self.total} done in {fmt_duration(el)} ({rate:.1f}/s)"
        self.log(msg)
        return msg
