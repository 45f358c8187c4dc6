"""User-facing errors: one line naming the file and field, exit code 2 from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class UserError(Exception):
    """A mistake in what the user handed us (file, field, value); shown without traceback."""

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(field)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


def read_user_yaml(path: str | Path, expected: str) -> Any:
    """Parse a YAML file the user handed us (safe_load); a missing file or a syntax error
    becomes a one-line UserError naming the file (and the line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found (expected {expected})", source=str(path))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"malformed YAML{where}: {getattr(exc, 'problem', exc)}",
                        source=str(path)) from None
