"""Build (or resume, or extend) one device's LUT by timing every key of a space.

Two phases: export every missing key's ONNX model in parallel into the cache, then time the
models in this process only, in chunks whose sessions stay alive while their models are
interleaved. Anchor models timed in every round say which rounds ran on a machine slowed
from elsewhere; those rounds are not used and models short of quiet rounds are timed again
(`nas.latency.gate`, `nas.latency.timing`). The table is saved after every chunk, so an
interruption loses one chunk.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import nas
from nas.errors import UserError
from nas.latency.backends import Backend, check_measuring_into, get_backend
from nas.latency.export import cache_dir, cache_file, export_many
from nas.latency.gate import TOLERANCE, WAIT_BUDGET_S, Gate, pick_anchors
from nas.latency.keys import all_keys as keys_of_space
from nas.latency.progress import fmt_duration
from nas.latency.table import LatencyTable
from nas.latency.timing import MIN_QUIET_ROUNDS, RUNS_PER_ROUND, WARMUP, time_keys
from nas.space import SearchSpace


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_table(info: dict[str, Any], rounds: int, chunk: int,
              backend: Backend | None = None) -> LatencyTable:
    """An empty table for this machine, its meta describing who measured and how."""
    be = get_backend(backend)
    meta = dict(info)
    meta.update({"created": _now(), "tool_version": nas.__version__})
    if be.needs_onnx:
        meta["exporter"] = f"torch {torch.__version__} (torchscript onnx export)"
    meta.update({"protocol": dict(be.protocol(), rounds=rounds, runs_per_round=RUNS_PER_ROUND,
                                  warmup=WARMUP, chunk=chunk, gate_tolerance=TOLERANCE,
                                  gate_min_quiet_rounds=MIN_QUIET_ROUNDS),
                 "complete": False})
    return LatencyTable(meta=meta)


def open_table(out_path: Path, device: str | None, rounds: int, chunk: int,
               log: Callable[[str], None], backend: Backend | None = None) -> LatencyTable:
    """The existing table at `out_path` if it is this machine's with this backend (resume /
    extend), else a new one. A table from another device, backend or protocol is refused,
    never mixed into."""
    be = get_backend(backend)
    info = be.info(device)
    if not out_path.exists():
        return new_table(info, rounds, chunk, be)
    table = LatencyTable.load(out_path)
    if table.meta.get("adapted"):
        raise UserError("holds predicted entries (made by `gaze-nas lut adapt`); measured "
                        "entries are never mixed into them: choose another --out",
                        source=str(out_path), field="meta.adapted")
    if device is not None and table.device != device:
        raise UserError(f"holds device {table.device!r}, not {device!r}; choose another --out",
                        source=str(out_path), field="meta.device")
    info["device"] = table.device
    for w in check_measuring_into(table, info):
        log(f"warning: {w}")
    return table


def profile_space(space: SearchSpace, out_path: str | Path, *, device: str | None = None,
                  workers: int = 2, rounds: int = 5, chunk: int = 64,
                  log: Callable[[str], None] = print,
                  keys: list[str] | None = None,
                  max_wait: float = WAIT_BUDGET_S,
                  backend: str | Backend | None = None) -> LatencyTable:
    """Time every LUT key of `space` (or just `keys`) on this machine with `backend`
    (default onnxruntime, see `nas.latency.backends`) into `out_path`, keeping entries
    already there: only keys the table lacks are measured, so a second space or resolution
    that shares layers reuses them. Returns the saved table; `table.stats` says what this
    call exported, reused and measured. `max_wait` bounds the seconds spent re-timing chunks
    at once because the machine ran slowed (see `nas.latency.gate`)."""
    be = get_backend(backend)
    be.refuse_remote()
    out_path = Path(out_path)
    if chunk < 1 or rounds < 1 or workers < 1:
        raise ValueError("chunk, rounds and workers must be >= 1")
    all_keys = keys_of_space(space)
    if keys is None:
        targets = list(all_keys)
    else:
        unknown = [k for k in keys if k not in all_keys]
        if unknown:
            raise UserError(f"{len(unknown)} key(s) are not keys of space {space.name!r}, "
                            f"e.g. {unknown[0]!r}", field="keys")
        targets = list(dict.fromkeys(keys))
    table = open_table(out_path, device, rounds, chunk, log, be)
    todo = table.missing(targets)
    log(f"profile {space.name} ({space.space_hash()}) on {table.device} with {be.name}: "
        f"{len(targets)} keys, "
        f"{len(targets) - len(todo)} already in {out_path}, {len(todo)} to measure")

    folder = cache_dir(out_path)
    anchors = pick_anchors(space)
    need = list(dict.fromkeys(todo + anchors)) if todo else []
    jobs = [(k, *all_keys[k], str(cache_file(folder, k))) for k in need
            if be.needs_onnx and not cache_file(folder, k).is_file()]
    t0 = time.perf_counter()
    if jobs:
        log(f"export: {len(jobs)} ONNX models into {folder} ({workers} workers), "
            f"{len(need) - len(jobs)} cached")
    export_many(space, jobs, workers=workers, log=log, label="export")
    t_export = time.perf_counter() - t0

    # Seeded shuffle: a burst of noise from elsewhere hits a mix of layer types, not one family.
    order = [todo[i] for i in np.random.default_rng(0).permutation(len(todo))]
    t1 = time.perf_counter()

    def open_key(k: str) -> tuple:
        return be.open_key(space, *all_keys[k], cache_file(folder, k) if be.needs_onnx else None)

    if order:
        earlier = dict(table.meta.get("anchors") or {})  # from this or another space's run
        gate = Gate({a: open_key(a) for a in anchors}, ref=earlier, budget_s=max_wait)

        def save_chunk(best: dict[str, dict]) -> None:
            table.entries.update(best)
            table.meta["anchors"] = {**earlier, **{a: round(v, 6) for a, v in gate.ref.items()}}
            table.meta["updated"] = _now()
            table.save(out_path)

        final, table.meta["gate"] = time_keys(
            order, gate, open_key, rounds=rounds,
            chunk=chunk, log=log, on_chunk=save_chunk)
        table.entries.update(final)  # judged against the run's final quiet reference
    t_measure = time.perf_counter() - t1

    have_all = not table.missing(all_keys)
    if have_all and space.space_hash() not in table.space_hashes:
        table.space_hashes.append(space.space_hash())
    table.meta["complete"] = not table.missing(targets)
    table.meta["updated"] = _now()
    table.save(out_path)
    table.stats = {"targets": len(targets), "measured": len(todo), "exported": len(jobs),
                   "reused_onnx": len(need) - len(jobs) if be.needs_onnx else 0,
                   "already": len(targets) - len(todo)}
    log(f"profile done: {len(table.entries)} entries in {out_path}; export "
        f"{fmt_duration(t_export)}, measure {fmt_duration(t_measure)}"
        + ("" if have_all else f"; {len(table.missing(all_keys))} keys of the space still "
           f"missing (space_hash not recorded)"))
    return table
