"""Fidelity of a LUT: time K random whole subnets end to end and compare with predictions.

The whole nets are timed with the same interleaved protocol (and the same backend) as the
LUT entries. The correction (`nas.latency.fit`) is fitted on all K, but the headline
figures are leave-one-out, so they say how well the table predicts a subnet it has not been fitted on.
With `fit=False` the table is judged as it stands (its own correction, nothing written):
the check for an imported or adapted table.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.errors import UserError
from nas.latency.backends import Backend, check_measuring_into, get_backend, table_backend
from nas.latency.export import cache_file, export_many
from nas.latency.fit import (apply_correction, describe_correction, fidelity, fit_correction,
                             loo_predictions)
from nas.latency.gate import WAIT_BUDGET_S, Gate, pick_anchors
from nas.latency.keys import all_keys as keys_of_space, arch_keys
from nas.latency.table import LatencyTable
from nas.latency.timing import time_keys
from nas.space import Arch, SearchSpace

CHUNK = 10  # subnets per gated chunk: short windows, so a quiet spell is easy to catch
PASSES = 3  # subnets short of quiet rounds get up to 2 more passes


SAMPLER = "spread/2"  # recorded in the report: a table validated another way is re-validated
                      # (2: the table's own fastest subnet is always one of the samples)


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


def with_table_fastest(table: LatencyTable, space: SearchSpace, archs: list[Arch]) -> list[Arch]:
    """`archs` with the subnet the table itself predicts fastest in place of the last
    random one. Every search seeds that subnet (`nas.search.extremes`), and a correction
    fitted without it extrapolates there: on this machine's onnxruntime table the fastest
    subnet was predicted at 0.008 ms and measured at ~0.02. A table lacking keys keeps
    `archs` (the caller reports the missing keys)."""
    from nas.search.extremes import fastest_arch

    if not archs:
        return archs
    try:
        fast = fastest_arch(space, lambda a: table.predict(space, a))
    except (KeyError, UserError, ValueError):
        return archs
    rest = [a for a in archs if a.arch_id != fast.arch_id]
    return rest[:len(archs) - 1] + [fast]


def _finite_or_none(obj: Any) -> Any:
    """NaN (e.g. tau of one sample) is not allowed in a table file: store it as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


def measure_archs(space: SearchSpace, names: list[str], backend: Backend, *,
                  anchors_ref: dict[str, float] | None, rounds: int, max_wait: float,
                  log: Callable[[str], None], workers: int = 2,
                  onnx_dir: Path | None = None,
                  ) -> tuple[dict[str, dict], dict[str, Any], dict[str, float]]:
    """Time whole subnets (canonical arch strings) end to end with `backend`, in small
    chunks interleaved with the space's anchor models. With `anchors_ref` (the anchors'
    quiet times from the table's profile) the gate is frozen to it: a chunk timed while the
    machine ran slower than then is timed again, so a slowed machine cannot pass for a
    wrong correction. Without it the gate learns the anchors' quiet level as it goes, as
    profiling does. `onnx_dir`: keep the subnets' ONNX files there and reuse them (else
    they are exported in memory). Returns entries by name, the gate's statistics and the
    anchors' reference at the end."""
    all_keys = keys_of_space(space)
    onnx: dict[str, bytes] = {}
    if backend.needs_onnx and onnx_dir is None:
        onnx = export_many(space, [(n, "arch", n, None) for n in names], workers=workers,
                           log=log, label="export subnets")
    elif backend.needs_onnx:
        files = {n: cache_file(Path(onnx_dir), "arch:" + n) for n in names}
        export_many(space, [(n, "arch", n, str(f)) for n, f in files.items() if not f.is_file()],
                    workers=workers, log=log, label="export subnets")
        onnx = {n: f.read_bytes() for n, f in files.items()}
    frozen = anchors_ref is not None
    if frozen:
        ref = {k: float(v) for k, v in anchors_ref.items()
               if k in all_keys and isinstance(v, (int, float)) and v > 0}
        if not ref:
            log("warning: the table has no anchor times for this space; subnets are timed "
                "without the contention gate")
        anchor_keys = list(ref)
    else:
        ref, anchor_keys = {}, pick_anchors(space)
    sessions = {k: backend.open_key(space, *all_keys[k]) for k in anchor_keys}
    gate = Gate(sessions, ref, budget_s=max_wait, frozen=frozen)
    best, stats = time_keys(names, gate, lambda n: backend.open_arch(space, n, onnx.get(n)),
                            rounds=rounds, chunk=CHUNK, log=log, max_passes=PASSES,
                            label="time subnets")
    if stats["unsettled"]:
        log(f"warning: {stats['unsettled']} of {len(names)} subnets were timed only while the "
            f"machine ran slowed (anchors at best x{stats['anchor_speed_best']:.2f}); the "
            f"fitted correction carries that slowdown: validate again when the machine is quiet")
    if frozen and ref and stats["anchor_speed_best"] < 1 - 2 * gate.tolerance:
        log(f"warning: the anchors now run x{1 / stats['anchor_speed_best']:.2f} faster than "
            f"when the table was profiled: it was likely profiled on a slowed machine; "
            f"consider profiling again")
    return best, stats, dict(gate.ref)


