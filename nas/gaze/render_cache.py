"""Seeded, cached rendering of embedded datasets (faces, point of gaze): sample i depends
only on (seed, i), whatever the number of worker processes, and a rendered set is kept as
one npz file named after the renderer's config fingerprint, so a second run loads it.

Every embedded renderer uses it: the eye patches (`nas.gaze.synthetic`, prefix `synth`),
faces and point of gaze; a sample is a dict of named arrays.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Callable

import numpy as np

from nas.io import atomic_write

Log = Callable[[str], None]
# render_one(rng, cfg) -> {name: array}; a module-level function (worker processes pickle it)
RenderOne = Callable[[np.random.Generator, object], dict[str, np.ndarray]]


def _render_range(args: tuple) -> dict[str, np.ndarray]:
    render_one, cfg, seed, start, stop = args
    rows = [render_one(np.random.default_rng([seed, i]), cfg) for i in range(start, stop)]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def render_many(render_one: RenderOne, cfg: object, n: int, seed: int, workers: int = 1,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Render n samples in chunks (in `workers` processes when > 1)."""
    chunk = max(1, min(64, -(-n // (4 * workers)))) if workers > 1 else 64
    jobs = [(render_one, cfg, seed, a, min(a + chunk, n)) for a in range(0, n, chunk)]
    parts: list[dict[str, np.ndarray]] = []

    def collect(results) -> None:
        done = 0
        for (_, _, _, a, b), part in zip(jobs, results):
            parts.append(part)
            done += b - a
            if progress is not None:
                progress(done, n)

    if workers > 1 and len(jobs) > 1:
        with mp.get_context().Pool(min(workers, len(jobs))) as pool:
            collect(pool.imap(_render_range, jobs))
    else:
        collect(map(_render_range, jobs))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_or_render(cache_dir: str | Path, prefix: str, fingerprint: str, render_one: RenderOne,
                   cfg: object, n: int, seed: int, workers: int = 1,
                   log: Log | None = print, name: str | None = None) -> dict[str, np.ndarray]:
    """`prefix_<fingerprint>_<seed>_<n>.npz` from the cache, or rendered and cached
    atomically (a file with other keys or shapes than a fresh render's is re-rendered).
    Log lines start with `name` (default: the prefix)."""
    say = log or (lambda _m: None)
    prefix_path, prefix = prefix, name or prefix
    path = Path(cache_dir) / f"{prefix_path}_{fingerprint}_{seed}_{n}.npz"
    want = {k: (v.shape[1:], v.dtype) for k, v in _render_range((render_one, cfg, seed, 0, 1))
            .items()}
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            if set(data) == set(want) and all(
                    data[k].shape == (n, *s) and data[k].dtype == d for k, (s, d) in want.items()):
                say(f"{prefix}: loaded {n} samples from {path}")
                return data
            say(f"{prefix}: cache {path} has other keys/shapes, re-rendering")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is re-rendered
            say(f"{prefix}: cache {path} is corrupt ({type(exc).__name__}: {exc}), re-rendering")
    t0, last = time.monotonic(), [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 3.0 or done == total:
            last[0] = now
            rate = done / max(now - t0, 1e-9)
            say(f"{prefix}: {done}/{total} rendered, {rate:.0f} samples/s, ETA "
                f"{(total - done) / rate:.0f}s")

    say(f"{prefix}: rendering {n} samples (seed {seed}, {workers} worker(s)) -> {path}")
    data = render_many(render_one, cfg, n, seed, workers, progress)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)

    atomic_write(path, write)
    return data
