"""Several devices in one search: the error plus one latency per device, as the objectives
`error_deg, latency_ms@<device>, ...` (the error is the task's `error_key`: `error_cm` for
pog2d). Errors do not depend on the device, so one trial (one evaluation) serves every
device, and each device's outputs are made from the same rows.

What `write_device_outputs` writes, from the trial rows alone (so a resume rewrites it):

- `devices/<device>/`: that device's own search in exactly the single-device formats
  (`pareto.{json,csv,png}`, `best_per_budget.json`, `summary.json`): its latency is
  `latency_ms`, the other devices' ride along as `latency_ms@<other>` columns.
- `pareto.{json,csv}`: the joint Pareto set over (error, every device's latency), each point
  with every device's latency; `pareto.png`: one panel per device.
- `best_per_budget.json`: every device's budget picks, each marked with its `device`.
- `good_on_all.json`: the subnets of the joint set that are good on every device (rule below).
- `summary.json`: the joint hypervolume (one latency axis per device) and per-device figures.

Good on all (GOOD_RULE): on every device, no evaluated subnet at least as accurate is more
than GOOD_SLACK faster. A subnet on every device's own front has a gap of 0 everywhere; the
slack admits the compromises that cost each device at most 10 % latency, about what a
latency table's prediction error is (so within it the devices cannot tell them apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import safe_name
from nas.gaze.tasks import Task
from nas.io import atomic_write_json
from nas.search.outputs import entry, hv_reference_point, write_front_files, write_outputs
from nas.search.pareto import hypervolume, non_dominated_mask
from nas.search.trials import feasible_matrix

LATENCY = "latency_ms"
SEP = "@"
DEVICES = "devices"
GOOD_SLACK = 0.10
GOOD_RULE = (f"on every device, no evaluated subnet at least as accurate is more than "
             f"{GOOD_SLACK:.0%} faster (latency_gap: how much slower than the fastest subnet "
             f"of equal or lower error, per device; 0 = on that device's own front)")


def latency_key(device: str) -> str:
    """The trial column (and objective) of one device's latency."""
    return f"{LATENCY}{SEP}{device}"


def device_of(key: str) -> str:
    """The device a latency objective belongs to (the key itself if it names none)."""
    return key.partition(SEP)[2] or key


def device_rows(rows: Sequence[dict], error_key: str, key: str) -> list[dict]:
    """Rows as a one-device search on `key` would have stored them: that latency as
    `latency_ms` right after the error, every other column (other devices too) kept."""
    out = []
    for r in rows:
        d: dict[str, Any] = {}
        for k, v in r.items():
            if k == key:
                continue
            d[k] = v
            if k == error_key:
                d[LATENCY] = r.get(key)
        out.append(d)
    return out


def good_on_all(F: np.ndarray, candidates: Sequence[int], slack: float = GOOD_SLACK
                ) -> list[tuple[int, list[float]]]:
    """(index, gap per device) of each candidate row of `F` (error, latency per device) whose
    latency on every device is at most (1 + slack) x the fastest row of equal or lower
    error there."""
    if not len(F):
        return []
    order = np.argsort(F[:, 0], kind="stable")
    err_sorted = F[order, 0]
    best = np.minimum.accumulate(F[order, 1:], axis=0)  # fastest so far, by error
    out = []
    for i in candidates:
        j = int(np.searchsorted(err_sorted, F[i, 0], side="right")) - 1
        gaps = [float(v) for v in F[i, 1:] / best[j] - 1.0]
        if all(g <= slack + 1e-12 for g in gaps):
            out.append((int(i), gaps))
    return out


def write_device_outputs(out_dir: str | Path, rows: list[dict], *,
                         budgets: Mapping[str, Sequence[float]], objectives: Sequence[str],
                         meta: dict | None = None, hv_ref: Sequence[float] | None = None,
                         hv_rule: str | None = None, extra: dict | None = None,
                         task: Task | None = None) -> dict[str, Any]:
    """Each device's outputs under devices/<device>/ plus the joint ones (module docstring).
    Returns {"front": joint set, "best_per_budget": every device's picks, "summary",
    "devices": {device: that device's {"front", "best_per_budget", "summary"}},
    "good_on_all"}."""
    from nas.search.plot import plot_devices

    out_dir = Path(out_dir)
    err_key, lat_keys = objectives[0], list(objectives[1:])
    labels = [device_of(k) for k in lat_keys]
    bad = [d for d in labels if not safe_name(d)]
    if bad or len(set(labels)) != len(labels):
        raise ValueError(f"device names must be distinct plain file names, got {labels}")
    per: dict[str, dict] = {}
    best: list[dict] = []
    for i, (key, dev) in enumerate(zip(lat_keys, labels), start=1):
        res = write_outputs(out_dir / DEVICES / dev, device_rows(rows, err_key, key),
                            budgets=list(budgets.get(key, ())),
                            objectives=(err_key, LATENCY), meta={**(meta or {}), "device": dev},
                            hv_ref=None if hv_ref is None else (hv_ref[0], hv_ref[i]),
                            hv_rule=hv_rule, extra=extra, task=task)
        per[dev] = res
        best += [{"device": dev, **b} for b in res["best_per_budget"]]

    feas, F = feasible_matrix(rows, objectives)
    idx = np.flatnonzero(non_dominated_mask(F)) if len(F) else np.zeros(0, dtype=int)
    idx = sorted(idx, key=lambda i: (*F[i, 1:], F[i, 0]))  # by first device's latency
    front = [entry(feas[i]) for i in idx]
    good_idx = good_on_all(F, idx)
    good = [{**entry(feas[i]), "latency_gap": {d: round(g, 4) for d, g in zip(labels, gaps)}}
            for i, gaps in good_idx]

    ref, rule = hv_reference_point(F, hv_ref, hv_rule)
    summary = {"n_trials": len(rows), "n_feasible": len(feas), "front_size": len(front),
               "objectives": list(objectives), "devices": labels,
               "budgets_ms": {d: list(budgets.get(k, ())) for d, k in zip(labels, lat_keys)},
               "hypervolume": {"value": hypervolume(F, ref) if ref is not None else 0.0,
                               "reference": dict(zip(objectives, ref)) if ref else None,
                               "rule": rule},
               "per_device": {d: {"front_size": r["summary"]["front_size"],
                                  "hypervolume": r["summary"]["hypervolume"]["value"],
                                  "folder": f"{DEVICES}/{d}"} for d, r in per.items()},
               "good_on_all": {"size": len(good), "slack": GOOD_SLACK, "rule": GOOD_RULE},
               "meta": meta or {}}
    summary.update(extra or {})

    atomic_write_json(out_dir / "good_on_all.json", good)
    write_front_files(out_dir, front, best, summary, objectives)
    plot_devices(out_dir / "pareto.png", F, labels, list(idx), [i for i, _ in good_idx],
                 {d: r["best_per_budget"] for d, r in per.items()}, meta or {}, err_key,
                 task)
    return {"front": front, "best_per_budget": best, "summary": summary,
            "devices": {d: {k: r[k] for k in ("front", "best_per_budget", "summary")}
                        for d, r in per.items()},
            "good_on_all": good}