def fidelity_report(table: LatencyTable, space: SearchSpace, archs: list[Arch],
                    measured: Any, *, fit: bool = True, **extra: Any
                    ) -> tuple[dict[str, Any], dict[str, float]]:
    """The report stored in `table.validation`, and the correction it implies. `fit`: fit
    the correction (`nas.latency.fit`) on these subnets and headline the leave-one-out
    figures; else judge the table's own correction as it stands (the correction returned
    is the table's)."""
    names = [a.to_string() for a in archs]
    measured = np.asarray(measured, dtype=np.float64)
    sums, parts = map(np.array, zip(*(table.raw_sum(space, a) for a in archs)))
    if fit:
        corr = fit_correction(sums, parts, measured)
        fitted = apply_correction(corr, sums, parts)
        loo = loo_predictions(sums, parts, measured)
        headline = fidelity(loo, measured)
        method = ("leave-one-out cross-validated correction (headline); in-sample and "
                  "uncorrected figures below")
    else:
        corr = dict(table.correction)
        fitted = np.array([table.predict(space, a) for a in archs])
        loo = fitted
        headline = fidelity(fitted, measured)
        method = "the table's own correction as it stands (no refit); uncorrected below"
    report: dict[str, Any] = {
        **headline, "method": method,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "space": space.name, "space_hash": space.space_hash(), **extra,
        "correction": {k: round(v, 6) for k, v in corr.items()},
        "in_sample": fidelity(fitted, measured),
        "raw_sum": fidelity(sums, measured),
        "per_sample": [
            {"arch": n, "measured_ms": round(float(m), 5), "predicted_ms": round(float(p), 5),
             "loo_ms": round(float(q), 5), "raw_sum_ms": round(float(s), 5), "parts": int(c)}
            for n, m, p, q, s, c in zip(names, measured, fitted, loo, sums, parts)],
    }
    return _finite_or_none(report), {k: float(v) for k, v in corr.items()}


def validate_table(table: LatencyTable, space: SearchSpace, samples: int = 40, seed: int = 0,
                   rounds: int = 5, log: Callable[[str], None] = print,
                   workers: int = 2, max_wait: float = WAIT_BUDGET_S,
                   backend: str | Backend | None = None, fit: bool = True) -> dict[str, Any]:
    """Measure `samples` random subnets of `space` here with `backend` (default: the one
    the table was measured with). `fit`: fit the table's correction and store correction
    and report in the table (saved when it has a path); else report the table's fidelity
    as it stands and change nothing. Returns the report."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    be = get_backend(backend or table_backend(table.meta))
    if be.remote:
        raise UserError("was measured on its device by run_bundle.py, and validating measures "
                        "here: its validation is the report `lut import` stored from the "
                        "subnets measured there; if the bundle ran on this very machine, pass "
                        "--backend onnxruntime", source=str(table.path or table.device),
                        field="--backend")
    info = be.info(table.device)
    for w in check_measuring_into(table, info):  # measuring here: same device and protocol
        log(f"warning: {w}")
    archs = with_table_fastest(table, space, sample_archs(space, samples, seed))
    missing = sorted({k for a in archs for k in table.missing(arch_keys(space, a))})
    if missing:
        raise UserError(f"lacks {len(missing)} key(s) needed by the sampled subnets of "
                        f"{space.name!r}, e.g. {missing[0]}; run `gaze-nas profile --space "
                        f"{space.source} --out {table.path}` first",
                        source=str(table.path or table.device), field="entries")
    if not fit:
        for a in archs[:1]:
            table.predict(space, a)  # a correction that predicts nonsense: refuse before work
    names = [a.to_string() for a in archs]
    log(f"validate {table.device} with {be.name}: {len(archs)} subnets of {space.name}, "
        f"seed {seed}" + ("" if fit else ", correction as it stands (no refit)"))
    timed, gate, _ = measure_archs(space, names, be, anchors_ref=table.meta.get("anchors") or {},
                                   rounds=rounds, max_wait=max_wait, log=log, workers=workers)
    measured = np.array([timed[n]["p50_ms"] for n in names])
    report, corr = fidelity_report(
        table, space, archs, measured, fit=fit, seed=seed, sampler=SAMPLER, rounds=rounds,
        backend=be.name, device_measured_on=be.info()["device"], gate=gate)
    if fit:
        table.correction = corr
        table.validation = report
        if table.path is not None:
            table.save()
    log(f"validation ({'leave-one-out' if fit else 'as it stands'}, n={report['n']}): "
        f"MAPE {report['mape']:.2f}%, within 5% {report['within_5']:.0%}, within 10% "
        f"{report['within_10']:.0%}, Kendall tau {_fmt(report['kendall_tau'])}; raw sum MAPE "
        f"{report['raw_sum']['mape']:.1f}%; correction {describe_correction(corr)}")
    return report


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"
