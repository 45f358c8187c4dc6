"""User-facing errors: one line naming the file and field, exit code 2 from the CLI."""

from __future__ import annotations


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
