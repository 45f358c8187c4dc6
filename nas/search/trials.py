"""The trial store: one row per evaluated arch in `trials.csv`, the search's single source of
truth (strategies and outputs are rebuilt from it).

A row holds `trial`, `arch_id`, `arch`, the objectives (error, then one latency per device),
every extra column the evaluator returned (params, macs, ...) and `seconds` last. Floats are
written with `repr` precision, so `read_trials` gives back exactly the numbers the strategy was
told.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nas.errors import UserError
from nas.io import atomic_write_text
from nas.space import Arch

TRIALS = "trials.csv"
RESERVED = ("trial", "arch_id", "arch", "seconds")  # columns the store owns, not evaluate()


def _scalar(v: Any) -> Any:
    """numpy scalars -> Python, so rows go to CSV and JSON unchanged."""
    return v.item() if isinstance(v, np.generic) else v


def make_row(trial: int, arch: Arch, result: dict, seconds: float,
             objectives: Sequence[str]) -> dict[str, Any]:
    """The stored row of one evaluate() result; a result without an objective is a bug in
    the evaluator, not a user mistake, hence TypeError / ValueError."""
    if not isinstance(result, dict):
        raise TypeError(f"evaluate() must return a dict, got {type(result).__name__}")
    missing = [k for k in objectives if k not in result]
    if missing:
        raise ValueError(f"evaluate() returned no {', '.join(missing)} "
                         f"(got {', '.join(map(str, result)) or 'nothing'})")
    row: dict[str, Any] = {"trial": trial, "arch_id": arch.arch_id, "arch": arch.to_string()}
    for k in objectives:
        row[k] = _scalar(result[k])
    for k, v in result.items():  # keys starting with "_" are signals, not columns
        if k not in row and k not in RESERVED and not str(k).startswith("_"):
            row[k] = _scalar(v)
    row["seconds"] = round(seconds, 6)
    return row


def objective_values(row: dict, objectives: Sequence[str]) -> tuple[float, ...]:
    """The row's objectives as floats; a missing or non-numeric one is NaN (infeasible)."""
    out = []
    for k in objectives:
        v = row.get(k)
        try:
            out.append(float("nan") if v is None else float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return tuple(out)


def is_feasible(row: dict, objectives: Sequence[str]) -> bool:
    """Feasible unless evaluate said `feasible: False` or an objective is not finite."""
    flag = row.get("feasible", True)
    if flag in (False, "False", "false", 0):
        return False
    return all(math.isfinite(v) for v in objective_values(row, objectives))


def feasible_matrix(rows: list[dict], objectives: Sequence[str]
                    ) -> tuple[list[dict], np.ndarray]:
    """The feasible rows and their (n, k) objective matrix: what fronts are made of."""
    feas = [r for r in rows if is_feasible(r, objectives)]
    F = np.array([objective_values(r, objectives) for r in feas],
                 dtype=float).reshape(-1, len(objectives))
    return feas, F


# ---------------------------------------------------------------------- CSV
def columns(rows: Iterable[dict]) -> list[str]:
    """Every key in first-seen order, `seconds` last."""
    cols: dict[str, None] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, None)
    if "seconds" in cols:  # keep the timing column last even when later rows add metrics
        del cols["seconds"]
        cols["seconds"] = None
    return list(cols)


def _csv_line(values: Iterable[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def csv_text(rows: list[dict], cols: list[str]) -> str:
    """A CSV file's text: header `cols`, one line per row (missing cells empty)."""
    return _csv_line(cols) + "".join(_csv_line(r.get(k) for k in cols) for r in rows)


class TrialsWriter:
    """Rewrites trials.csv atomically, formatting only rows it has not formatted before
    (a full rewrite per batch would cost O(n^2) formatting over a long search)."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        self.lines: list[str] = []
        self.rows: list[dict] = []  # the rows `lines` were formatted from

    def write(self, rows: list[dict]) -> None:
        cols = columns(rows)
        n_same = 0
        if cols == self.columns:
            while (n_same < min(len(rows), len(self.rows))
                   and rows[n_same] is self.rows[n_same]):
                n_same += 1
        self.columns, self.rows = cols, list(rows)
        self.lines = self.lines[:n_same] + [_csv_line(r.get(k) for k in cols)
                                            for r in rows[n_same:]]
        atomic_write_text(self.path, _csv_line(cols) + "".join(self.lines))


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_trials(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a trials.csv with numbers parsed back (floats round-trip exactly)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read trials ({exc})", source=str(path)) from None
    out = []
    for i, r in enumerate(rows):
        if not r.get("arch_id") or not r.get("arch"):
            raise UserError(f"row {i + 2} has no arch_id/arch", source=str(path))
        out.append({k: (v if k in ("arch_id", "arch") else _parse_cell(v or ""))
                    for k, v in r.items() if k is not None})
    return out
