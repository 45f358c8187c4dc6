"""The data-source seam: one registry, one small protocol; a new source is one module.

Built-in sources are imported only when named, so opening synthetic data never imports
h5py or scipy, and a broken optional reader cannot break the others.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, TypeVar, runtime_checkable

from nas.errors import UserError, check_keys, excerpt
from nas.gaze.datasets.dataset import GazeDataset

Log = Callable[[str], None]

# name -> module that registers it when imported
_BUILTIN = {
    "synthetic": "nas.gaze.datasets.synthetic",
    "mpiigaze": "nas.gaze.datasets.mpiigaze",
    "mpiifacegaze": "nas.gaze.datasets.mpiifacegaze",
    "ethxgaze": "nas.gaze.datasets.ethxgaze",
    "gazecapture": "nas.gaze.datasets.gazecapture",
    "synthetic_face": "nas.gaze.datasets.synthetic_face",
    "synthetic_pog": "nas.gaze.datasets.synthetic_pog",
    "cache": "nas.gaze.datasets.cache",
}
_SOURCES: dict[str, Source] = {}

__all__ = ["Source", "register_source", "available_sources", "get_source", "open_dataset"]


@runtime_checkable
class Source(Protocol):
    """What a source module registers.

    name: registry key; task: "gaze3d" / "pog2d" (None where the data say, e.g. a cache);
    needs_path: whether `open` takes a folder; options: accepted options and defaults
    (unknown ones are refused with "did you mean"); open: read the index (not the images).
    """

    name: str
    task: str | None
    needs_path: bool
    options: Mapping[str, Any]

    def open(self, path: Path | None, opts: dict[str, Any], log: Log) -> GazeDataset: ...


S = TypeVar("S")


def register_source(cls: S) -> S:
    """Class decorator: register an instance of `cls` under `cls.name`."""
    obj = cls() if isinstance(cls, type) else cls
    if not isinstance(obj, Source):
        raise TypeError(f"{cls!r} lacks name / task / needs_path / options / open")
    _SOURCES[obj.name] = obj
    return cls


def available_sources() -> list[str]:
    """Every source name a config may give (built-in and registered)."""
    return sorted(set(_BUILTIN) | set(_SOURCES))


def get_source(name: str, source: str | None = None, field: str = "data.source") -> Source:
    """The registered source `name`, importing a built-in one on first use."""
    if name not in _SOURCES and isinstance(name, str) and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _SOURCES:
        names = available_sources()
        near = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise UserError(f"unknown data source {excerpt(name)}; {hint}expected one of "
                        f"{', '.join(names)}", source=source, field=field)
    return _SOURCES[name]


def _quiet(_msg: str) -> None:
    pass


def open_dataset(name: str, path: str | Path | None = None, *, log: Log | None = None,
                 **opts: Any) -> GazeDataset:
    """Open dataset `name` at `path` with reader options `opts` (see each source's
    `options`). Reads the index and labels; images stay on disk until indexed."""
    src = get_source(name)
    where = str(path) if path is not None else None
    check_keys(opts, src.options, source=where or f"{name} options")
    merged = {**src.options, **opts}
    if src.needs_path:
        if path is None or not str(path).strip():
            raise UserError(f"expected the folder of the {name} dataset", field="data.path")
        p = Path(path).expanduser()
        if not p.exists():
            raise UserError(f"not found; expected the folder of the {name} dataset",
                            source=str(p), field="data.path")
    else:
        p = None if path is None else Path(path).expanduser()
    return src.open(p, merged, log or _quiet)
