"""`gaze-nas data prepare`: convert any source into a memory-mapped cache, once.

Resumable after kill -9: images are written in chunks, each into a temp folder renamed into
place when complete, and the manifest (rewritten atomically) records finished chunks; a
rerun skips them. Only when all chunks exist are they joined into the final arrays (temp
files renamed into place), the manifest marked complete and the chunks removed. Unreadable
samples (a corrupt JPEG) are skipped and counted; above `max_bad_fraction` it stops with an
error naming the first.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.errors import UserError
from nas.gaze.datasets.bad import DEFAULT_MAX_BAD_FRACTION, BadSampleError, tolerate
from nas.gaze.datasets.cache import (FORMAT, MANIFEST, VERSION, cache_fingerprint, image_file,
                                     read_manifest)
from nas.gaze.datasets.dataset import GazeDataset
from nas.gaze.datasets.registry import get_source, open_dataset
from nas.io import atomic_write, atomic_write_json

CHUNK_BYTES = 64 << 20  # images per chunk: about this many bytes

__all__ = ["prepare"]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _inputs(ds: GazeDataset) -> dict[str, dict]:
    imgs = ds.images if isinstance(ds.images, dict) else {"": ds.images}
    return {k: {"shape": list(v.shape[1:]), "dtype": "uint8"} for k, v in imgs.items()}


def _save(path: Path, arr: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)

    atomic_write(path, write)


def _read_chunk(ds: GazeDataset, idx: np.ndarray) -> tuple[dict, np.ndarray, list]:
    """Images of rows `idx` as {input: array}, the rows kept, and [(name, reason)] skipped."""
    try:
        imgs = ds.read_images(idx)
        return (imgs if isinstance(imgs, dict) else {"": imgs}), idx, []
    except BadSampleError:
        pass
    kept, parts, bad = [], [], []
    for i in idx:  # find the bad ones, one at a time
        try:
            img = ds.read_images(np.array([i]))
        except BadSampleError as exc:
            bad.append((ds.describe(int(i)), str(exc)))
            continue
        kept.append(i)
        parts.append(img if isinstance(img, dict) else {"": img})
    keys = list(_inputs(ds))
    if not parts:
        return {k: np.zeros((0, *ds_shape(ds, k)), np.uint8) for k in keys}, \
            np.zeros(0, np.int64), bad
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}, \
        np.asarray(kept, np.int64), bad


def ds_shape(ds: GazeDataset, key: str) -> tuple[int, ...]:
    imgs = ds.images if isinstance(ds.images, dict) else {"": ds.images}
    return tuple(imgs[key].shape[1:])


def _write_chunk(chunks: Path, c: int, imgs: dict, kept: np.ndarray) -> None:
    """Chunk c as a folder, complete or absent: written under a temp name, then renamed."""
    final = chunks / f"{c:06d}"
    tmp = chunks / f".tmp-{c:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "index.npy", kept)
    for k, a in imgs.items():
        np.save(tmp / image_file(k), a)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _progress(name: str, log: Callable[[str], None], total: int, every: float = 2.0):
    t0 = time.monotonic()
    last = [-1e9, -1]  # time and count of the last line

    def tick(done: int, fresh: int, force: bool = False) -> None:
        now = time.monotonic()
        if (not force and now - last[0] < every) or done == last[1]:
            return
        last[0], last[1] = now, done
        rate = fresh / max(now - t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:.0f}s" if eta != float("inf") else "?"
        log(f"prepare {name}: {done}/{total} samples ({100 * done / max(total, 1):.0f}%), "
            f"{rate:.0f} samples/s, ETA {eta_s}")

    return tick


def _finalize(out: Path, ds: GazeDataset, manifest: dict, n_chunks: int) -> np.ndarray:
    """Join the chunks into the final arrays; returns the kept source rows."""
    chunks = out / "chunks"
    index = np.concatenate([np.load(chunks / f"{c:06d}" / "index.npy") for c in
                            range(n_chunks)]) if n_chunks else np.zeros(0, np.int64)
    n = len(index)
    for k, spec in manifest["inputs"].items():
        final = out / image_file(k)
        tmp = out / f".{image_file(k)}.tmp"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(n, *spec["shape"]))
        at = 0
        for c in range(n_chunks):
            part = np.load(chunks / f"{c:06d}" / image_file(k), mmap_mode="r")
            arr[at:at + len(part)] = part
            at += len(part)
        arr.flush()
        del arr
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    if ds.labels is not None:
        _save(out / "labels.npy", np.asarray(ds.labels[index], np.float32))
    if ds.head_pose is not None:
        _save(out / "head_pose.npy", np.asarray(ds.head_pose[index], np.float32))
    _save(out / "subjects.npy", np.asarray(ds.subjects[index]))
    _save(out / "index.npy", index)
    official = ds.official
    if official:
        codes = np.full(len(ds), -1, np.int8)
        for i, idx in enumerate(official.values()):
            codes[idx] = i
        _save(out / "split.npy", codes[index])
    return index


def prepare(name: str, path: str | Path | None, out: str | Path, *,
            chunk_size: int | None = None, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
            log: Callable[[str], None] | None = _stderr, **opts: Any) -> Path:
    """Convert dataset `name` at `path` (reader options `opts`) into a cache folder `out`,
    resuming a previous interrupted run there. Returns `out`; open it with
    `open_dataset("cache", out)`."""
    say = log or (lambda _m: None)
    if "max_bad_fraction" in get_source(name).options:
        opts["max_bad_fraction"] = max_bad_fraction
    ds = open_dataset(name, path, log=say, **opts)
    out = Path(out).expanduser()
    mpath = out / MANIFEST
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is None and out.is_dir() and any(out.iterdir()):
        raise UserError("folder is not empty and holds no gaze-nas cache; choose a new or "
                        "empty folder", source=str(out))
    if manifest is not None and manifest.get("source_fingerprint") != ds.fingerprint:
        raise UserError(f"holds a cache of other data or options (fingerprint "
                        f"{manifest.get('source_fingerprint')!r}, these data give "
                        f"{ds.fingerprint!r}); choose another folder or delete it",
                        source=str(mpath), field="source_fingerprint")
    if manifest is not None and manifest.get("complete"):
        say(f"prepare {name}: {out} is already complete ({manifest['n']} samples)")
        return out
    inputs = _inputs(ds)
    per_sample = sum(int(np.prod(v["shape"])) for v in inputs.values())
    if chunk_size is None:
        chunk_size = int(min(8192, max(16, CHUNK_BYTES // max(per_sample, 1))))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"expected a positive integer, got {chunk_size!r}",
                        field="chunk_size")
    if manifest is None or manifest.get("chunk_size") != chunk_size:
        manifest = {"format": FORMAT, "version": VERSION, "source": name, "task": ds.task,
                    "source_root": ds.root, "source_fingerprint": ds.fingerprint,
                    "source_options": {k: v for k, v in opts.items()},
                    "n_source": len(ds), "chunk_size": chunk_size, "inputs": inputs,
                    "labeled": ds.labels is not None, "head_pose": ds.head_pose is not None,
                    "splits": list(ds.official) if ds.official else None,
                    "done": {}, "complete": False}
        shutil.rmtree(out / "chunks", ignore_errors=True)
    chunks = out / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    for stale in chunks.glob(".tmp-*"):  # a chunk being written when the last run died
        shutil.rmtree(stale, ignore_errors=True)
    atomic_write_json(mpath, manifest)
    n = len(ds)
    n_chunks = -(-n // chunk_size)
    done = {int(c) for c in manifest["done"]}
    tick = _progress(name, say, n)
    finished = sum(min(chunk_size, n - c * chunk_size) for c in done)
    fresh = 0
    if done:
        say(f"prepare {name}: resuming, {len(done)}/{n_chunks} chunks already done")
    for c in range(n_chunks):
        if c in done and (chunks / f"{c:06d}").is_dir():
            continue
        idx = np.arange(c * chunk_size, min((c + 1) * chunk_size, n), dtype=np.int64)
        imgs, kept, bad = _read_chunk(ds, idx)
        _write_chunk(chunks, c, imgs, kept)
        manifest["done"][str(c)] = {"kept": int(len(kept)), "bad": bad}
        atomic_write_json(mpath, manifest)
        finished += len(idx)
        fresh += len(idx)
        tick(finished, fresh)
    tick(n, max(fresh, 1), force=True)
    bad = [tuple(b) for c in range(n_chunks) for b in manifest["done"][str(c)]["bad"]]
    tolerate(bad, n, max_bad_fraction, "samples", say)
    index = _finalize(out, ds, manifest, n_chunks)
    manifest.update({"n": int(len(index)), "complete": True,
                     "skipped": [list(b) for b in bad],
                     "fingerprint": cache_fingerprint(ds.fingerprint, [b[0] for b in bad])})
    atomic_write_json(mpath, manifest)
    shutil.rmtree(chunks, ignore_errors=True)
    say(f"prepare {name}: wrote {len(index)} samples to {out}"
        + (f" ({len(bad)} skipped)" if bad else ""))
    return out
