"""Checks for reader options: a wrong type or value is a one-line error naming the option."""

from __future__ import annotations

from typing import Sequence

from nas.errors import UserError, excerpt


def opt_bool(opts: dict, key: str, source: str, allow_none: bool = False) -> bool | None:
    v = opts[key]
    if isinstance(v, bool) or (allow_none and v is None):
        return v
    raise UserError(f"expected true or false{' (or null: automatic)' if allow_none else ''}, "
                    f"got {excerpt(v)}", source=source, field=key)


def opt_choice(opts: dict, key: str, choices: Sequence[str], source: str) -> str:
    v = opts[key]
    if v not in choices:
        raise UserError(f"expected one of {', '.join(map(repr, choices))}, got {excerpt(v)}",
                        source=source, field=key)
    return v


def opt_size(opts: dict, key: str, source: str, allow_none: bool = True
             ) -> tuple[int, int] | None:
    """An image size: N (square), [H, W], or None (keep the stored size)."""
    v = opts[key]
    if v is None and allow_none:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in v)
            and all(4 <= s <= 4096 for s in v)):
        return int(v[0]), int(v[1])
    raise UserError(f"expected a size in pixels (an integer 4..4096 or [height, width])"
                    f"{' or null' if allow_none else ''}, got {excerpt(v)}", source=source,
                    field=key)


def opt_fraction(opts: dict, key: str, source: str) -> float:
    v = opts[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise UserError(f"expected a fraction in [0, 1], got {excerpt(v)}", source=source,
                        field=key)
    return float(v)
