"""Surrogate screening: ask the strategy for many candidates, evaluate the few whose
predicted error most improves the front.

Latency is free (a table lookup) and a re-search starts with an error cache, so the only
unknown of a candidate is its error. `Screened` fits `ErrorPredictor` on the cached errors
plus every result told so far, scores `oversample x n` candidates of the wrapped strategy by
the hypervolume they would add (predicted error, table latency; summed over devices), and
hands the best n to the loop. Predictions only choose what to measure: every error the
search reports is measured. Candidates not chosen are dropped unseen, so only strategies
that tolerate asks never told (`Strategy.discardable_asks`) can be screened: an Optuna
study, for one, would keep them as running trials.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nas.errors import UserError
from nas.io import atomic_write_json, json_hash
from nas.search.pareto import hypervolume_2d, non_dominated_mask
from nas.search.strategy import Strategy, Wrapper
from nas.search.surrogate import ErrorPredictor
from nas.space import Arch

ROWS_FILE = "screen_rows.json"
MIN_ROWS = 10  # fewer cached errors than this: the predictor is not fitted, nothing screened


class Screened(Wrapper):
    """Wrap `inner` so each ask of n returns the n best of `oversample * n` candidates by
    predicted hypervolume gain. `rows` are (arch, error) pairs measured before the search
    (the error cache); `latency(arch)` gives the arch's latency on each device, in the
    order of the search's latency objectives; `ref` is the hypervolume reference point
    (error, then each latency)."""

    def __init__(self, inner: Strategy, rows: Sequence[tuple[Arch, float]],
                 latency: Callable[[Arch], Sequence[float]], ref: Sequence[float],
                 oversample: int = 8):
        super().__init__(inner)
        if not getattr(inner, "discardable_asks", False):
            raise UserError(f"screening needs a strategy whose asks may be dropped "
                            f"(evolution, random), not {inner.name!r}", field="search.screen")
        if not isinstance(oversample, int) or oversample < 1:
            raise UserError(f"expected an integer >= 1, got {oversample!r}",
                            field="search.screen")
        self.rows = [(a, float(e)) for a, e in rows if math.isfinite(e)]
        self.latency, self.ref, self.oversample = latency, np.asarray(ref, float), oversample
        self._told: list[tuple[Arch, tuple[float, ...], bool]] = []
        self._predictor: ErrorPredictor | None = None
        self._fitted_on = -1
        self._rows_front: np.ndarray | None = None  # the cached rows' front: fixed, so once

    # ------------------------------------------------------------------ contract
    def attach(self, out_dir: Path, budgets: Sequence[float]) -> None:
        """Freeze the rows the predictor starts from in `out_dir` the first time, so a
        resumed search fits the same predictor even though the cache has grown since."""
        super().attach(out_dir, budgets)
        path = Path(out_dir) / ROWS_FILE
        if path.exists():
            try:
                saved = json.loads(path.read_text())
                self.rows = [(self.space.parse(a), float(e)) for a, e in saved["rows"]]
                self._rows_front = None
                return
            except (ValueError, TypeError, KeyError, UserError):
                pass  # unreadable: write it again from the rows given
        atomic_write_json(path, {"rows": [[a.to_string(), e] for a, e in self.rows],
                                 "hash": self.rows_hash()})

    def rows_hash(self) -> str:
        return json_hash([[a.arch_id, round(e, 5)] for a, e in self.rows])

    def ask(self, n: int) -> list[Arch]:
        n = max(0, int(n))
        cands = self.inner.ask(n * self.oversample) if n else []
        predictor = self._fit()
        if predictor is None or len(cands) <= n:
            return cands[:n]
        err = predictor.predict(cands)
        lat = np.array([list(self.latency(a)) for a in cands], dtype=np.float64)
        pred = np.column_stack([err, lat])
        front = self._front()
        chosen: list[int] = []
        for _ in range(n):
            scores = [(-np.inf if i in chosen else _gain(front, pred[i], self.ref))
                      for i in range(len(cands))]
            i = int(np.argmax(scores))
            chosen.append(i)
            front = np.vstack([front, pred[i:i + 1]]) if len(front) else pred[i:i + 1]
        return [cands[i] for i in chosen]

    def tell(self, arch: Arch, objectives: tuple[float, ...], feasible: bool = True) -> None:
        self._told.append((arch, tuple(float(v) for v in objectives), bool(feasible)))
        self.inner.tell(arch, objectives, feasible)

    def state_dict(self) -> dict[str, Any]:
        return {"screened": self.oversample, "rows": self.rows_hash(),
                "told": [[a.to_string(), [v if math.isfinite(v) else None for v in o], f]
                         for a, o, f in self._told],
                "inner": self.inner.state_dict()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("screened") != self.oversample or d.get("rows") != self.rows_hash():
            raise ValueError("the saved search was screened with other settings or rows")
        self._told = [(self.space.parse(a), tuple(float("nan") if v is None else float(v)
                                                  for v in o), bool(f))
                      for a, o, f in d["told"]]
        self._fitted_on = -1
        self.inner.load_state_dict(d["inner"])

    # ------------------------------------------------------------------ internals
    def _fit(self) -> ErrorPredictor | None:
        if self._fitted_on == len(self._told):
            return self._predictor
        seen = {a.arch_id for a, _ in self.rows}
        data = list(self.rows) + [(a, o[0]) for a, o, f in self._told
                                  if f and math.isfinite(o[0]) and a.arch_id not in seen]
        self._fitted_on = len(self._told)
        if len(data) < MIN_ROWS:
            self._predictor = None
            return None
        self._predictor = ErrorPredictor(self.space).fit([a for a, _ in data],
                                                         [e for _, e in data])
        return self._predictor

    def _front(self) -> np.ndarray:
        """The measured points (told, plus the cached rows at their table latency): what a
        candidate has to improve on. The rows' own front is computed once."""
        if self._rows_front is None:
            self._rows_front = _nondominated([[e, *self.latency(a)] for a, e in self.rows],
                                             len(self.ref))
        told = [list(o) for _, o, f in self._told if f and all(math.isfinite(v) for v in o)]
        return _nondominated(told + self._rows_front.tolist(), len(self.ref))


def _nondominated(points: list, dims: int) -> np.ndarray:
    F = np.asarray(points, dtype=np.float64).reshape(-1, dims)
    return F[non_dominated_mask(F)] if len(F) else F


def _gain(front: np.ndarray, p: np.ndarray, ref: np.ndarray) -> float:
    """Predicted worth of adding point p = (error, latency per device): the hypervolume it
    adds to each device's 2-D front (summed, normalised by the reference box), or, when it
    adds none, minus how far it is from being non-dominated (the additive epsilon, in the
    same normalised units), so near-misses still rank above hopeless candidates."""
    total, eps = 0.0, np.inf
    for d in range(1, len(p)):
        f2 = front[:, [0, d]] / ref[[0, d]] if len(front) else np.zeros((0, 2))
        q = p[[0, d]] / ref[[0, d]]
        g = _hv_gain_2d(f2, q)
        total += g
        if len(f2):
            eps = min(eps, float(np.min(np.max(q[None] - f2, axis=1))))
    if total > 0:
        return total
    return -eps if np.isfinite(eps) else 0.0


def _hv_gain_2d(front: np.ndarray, q: np.ndarray) -> float:
    """Area q adds to the 2-D front (minimisation, normalised: reference (1, 1))."""
    if q[0] >= 1 or q[1] >= 1:
        return 0.0
    return (hypervolume_2d(np.vstack([front, q[None]]), (1.0, 1.0))
            - hypervolume_2d(front, (1.0, 1.0)))
