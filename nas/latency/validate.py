"""Fidelity of a LUT: time K random whole subnets end to end and compare with predictions.

The whole nets are timed with the same interleaved protocol as the LUT entries. The
correction (a, b, c) is fitted on all K, but the headline figures are leave-one-out, so
they say how well the table predicts a subnet it has not been fitted on.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from nas.errors import UserError
from nas.latency.export import export_many
from nas.latency.fit import apply_correction, fidelity, fit_correction, loo_predictions
from nas.latency.profile import RUNS_PER_ROUND, WARMUP
from nas.latency.runtime import device_info, make_feed, make_session, measure
from nas.latency.table import LatencyTable
from nas.space import Arch, SearchSpace


def sample_archs(space: SearchSpace, k: int, seed: int) -> list[Arch]:
    """Up to `k` random archs with distinct arch_ids (fewer only if the space is tiny)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, Arch] = {}
    for _ in range(max(100 * k, 1000)):
        if len(seen) >= k:
            break
        a = space.sample(rng)
        seen.setdefault(a.arch_id, a)
    return list(seen.values())


def _finite_or_none(obj: Any) -> Any:
    """NaN (e.g. tau of one sample) is not allowed in a table file: store it as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


def validate_table(table: LatencyTable, space: SearchSpace, samples: int = 40, seed: int = 0,
                   rounds: int = 5, log: Callable[[str], None] = print,
                   workers: int = 2) -> dict[str, Any]:
    """Measure `samples` random subnets of `space` here, fit the table's correction, store
    correction and report in the table (saved when it has a path), return the report."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    for w in table.check_device(device_info(table.device)):
        log(f"warning: {w}")
    archs = sample_archs(space, samples, seed)
    missing = sorted({k for a in archs for k in table.missing(space.arch_keys(a))})
    if missing:
        raise UserError(f"lacks {len(missing)} key(s) needed by the sampled subnets of "
                        f"{space.name!r}, e.g. {missing[0]}; run `gaze-nas profile --space "
                        f"{space.source} --out {table.path}` first",
                        source=str(table.path or table.device), field="entries")
    names = [a.to_string() for a in archs]
    log(f"validate {table.device}: {len(archs)} subnets of {space.name}, seed {seed}")
    onnx = export_many(space, [(n, "arch", n, None) for n in names], workers=workers, log=log,
                       label="export subnets")
    sessions = {}
    for n in names:
        sess = make_session(onnx[n])
        sessions[n] = (sess, make_feed(sess))
    timed = measure(sessions, rounds=rounds, runs_per_round=RUNS_PER_ROUND, warmup=WARMUP)
    del sessions

    measured = np.array([timed[n]["p50_ms"] for n in names])
    sums, parts = map(np.array, zip(*(table.raw_sum(space, a) for a in archs)))
    corr = fit_correction(sums, parts, measured)
    fitted = apply_correction(corr, sums, parts)
    loo = loo_predictions(sums, parts, measured)
    headline = fidelity(loo, measured)
    report: dict[str, Any] = {
        **headline,
        "method": "leave-one-out cross-validated correction (headline); in-sample and "
                  "uncorrected figures below",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "space": space.name, "space_hash": space.space_hash(), "seed": seed,
        "rounds": rounds, "device_measured_on": device_info()["device"],
        "correction": {k: round(v, 6) for k, v in corr.items()},
        "in_sample": fidelity(fitted, measured),
        "raw_sum": fidelity(sums, measured),
        "per_sample": [
            {"arch": n, "measured_ms": round(float(m), 5), "predicted_ms": round(float(p), 5),
             "loo_ms": round(float(q), 5), "raw_sum_ms": round(float(s), 5), "parts": int(c)}
            for n, m, p, q, s, c in zip(names, measured, fitted, loo, sums, parts)],
    }
    report = _finite_or_none(report)
    table.correction = {k: float(v) for k, v in corr.items()}
    table.validation = report
    if table.path is not None:
        table.save()
    log(f"validation (leave-one-out, n={report['n']}): MAPE {headline['mape']:.2f}%, "
        f"within 5% {headline['within_5']:.0%}, within 10% {headline['within_10']:.0%}, "
        f"Kendall tau {headline['kendall_tau']:.3f}; raw sum MAPE "
        f"{report['raw_sum']['mape']:.1f}%; correction a={corr['a']:.4f} "
        f"b={corr['b'] * 1e3:.2f}us c={corr['c'] * 1e3:.2f}us")
    return report
