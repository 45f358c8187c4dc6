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
from nas.latency.build import export_onnx, module_for_key
from nas.latency.export import export_many
from nas.latency.fit import apply_correction, fidelity, fit_correction, loo_predictions
from nas.latency.gate import WAIT_BUDGET_S, Gate
from nas.latency.keys import all_keys as keys_of_space, arch_keys
from nas.latency.runtime import device_info, make_feed, make_session
from nas.latency.table import LatencyTable
from nas.latency.timing import time_keys
from nas.space import Arch, SearchSpace

CHUNK = 10  # subnets per gated chunk: short windows, so a quiet spell is easy to catch
PASSES = 3  # subnets short of quiet rounds get up to 2 more passes


SAMPLER = "spread/1"  # recorded in the report: a table validated another way is re-validated


def sample_archs(space: SearchSpace, k: int, seed: int) -> list[Arch]:
    """Up to `k` subnets with distinct arch_ids spanning the space's size range: the
    smallest and the largest, then random archs of which a quarter are pulled towards the
    small end and a quarter towards the large end. Uniform samples alone cluster in the
    middle, and a correction fitted there extrapolates badly to the fastest subnets (which
    the search cares about most)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, Arch] = {}
    for a in (space.smallest(), space.largest())[:k]:
        seen.setdefault(a.arch_id, a)
    for i in range(max(100 * k, 1000)):
        if len(seen) >= k:
            break
        a = space.sample(rng)
        if i % 4 >= 2:
            a = space.pull_size(a, rng, ("small", "large")[i % 4 - 2])
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


def _time_gated(table: LatencyTable, space: SearchSpace, names: list[str],
                onnx: dict[str, bytes], rounds: int, max_wait: float,
                log: Callable[[str], None]) -> tuple[dict[str, dict], dict[str, Any]]:
    """Time the subnets in small chunks interleaved with the table's anchor models, gated
    like profiling but against the reference the table was profiled with: a chunk timed
    while the machine ran slower than then is timed again, so a slowed machine cannot pass
    for a wrong correction."""
    all_keys = keys_of_space(space)
    ref = {k: float(v) for k, v in (table.meta.get("anchors") or {}).items()
           if k in all_keys and isinstance(v, (int, float)) and v > 0}
    anchor_sessions = {}
    for k in ref:
        sess = make_session(export_onnx(*module_for_key(space, *all_keys[k])))
        anchor_sessions[k] = (sess, make_feed(sess))
    if not ref:
        log("warning: the table has no anchor times for this space; subnets are timed "
            "without the contention gate")
    gate = Gate(anchor_sessions, ref, budget_s=max_wait, frozen=True)

    def open_net(name: str) -> tuple:
        sess = make_session(onnx[name])
        return sess, make_feed(sess)

    best, stats = time_keys(names, gate, open_net, rounds=rounds, chunk=CHUNK, log=log,
                            max_passes=PASSES, label="time subnets")
    if stats["unsettled"]:
        log(f"warning: {stats['unsettled']} of {len(names)} subnets were timed only while the "
            f"machine ran slowed (anchors at best x{stats['anchor_speed_best']:.2f}); the "
            f"fitted correction carries that slowdown: validate again when the machine is quiet")
    if ref and stats["anchor_speed_best"] < 1 - 2 * gate.tolerance:
        log(f"warning: the anchors now run x{1 / stats['anchor_speed_best']:.2f} faster than "
            f"when the table was profiled: it was likely profiled on a slowed machine; "
            f"consider profiling again")
    return best, stats


def validate_table(table: LatencyTable, space: SearchSpace, samples: int = 40, seed: int = 0,
                   rounds: int = 5, log: Callable[[str], None] = print,
                   workers: int = 2, max_wait: float = WAIT_BUDGET_S) -> dict[str, Any]:
    """Measure `samples` random subnets of `space` here, fit the table's correction, store
    correction and report in the table (saved when it has a path), return the report."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    for w in table.check_device(device_info(table.device)):
        log(f"warning: {w}")
    archs = sample_archs(space, samples, seed)
    missing = sorted({k for a in archs for k in table.missing(arch_keys(space, a))})
    if missing:
        raise UserError(f"lacks {len(missing)} key(s) needed by the sampled subnets of "
                        f"{space.name!r}, e.g. {missing[0]}; run `gaze-nas profile --space "
                        f"{space.source} --out {table.path}` first",
                        source=str(table.path or table.device), field="entries")
    names = [a.to_string() for a in archs]
    log(f"validate {table.device}: {len(archs)} subnets of {space.name}, seed {seed}")
    onnx = export_many(space, [(n, "arch", n, None) for n in names], workers=workers, log=log,
                       label="export subnets")
    timed, gate = _time_gated(table, space, names, onnx, rounds, max_wait, log)

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
        "sampler": SAMPLER,
        "rounds": rounds, "device_measured_on": device_info()["device"], "gate": gate,
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
