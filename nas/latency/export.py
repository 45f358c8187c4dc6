"""Parallel torch -> ONNX export with an on-disk cache next to the LUT.

Export (~25 ms a layer) costs far more than timing a layer (~0.1 ms), so it runs first, in
worker processes, and every file is written atomically under a name derived from the key:
an interrupted profile resumes without re-exporting, and a second space that reuses the
same layers reuses their files. Timing then happens in the main process alone.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

import nas
from nas.io import atomic_write_bytes, json_hash
from nas.latency.build import export_onnx, module_for_key
from nas.latency.progress import Progress
from nas.latency.runtime import OPSET
from nas.space import SearchSpace

# Below this many jobs, starting worker processes (each imports torch) costs more than it saves.
MIN_PARALLEL_JOBS = 24

# A job: (name, kind, spec, destination file or None to return the bytes). kind "arch" has
# the canonical arch string as spec and builds a whole GazeNet.
Job = tuple[str, str, Any, "str | None"]

_space: SearchSpace | None = None


def cache_dir(lut_path: str | Path) -> Path:
    """`<lut dir>/.onnx_cache/<exporter tag>/`: the tag changes with anything that changes the
    exported graphs (opset, torch, this tool), so stale files are never reused."""
    tag = json_hash({"opset": OPSET, "torch": torch.__version__, "tool": nas.__version__,
                     "exporter": "torchscript"}, n=12)
    return Path(lut_path).resolve().parent / ".onnx_cache" / tag


def cache_file(folder: Path, key: str) -> Path:
    """File of one key's model: a hash of the key (keys hold characters file systems dislike)."""
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".onnx")


def _build(space: SearchSpace, kind: str, spec: Any) -> bytes:
    if kind == "arch":
        from nas.models import GazeNet

        arch = space.parse(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = GazeNet(space, arch).eval()
        return export_onnx(net, (1, space.in_channels, *arch.resolution))
    return export_onnx(*module_for_key(space, kind, spec))


def _init_worker(space: SearchSpace) -> None:
    global _space
    torch.set_num_threads(1)
    _space = space


def _run_job(job: Job) -> tuple[str, bytes | None]:
    """Worker side: the space came with the pool's initializer."""
    assert _space is not None, "worker not initialised"
    return _do_job(_space, job)


def _do_job(space: SearchSpace, job: Job) -> tuple[str, bytes | None]:
    name, kind, spec, dest = job
    data = _build(space, kind, spec)
    if dest is None:
        return name, data
    atomic_write_bytes(dest, data)
    return name, None


def export_many(space: SearchSpace, jobs: Iterable[Job], *, workers: int = 2,
                log: Callable[[str], None] = print, label: str = "export") -> dict[str, bytes]:
    """Run export jobs (in `workers` processes when there are enough of them); returns the
    bytes of the jobs that had no destination file. Progress lines go to `log`."""
    jobs = list(jobs)
    out: dict[str, bytes] = {}
    if not jobs:
        return out
    prog = Progress(label, len(jobs), log)
    if workers <= 1 or len(jobs) < MIN_PARALLEL_JOBS:
        for job in jobs:
            name, data = _do_job(space, job)
            if data is not None:
                out[name] = data
            prog.update()
    else:
        ctx = mp.get_context("spawn")  # fork is unsafe once torch/OpenMP threads exist
        with ctx.Pool(workers, initializer=_init_worker, initargs=(space,)) as pool:
            for name, data in pool.imap_unordered(_run_job, jobs, chunksize=4):
                if data is not None:
                    out[name] = data
                prog.update()
    prog.finish()
    return out

