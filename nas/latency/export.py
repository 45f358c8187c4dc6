"""Parallel torch -> ONNX export with an on-disk cache next to the LUT.

Export (~25 ms a layer) costs far more than timing a layer (~0.1 ms), so it runs first, in
worker processes, and every file is written atomically under a name derived from the key:
an interrupted profile resumes without re-exporting, and a second space that reuses the
same layers reuses their files. Timing then happens in the main process alone.

Workers are plain `python -m nas.latency.export` subprocesses fed a JSON job file, not a
multiprocessing pool: a spawn pool re-imports the caller's main script, which hangs any
user script without an `if __name__ == "__main__"` guard, and fork is unsafe once torch
has started its thread pools.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

import nas
from nas.io import file_hash, atomic_write_bytes, json_hash
from nas.latency.build import export_onnx, module_for_key
from nas.latency.keys import all_keys as keys_of_space
from nas.latency.progress import Progress
from nas.latency.runtime import OPSET
from nas.space import SearchSpace

# Below this many jobs, starting worker processes (each imports torch) costs more than it saves.
MIN_PARALLEL_JOBS = 24

# A job: (name, kind, spec, destination file or None to return the bytes). kind "arch" has
# the canonical arch string as spec and builds a whole GazeNet; other kinds are LUT keys
# whose name is the key itself.
Job = tuple[str, str, Any, "str | None"]


def exporter_tag() -> str:
    """Changes with anything that changes the exported graphs (opset, torch, this tool, the
    blocks' code), so stale files are never reused."""
    return json_hash({"opset": OPSET, "torch": torch.__version__, "tool": nas.__version__,
                      "exporter": "torchscript", "blocks": _blocks_source_hash()}, n=12)


def cache_dir(lut_path: str | Path) -> Path:
    """`<lut dir>/.onnx_cache/<exporter tag>/`."""
    return Path(lut_path).resolve().parent / ".onnx_cache" / exporter_tag()


def _blocks_source_hash() -> str:
    """The exported graphs are the blocks' code: a change to it must not reuse old files.
    Covers `nas.models` and the module of every registered family's static block."""
    import inspect

    import nas.models
    from nas.blocks import FAMILIES

    files = {nas.models.__file__} | {inspect.getfile(f.static_module())
                                     for f in FAMILIES.values()}
    return json_hash(sorted(file_hash(f) for f in files), n=16)


def cache_file(folder: Path, key: str) -> Path:
    """File of one key's model: a hash of the key (keys hold characters file systems dislike)."""
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".onnx")


def build_onnx(space: SearchSpace, kind: str, spec: Any) -> bytes:
    """ONNX bytes of one LUT part, or (kind "arch", spec an arch string) of a whole subnet."""
    if kind == "arch":
        from nas.models import build_net, example_input

        arch = space.parse(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = build_net(space, arch).eval()
        return export_onnx(net, example_input(space, arch))
    return export_onnx(*module_for_key(space, kind, spec))


def export_many(space: SearchSpace, jobs: Iterable[Job], *, workers: int = 2,
                log: Callable[[str], None] = print, label: str = "export") -> dict[str, bytes]:
    """Run export jobs (in `workers` processes when there are enough of them); returns the
    bytes of the jobs that had no destination file. Progress lines go to `log`."""
    jobs = list(jobs)
    if not jobs:
        return {}
    prog = Progress(label, len(jobs), log)
    if workers <= 1 or len(jobs) < MIN_PARALLEL_JOBS or not _travels(space):
        out = {}
        for name, kind, spec, dest in jobs:
            data = build_onnx(space, kind, spec)
            if dest is None:
                out[name] = data
            else:
                atomic_write_bytes(dest, data)
            prog.update()
    else:
        out = _export_in_workers(space, jobs, workers, prog)
    prog.finish()
    return out


def _travels(space: SearchSpace) -> bool:
    """Whether workers can rebuild this very space from its YAML data (sent as JSON)."""
    try:
        json.dumps(space.raw)
        return SearchSpace.from_dict(space.raw).space_hash() == space.space_hash()
    except Exception:  # a space built in code, or data JSON cannot carry
        return False


def _export_in_workers(space: SearchSpace, jobs: list[Job], workers: int,
                       prog: Progress) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="gaze-nas-export-") as tmp:
        # Jobs without a destination write into the temp folder; we read the bytes back.
        dests = [d if d is not None else os.path.join(tmp, f"{i}.onnx")
                 for i, (_, _, _, d) in enumerate(jobs)]
        wire = [[name, kind, spec if kind == "arch" else None, dest]
                for (name, kind, spec, _), dest in zip(jobs, dests)]
        procs, done = [], queue.Queue()
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        try:
            for w in range(workers):
                spec_file = Path(tmp) / f"jobs{w}.json"
                spec_file.write_text(json.dumps({"space": space.raw, "source": space.source,
                                                 "jobs": wire[w::workers]}))
                # stderr to a file: a full pipe nobody reads would stall the worker
                with open(Path(tmp) / f"err{w}.txt", "w") as err:
                    p = subprocess.Popen([sys.executable, "-m", "nas.latency.export",
                                          str(spec_file)], stdout=subprocess.PIPE, stderr=err,
                                         env=env, text=True)
                threading.Thread(target=_pump, args=(p, done), daemon=True).start()
                procs.append(p)
            finished = 0
            while finished < len(procs):
                msg = done.get()
                if msg is None:
                    finished += 1
                else:
                    prog.update()
            for w, p in enumerate(procs):
                if p.wait() != 0:
                    err = (Path(tmp) / f"err{w}.txt").read_text().strip().splitlines()
                    raise RuntimeError(f"ONNX export worker failed (exit {p.returncode}): "
                                       + (err[-1] if err else "no message"))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return {name: Path(d).read_bytes() for (name, _, _, dest), d in zip(jobs, dests)
                if dest is None}


def _pump(proc: subprocess.Popen, done: queue.Queue) -> None:
    """Forward a worker's `ok` lines to the progress queue; None when it has exited."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ok "):
            done.put(line[3:].strip())
    done.put(None)


def _worker_main(spec_file: str) -> None:
    """Worker entry point: export the jobs of one JSON file, print `ok <n>` after each."""
    torch.set_num_threads(1)
    payload = json.loads(Path(spec_file).read_text())
    space = SearchSpace.from_dict(payload["space"], source=payload["source"])
    all_keys = None
    for i, (name, kind, spec, dest) in enumerate(payload["jobs"]):
        if kind != "arch":
            all_keys = all_keys if all_keys is not None else keys_of_space(space)
            kind, spec = all_keys[name]
        atomic_write_bytes(dest, build_onnx(space, kind, spec))
        print(f"ok {i}", flush=True)


if __name__ == "__main__":
    _worker_main(sys.argv[1])
