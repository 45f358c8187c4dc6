"""pareto.png: every trial, the front, the budgets and their picks, and optionally the
hand-designed baselines and the front re-measured another way. Matplotlib is imported only
here, and only when a plot is drawn."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from nas.gaze.tasks import Task
from nas.io import atomic_write_bytes
from nas.search.trials import TRIALS, feasible_matrix, read_trials


def replot(out_dir: str | Path, markers: Sequence[dict],
           retrained: Sequence[dict] = (), task: Task | None = None) -> Path:
    """Redraw a finished search's pareto.png with extra labelled points (e.g. hand-designed
    baselines: dicts with `name` and the two objective keys) and, optionally, the front's
    subnets re-measured another way (e.g. trained from scratch, timed end to end)."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    objectives = summary["objectives"]
    _, F = feasible_matrix(read_trials(out_dir / TRIALS), objectives)
    front = json.loads((out_dir / "pareto.json").read_text())
    best = json.loads((out_dir / "best_per_budget.json").read_text())
    path = out_dir / "pareto.png"
    plot_front(path, F, front, best, objectives, summary.get("meta") or {}, markers, retrained,
               task)
    return path


def plot_devices(path: Path, F: np.ndarray, devices: Sequence[str], joint: Sequence[int],
                 good: Sequence[int], best: dict[str, list[dict]], meta: dict,
                 err_key: str, task: Task | None = None) -> None:
    """A several-device search on one page: a panel per device with every trial, that
    device's own front, the joint Pareto set (optimal over all devices at once), the subnets
    good on all devices, and the device's budgets with their picks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nas.search.pareto import non_dominated_mask

    n = len(devices)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.6 * cols, 3.8 * rows), dpi=110)
    FigureCanvasAgg(fig)
    for d, dev in enumerate(devices):
        ax = fig.add_subplot(rows, cols, d + 1)
        if len(F):
            lat, err = F[:, d + 1], F[:, 0]
            ax.scatter(lat, err, s=8, color="0.8", label=f"trials ({len(F)})", zorder=1)
            own = np.flatnonzero(non_dominated_mask(F[:, [0, d + 1]]))
            own = own[np.argsort(lat[own], kind="stable")]
            ax.step(lat[own], err[own], where="post", color="C0", lw=1.3, zorder=2,
                    label=f"the device's own front ({len(own)})")
            ax.plot(lat[list(joint)], err[list(joint)], "o", ms=5, mfc="none", color="C1",
                    label=f"joint Pareto set ({len(joint)})", zorder=3)
            if len(good):
                ax.plot(lat[list(good)], err[list(good)], "*", ms=9, color="C2",
                        label=f"good on all ({len(good)})", zorder=4)
        for j, b in enumerate(best.get(dev, [])):
            color = f"C{(j % 6) + 3}"
            ax.axvline(b["budget_ms"], ls="--", lw=1, color=color, zorder=1)
            if b.get("arch_id"):
                ax.scatter([b["latency_ms"]], [b[err_key]], s=140, facecolors="none",
                           edgecolors=color, linewidths=1.6, zorder=5)
        ax.set_title(dev, fontsize=9)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel(error_label(err_key, task))
        ax.grid(alpha=0.3)
        if d == 0 and len(F):
            ax.legend(loc="upper right", fontsize=7)
    if meta.get("space"):
        fig.suptitle(f"Pareto fronts on {n} devices: space {meta['space']}", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_front(path: Path, F: np.ndarray, front: list[dict], best: list[dict],
               objectives: Sequence[str], meta: dict, markers: Sequence[dict] = (),
               retrained: Sequence[dict] = (), task: Task | None = None) -> None:
    """Every trial light, the front as a step line, budgets dashed with their pick circled,
    `markers` (baselines) as labelled crosses. Uses the Agg canvas directly: no pyplot
    state, no switch of the caller's backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    err_key, lat_key = objectives
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(F):
        ax.scatter(F[:, 1], F[:, 0], s=9, color="0.78", label=f"trials ({len(F)})", zorder=1)
    if front:
        fl = [e[lat_key] for e in front]
        fe = [e[err_key] for e in front]
        ax.step(fl, fe, where="post", color="C0", lw=1.4, zorder=2)
        ax.plot(fl, fe, "o", color="C0", ms=4.5, label=f"Pareto front ({len(front)})",
                zorder=3)
    for j, b in enumerate(best):
        color = f"C{(j % 9) + 1}"
        ax.axvline(b["budget_ms"], ls="--", lw=1, color=color, zorder=1)
        if b.get("arch_id") is None:
            continue
        x, y = b[lat_key], b[err_key]
        ax.scatter([x], [y], s=170, facecolors="none", edgecolors=color, linewidths=1.8,
                   zorder=4)
        err = task.format(y) if task else f"{y:.2f}"
        ax.annotate(f"\u2264 {b['budget_ms']:g} ms: {err}\n{b['arch_id']}", (x, y),
                    xytext=(8, 8), textcoords="offset points", fontsize=7, color=color,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                          "alpha": 0.85}, zorder=5)
    if retrained:
        pts = sorted((m[lat_key], m[err_key]) for m in retrained)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color="C2", ms=4, lw=1,
                mfc="none", label="front subnets trained from scratch (measured)", zorder=3)
    for j, m in enumerate(markers):
        ax.plot([m[lat_key]], [m[err_key]], "X", color="C3", ms=7,
                label="hand-designed baselines" if j == 0 else None, zorder=4)
        ax.annotate(m["name"], (m[lat_key], m[err_key]), xytext=(5, -9),
                    textcoords="offset points", fontsize=6.5, color="C3", zorder=5)
    if markers:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)" if lat_key == "latency_ms" else lat_key)
    ax.set_ylabel(error_label(err_key, task))
    where = [f"{k} {meta[k]}" for k in ("space", "device") if meta.get(k)]
    ax.set_title("Pareto front" + (": " + ", ".join(where) if where else ""))
    ax.grid(alpha=0.3)
    if len(F):
        ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def error_label(err_key: str, task: Task | None) -> str:
    """The error axis title: the task's metric and unit; the bare key when no task is known
    (a plot redrawn from files alone)."""
    return task.error_label if task else err_key
