"""onnxruntime sessions and the interleaved timing protocol shared by profiling and validation.

Both the per-key LUT entries and the whole-subnet validation runs go through `measure`, so
whatever overhead or noise the protocol has, it has on both sides of the comparison.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

OPSET = 17
BATCH = 1
DTYPE = "float32"
PROVIDER = "CPUExecutionProvider"
THREADS = 1

PROTOCOL: dict[str, Any] = {
    "runtime": "onnxruntime",
    "provider": PROVIDER,
    "intra_op_num_threads": THREADS,
    "inter_op_num_threads": THREADS,
    "graph_optimization_level": "ORT_ENABLE_ALL",
    "execution_mode": "ORT_SEQUENTIAL",
    "allow_spinning": False,
    "batch": BATCH,
    "dtype": DTYPE,
    "opset": OPSET,
    "export": "torch.onnx.export(dynamo=False), eval mode, seeded weights",
    "timing": ("warm-up runs per model, then rounds interleaving every model of a chunk, "
               "each run timed alone with perf_counter; p50_ms = min over rounds of the "
               "per-round median; mean/std over all timed runs; one process, nothing else "
               "of ours running"),
    "gate": ("6 anchor models spread through every round; a model's round is used only if "
             "the anchors just before and after it ran within gate_tolerance of their quiet "
             "per-round time; models with fewer than gate_min_quiet_rounds quiet rounds are "
             "timed again"),
}

# A feed is what `sess.run` takes: input name -> array.
Feed = dict[str, np.ndarray]


OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED",
              "basic": "ORT_ENABLE_BASIC", "off": "ORT_DISABLE_ALL"}


def session_options(threads: int = THREADS, optimization: str = "all") -> ort.SessionOptions:
    """The protocol's session settings: `threads` intra-op threads (one by default), one
    inter-op thread, no spinning, graph optimizations `optimization` (every one by default)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = THREADS
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[optimization])
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def make_session(onnx: bytes | str | Path, threads: int = THREADS,
                 optimization: str = "all") -> ort.InferenceSession:
    """Session on the CPU provider with the protocol's options (model bytes or a path)."""
    model = onnx if isinstance(onnx, bytes) else str(onnx)
    return ort.InferenceSession(model, sess_options=session_options(threads, optimization),
                                providers=[PROVIDER])


def make_feed(sess: ort.InferenceSession, seed: int = 0) -> Feed:
    """A deterministic random float32 input for every (static-shaped) input of `sess`."""
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else BATCH for d in inp.shape]
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                name = line.split(":", 1)[1].strip()
                if name:
                    return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slug(text: str) -> str:
    """Lower-case file-name-safe form: `AMD EPYC 7B13` -> `amd-epyc-7b13`."""
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    text = re.sub(r"\b(cpu|processor)\b|@.*$", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "device"


def device_info(name: str | None = None) -> dict[str, Any]:
    """Who measured: device name (default a slug of CPU model + cores), CPU, OS, runtime."""
    cpu, cores = cpu_model(), _cores()
    return {
        "device": name or f"{slug(cpu)}-{cores}c",
        "cpu_model": cpu,
        "cores": cores,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "runtime": "onnxruntime",
        "runtime_version": ort.__version__,
        "provider": PROVIDER,
        "threads": THREADS,
        "batch": BATCH,
        "dtype": DTYPE,
        "opset": OPSET,
    }


def time_runs(sessions: Mapping[str, tuple[ort.InferenceSession, Feed]], rounds: int = 5,
              runs_per_round: int = 5, warmup: int = 3) -> dict[str, np.ndarray]:
    """Interleaved timing: every model runs `runs_per_round` times per round, in turn, so
    slow drifts and neighbours' bursts hit all models alike. Returns each model's run times
    in ms as a (rounds, runs_per_round) array."""
    if rounds < 1 or runs_per_round < 1 or warmup < 0:
        raise ValueError("rounds and runs_per_round must be >= 1, warmup >= 0")
    keys = list(sessions)
    out = {k: np.empty((rounds, runs_per_round)) for k in keys}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for k in keys:
            sess, feed = sessions[k]
            for _ in range(warmup):
                sess.run(None, feed)
        clock = time.perf_counter
        for r in range(rounds):
            for k in keys:
                sess, feed = sessions[k]
                run, row = sess.run, out[k][r]
                for i in range(runs_per_round):
                    t0 = clock()
                    run(None, feed)
                    row[i] = clock() - t0
    finally:
        if gc_was:
            gc.enable()
    for k in keys:
        out[k] *= 1e3
    return out


def summarize(runs_ms: np.ndarray) -> dict[str, float | int]:
    """One LUT entry from a (rounds, runs) array: p50_ms = min over rounds of the per-round
    median (the robust figure), mean/std over all runs, n runs."""
    runs_ms = np.atleast_2d(np.asarray(runs_ms, dtype=np.float64))
    flat = runs_ms.ravel()
    return {"p50_ms": round(float(np.median(runs_ms, axis=1).min()), 6),
            "mean_ms": round(float(flat.mean()), 6),
            "std_ms": round(float(flat.std()), 6),
            "n": int(flat.size)}


def measure(sessions: Mapping[str, tuple[ort.InferenceSession, Feed]], rounds: int = 5,
            runs_per_round: int = 5, warmup: int = 3) -> dict[str, dict[str, float | int]]:
    """The protocol in one call: interleaved timing, then `summarize` per model."""
    return {k: summarize(v) for k, v in time_runs(sessions, rounds, runs_per_round,
                                                   warmup).items()}
