"""A prepared dataset: a folder of .npy files, memory-mapped on open, written by `prepare`.

Why: decoding JPEGs or MATLAB files on every epoch is slow, and random access into
compressed HDF5 chunks is slower; a flat uint8 memmap is as fast as RAM for what fits in
the page cache and needs no RAM for what does not.

Layout: manifest.json (format, source, task, fingerprints, inputs, splits, skipped samples),
images.npy (or images.<input>.npy per named input), labels.npy, subjects.npy,
head_pose.npy, split.npy (official split codes), index.npy (row in the source).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserError, safe_name
from nas.gaze.datasets.dataset import TASKS, GazeDataset
from nas.gaze.datasets.registry import Log, register_source

FORMAT, VERSION = "gaze-nas-cache", 1
MANIFEST = "manifest.json"

__all__ = ["read_manifest", "image_file", "cache_fingerprint", "FORMAT", "VERSION", "MANIFEST"]


def image_file(key: str) -> str:
    """File of one input: images.npy for a single-input set, images.<key>.npy otherwise."""
    return "images.npy" if key == "" else f"images.{key}.npy"


def cache_fingerprint(source_fingerprint: str, skipped: list) -> str:
    h = hashlib.sha256(source_fingerprint.encode())
    h.update(json.dumps(skipped).encode())
    return f"cache-{h.hexdigest()[:16]}"


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a cache folder (None if there is none), checked for its format."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable cache manifest ({type(exc).__name__}); delete the folder "
                        "and prepare again", source=str(path)) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise UserError(f"not a gaze-nas data cache (expected format {FORMAT!r})",
                        source=str(path), field="format")
    if m.get("version") != VERSION:
        raise UserError(f"cache version {m.get('version')!r}; this gaze-nas reads version "
                        f"{VERSION}: prepare it again", source=str(path), field="version")
    inputs = m.get("inputs")
    if not isinstance(inputs, dict) or not all(k == "" or safe_name(k) for k in inputs) \
            or m.get("task") not in TASKS:
        raise UserError("malformed cache manifest; delete the folder and prepare again",
                        source=str(path), field="inputs")
    return m


def _load(folder: Path, name: str, n: int, mmap: bool = True) -> np.ndarray:
    path = folder / name
    try:
        a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"missing or unreadable cache file ({type(exc).__name__}); prepare "
                        "it again", source=str(path)) from None
    if len(a) != n:
        raise UserError(f"{len(a)} rows, the manifest says {n}; prepare it again",
                        source=str(path))
    return a


@register_source
class CacheSource:
    name = "cache"
    task = None  # whatever was prepared
    needs_path = True
    options: dict[str, Any] = {}

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset:
        assert path is not None
        m = read_manifest(path)
        if m is None:
            raise UserError(f"no {MANIFEST}; expected a folder written by `gaze-nas data "
                            "prepare`", source=str(path / MANIFEST))
        if not m.get("complete"):
            raise UserError("unfinished cache (prepare was interrupted); run the same "
                            "`gaze-nas data prepare` command again to resume",
                            source=str(path / MANIFEST), field="complete")
        n = int(m["n"])
        arrays = {k: _load(path, image_file(k), n) for k in m["inputs"]}
        for k, a in arrays.items():
            if a.dtype != np.uint8 or list(a.shape[1:]) != list(m["inputs"][k]["shape"]):
                raise UserError(f"images are {a.dtype}{a.shape}, the manifest says uint8 "
                                f"{m['inputs'][k]['shape']}", source=str(path / image_file(k)))
        images = arrays[""] if list(arrays) == [""] else arrays
        splits = m.get("splits")
        official = None
        if splits:
            codes = _load(path, "split.npy", n, mmap=False)
            official = {s: np.flatnonzero(codes == i) for i, s in enumerate(splits)}
        log(f"cache: {n} samples of {m['source']} from {path}")
        return GazeDataset(
            name=f"cache:{m['source']}", task=m["task"], root=path, images=images,
            labels=_load(path, "labels.npy", n) if m.get("labeled") else None,
            head_pose=_load(path, "head_pose.npy", n) if m.get("head_pose") else None,
            subjects=_load(path, "subjects.npy", n),
            fingerprint=m["fingerprint"], official=official,
            describe=_Describe(str(path), m["source"]),
            meta={"source": m["source"], "source_fingerprint": m["source_fingerprint"],
                  "skipped": m.get("skipped", [])})


class _Describe:
    def __init__(self, folder: str, source: str):
        self.folder, self.source = folder, source

    def __call__(self, i: int) -> str:
        return f"{self.folder} sample {i} (prepared from {self.source})"
