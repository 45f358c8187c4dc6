"""Build (or resume, or extend) one device's LUT by timing every key of a space.

Two phases: export every missing key's ONNX model in parallel into the cache, then time the
models in this process only, in chunks whose sessions stay alive while their models are
interleaved. The table is saved after every chunk, so an interruption loses one chunk.
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
from nas.latency.export import cache_dir, cache_file, export_many
from nas.latency.progress import Progress, fmt_duration
from nas.latency.runtime import PROTOCOL, device_info, make_feed, make_session, measure
from nas.latency.table import LatencyTable
from nas.space import SearchSpace

RUNS_PER_ROUND = 5
WARMUP = 3


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_table(info: dict[str, Any], rounds: int, chunk: int) -> LatencyTable:
    """An empty table for this machine, its meta describing who measured and how."""
    meta = dict(info)
    meta.update({"created": _now(), "tool_version": nas.__version__,
                 "exporter": f"torch {torch.__version__} (torchscript onnx export)",
                 "protocol": dict(PROTOCOL, rounds=rounds, runs_per_round=RUNS_PER_ROUND,
                                  warmup=WARMUP, chunk=chunk),
                 "complete": False})
    return LatencyTable(meta=meta)


def open_table(out_path: Path, device: str | None, rounds: int, chunk: int,
               log: Callable[[str], None]) -> LatencyTable:
    """The existing table at `out_path` if it is this machine's (resume / extend), else a
    new one. A table from another device or protocol is refused, never mixed into."""
    info = device_info(device)
    if not out_path.exists():
        return new_table(info, rounds, chunk)
    table = LatencyTable.load(out_path)
    if device is not None and table.device != device:
        raise UserError(f"holds device {table.device!r}, not {device!r}; choose another --out",
                        source=str(out_path), field="meta.device")
    info["device"] = table.device
    for w in table.check_device(info):
        log(f"warning: {w}")
    return table


def _measure_chunk(folder: Path, keys: list[str], space: SearchSpace, all_keys: dict,
                   rounds: int) -> dict[str, dict]:
    sessions = {}
    for k in keys:
        f = cache_file(folder, k)
        try:
            sess = make_session(f)
        except Exception:  # a damaged cache file: rebuild it here, once
            export_many(space, [(k, *all_keys[k], str(f))], workers=1, log=lambda _: None)
            sess = make_session(f)
        sessions[k] = (sess, make_feed(sess))
    return measure(sessions, rounds=rounds, runs_per_round=RUNS_PER_ROUND, warmup=WARMUP)


def profile_space(space: SearchSpace, out_path: str | Path, *, device: str | None = None,
                  workers: int = 2, rounds: int = 5, chunk: int = 64,
                  log: Callable[[str], None] = print,
                  keys: list[str] | None = None) -> LatencyTable:
    """Time every LUT key of `space` (or just `keys`) on this machine into `out_path`,
    keeping entries already there. Returns the saved table; `table.stats` says what this
    call exported, reused and measured."""
    out_path = Path(out_path)
    if chunk < 1 or rounds < 1 or workers < 1:
        raise ValueError("chunk, rounds and workers must be >= 1")
    all_keys = space.all_keys()
    if keys is None:
        targets = list(all_keys)
    else:
        unknown = [k for k in keys if k not in all_keys]
        if unknown:
            raise UserError(f"{len(unknown)} key(s) are not keys of space {space.name!r}, "
                            f"e.g. {unknown[0]!r}", field="keys")
        targets = list(dict.fromkeys(keys))
    table = open_table(out_path, device, rounds, chunk, log)
    todo = table.missing(targets)
    log(f"profile {space.name} ({space.space_hash()}) on {table.device}: {len(targets)} keys, "
        f"{len(targets) - len(todo)} already in {out_path}, {len(todo)} to measure")

    folder = cache_dir(out_path)
    jobs = [(k, *all_keys[k], str(cache_file(folder, k))) for k in todo
            if not cache_file(folder, k).is_file()]
    t0 = time.perf_counter()
    if jobs:
        log(f"export: {len(jobs)} ONNX models into {folder} ({workers} workers), "
            f"{len(todo) - len(jobs)} cached")
    export_many(space, jobs, workers=workers, log=log, label="export")
    t_export = time.perf_counter() - t0

    # Seeded shuffle: a burst of noise from elsewhere hits a mix of layer types, not one family.
    order = [todo[i] for i in np.random.default_rng(0).permutation(len(todo))]
    prog = Progress("measure", len(order), log)
    t1 = time.perf_counter()
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        table.entries.update(_measure_chunk(folder, part, space, all_keys, rounds))
        table.meta["updated"] = _now()
        table.save(out_path)
        prog.update(len(part))
    t_measure = time.perf_counter() - t1
    if order:
        prog.finish()

    have_all = not table.missing(all_keys)
    if have_all and space.space_hash() not in table.space_hashes:
        table.space_hashes.append(space.space_hash())
    table.meta["complete"] = not table.missing(targets)
    table.meta["updated"] = _now()
    table.save(out_path)
    table.stats = {"targets": len(targets), "measured": len(todo), "exported": len(jobs),
                   "reused_onnx": len(todo) - len(jobs), "already": len(targets) - len(todo)}
    log(f"profile done: {len(table.entries)} entries in {out_path}; export "
        f"{fmt_duration(t_export)}, measure {fmt_duration(t_measure)}"
        + ("" if have_all else f"; {len(table.missing(all_keys))} keys of the space still "
           f"missing (space_hash not recorded)"))
    return table
