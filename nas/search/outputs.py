"""A finished search's artifacts, made from its trial rows alone: pareto.{json,csv,png},
best_per_budget.json and summary.json (so they can be rewritten at any time, e.g. by a
resume that finds every trial already done)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas.errors import UserError
from nas.gaze.tasks import Task
from nas.io import atomic_write_json, atomic_write_text
from nas.search.pareto import best_under_budget, hypervolume_2d, non_dominated_mask
from nas.search.plot import plot_front
from nas.search.trials import RESERVED, columns, csv_text, feasible_matrix

HV_RULE = "1.1 x the worst feasible value of each objective over all trials"


def hv_reference_point(F: np.ndarray, hv_ref: Sequence[float] | None,
                       hv_rule: str | None) -> tuple[list[float] | None, str]:
    """(reference point, rule) of a hypervolume: the caller's fixed point, else 1.1 x the
    worst feasible value of each objective (None when there is no feasible trial)."""
    if hv_ref is not None:
        return [float(v) for v in hv_ref], hv_rule or "given"
    if len(F):
        return [float(v) for v in 1.1 * F.max(axis=0)], HV_RULE
    return None, HV_RULE


def entry(row: dict) -> dict[str, Any]:
    """A front / budget entry: identity first, then every metric, then the trial number."""
    out = {"arch_id": row["arch_id"], "arch": row["arch"]}
    out.update({k: v for k, v in row.items() if k not in RESERVED})
    out["trial"] = row["trial"]
    return out


def write_front_files(out_dir: Path, front: list[dict], best: list[dict], summary: dict,
                      objectives: Sequence[str]) -> None:
    """pareto.json / pareto.csv, best_per_budget.json and summary.json: the files a search
    folder (or a device's folder in a multi-device search) holds, in one format."""
    cols = columns(front) if front else ["arch_id", "arch", *objectives, "trial"]
    atomic_write_json(out_dir / "pareto.json", front)
    atomic_write_text(out_dir / "pareto.csv", csv_text(front, cols))
    atomic_write_json(out_dir / "best_per_budget.json", best)
    atomic_write_json(out_dir / "summary.json", summary)


def write_outputs(out_dir: str | Path, rows: list[dict], *, budgets: Sequence[float],
                  objectives: Sequence[str], meta: dict | None = None,
                  hv_ref: Sequence[float] | None = None, hv_rule: str | None = None,
                  extra: dict | None = None, task: Task | None = None) -> dict[str, Any]:
    """pareto.{json,csv,png}, best_per_budget.json and summary.json from trial rows;
    `objectives` = (error key, latency key); `task` titles the plot's error axis."""
    out_dir = Path(out_dir)
    err_key, lat_key = objectives
    feas, F = feasible_matrix(rows, objectives)
    idx = np.flatnonzero(non_dominated_mask(F)) if len(F) else np.zeros(0, dtype=int)
    idx = sorted(idx, key=lambda i: (F[i, 1], F[i, 0]))
    front = [entry(feas[i]) for i in idx]

    best: list[dict[str, Any]] = []
    picks = best_under_budget(F[:, 0], F[:, 1], budgets)
    for b in budgets:
        i = picks[b]
        if i is None:
            fastest = f"{F[:, 1].min():g}" if len(F) else "none"
            best.append({"budget_ms": b, "arch_id": None,
                         "reason": f"no feasible trial has {lat_key} <= {b:g} "
                                   f"(fastest: {fastest})"})
        else:
            best.append({"budget_ms": b, **entry(feas[i])})

    ref, rule = hv_reference_point(F, hv_ref, hv_rule)
    hv = hypervolume_2d(F, ref) if ref is not None else 0.0
    summary = {"n_trials": len(rows), "n_feasible": len(feas), "front_size": len(front),
               "objectives": list(objectives), "budgets_ms": list(budgets),
               "hypervolume": {"value": hv,
                               "reference": (dict(zip(objectives, ref)) if ref else None),
                               "rule": rule},
               "meta": meta or {}}
    summary.update(extra or {})

    write_front_files(out_dir, front, best, summary, objectives)
    plot_front(out_dir / "pareto.png", F, front, best, objectives, meta or {}, task=task)
    return {"front": front, "best_per_budget": best, "summary": summary}


def load_front(out_dir: str | Path) -> list[dict[str, Any]]:
    """The Pareto front a finished search wrote (sorted by latency)."""
    path = Path(out_dir) / "pareto.json"
    if not path.is_file():
        raise UserError("file not found (expected the pareto.json of a finished search)",
                        source=str(path))
    try:
        front = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable Pareto front ({exc})", source=str(path)) from None
    if not isinstance(front, list):
        raise UserError("expected a list of front entries", source=str(path))
    return front
