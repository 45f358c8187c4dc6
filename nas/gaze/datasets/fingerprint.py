"""A content-derived name for what a reader opened: the files it read (relative path, size,
mtime) and the options it was given. Same files + same options -> same string, so caches and
run manifests can tell when the data changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable


def stat_line(path: Path, root: Path) -> str:
    st = path.stat()
    return f"{path.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}"


def fingerprint(name: str, root: Path, files: Iterable[Path], opts: dict[str, Any],
                extra: Iterable[str] = ()) -> str:
    """`<name>-<16 hex>` from the sorted (file, size, mtime) lines, `extra` lines (stats
    already taken) and the options."""
    h = hashlib.sha256(f"{name}\n".encode())
    lines = sorted([stat_line(Path(f), root) for f in files] + list(extra))
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    h.update(json.dumps(opts, sort_keys=True, default=str).encode())
    return f"{name}-{h.hexdigest()[:16]}"
