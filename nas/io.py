"""Atomic artifact writes, content hashes and provenance shared by every stage."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from nas.errors import UserError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write via `write(tmp_path)` to a temp file in the same folder, fsync, then rename
    over `path`: a reader never sees a torn artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are ordinary files
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_yaml(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, width=120))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch_dict(path: str | Path, what: str = "checkpoint", fmt: str | None = None,
                    required: tuple[str, ...] = ()) -> dict:
    """A torch file of ours (weights_only): a dict, of format `fmt`, holding `required`.
    A torn, corrupt or foreign file (even a valid torch file of something else) is a
    one-line UserError naming the file."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        raise UserError(f"corrupt or unreadable {what} ({type(exc).__name__}); delete it to "
                        "start over", source=str(path)) from None
    if not isinstance(obj, dict) or (fmt is not None and obj.get("format") != fmt):
        raise UserError(f"not a gaze-nas {what}"
                        + (f" (expected format {fmt})" if fmt else " (expected a mapping)"),
                        source=str(path), field="format" if fmt else None)
    missing = [k for k in required if k not in obj]
    if missing:
        raise UserError(f"not a complete gaze-nas {what}: {', '.join(missing)} missing",
                        source=str(path), field=missing[0])
    return obj


def iter_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Rows of a JSON-lines artifact of ours. A line that is not JSON (torn by an
    interruption) is skipped; a JSON line that is not an object with the `required` string
    fields is a UserError naming file and line (someone else wrote it)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror})", source=str(path)) from None
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in required):
            raise UserError(f"expected a JSON object with {', '.join(required) or 'fields'} "
                            f"(strings), got {line[:60]!r}; delete the line or the file",
                            source=str(path), field=f"line {i + 1}")
        yield row


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line; if an interruption tore the last line, end it first, so the
    torn line never swallows this row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as fh:
        fh.seek(0, os.SEEK_END)
        torn = False
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
        fh.write((("\n" if torn else "") + json.dumps(row) + "\n").encode())


def file_hash(path: str | Path, n: int = 16) -> str:
    """sha256 of a file's bytes, shortened: the content hash recorded in manifests."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def json_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("gaze-nas", "torch", "numpy", "onnxruntime", "onnx", "optuna", "pyyaml"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def git_sha(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
