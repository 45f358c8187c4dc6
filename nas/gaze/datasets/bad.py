"""Bad samples in a large set: a handful is skipped with a warning that counts and names
them, more than `max_bad_fraction` is an error. Never a silent drop."""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

from nas.errors import UserError

DEFAULT_MAX_BAD_FRACTION = 0.01
SHOWN = 10  # bad samples named in a message


class BadSampleError(UserError):
    """One unreadable sample (a corrupt JPEG, an unreadable HDF5 chunk). Readers raise it
    for the sample alone so that `prepare` can skip it and count it."""


def tolerate(bad: Sequence[tuple[str, str]], total: int, max_fraction: float, what: str,
             log: Callable[[str], None] | None = None) -> None:
    """`bad` = [(sample name, reason)] out of `total` samples. Above `max_fraction`: a
    UserError naming the first; else, if any: a warning with the count and the names."""
    if not bad:
        return
    names = ", ".join(name for name, _ in bad[:SHOWN])
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    first_name, first_reason = bad[0]
    if len(bad) > max_fraction * max(total, 1):
        raise UserError(f"{len(bad)} of {total} {what} are unreadable, more than "
                        f"max_bad_fraction={max_fraction:g} allows (first: {first_reason}); "
                        f"fix or remove them, or raise max_bad_fraction",
                        source=first_name, field=what)
    msg = (f"skipped {len(bad)} unreadable {what} of {total} ({first_reason}): "
           f"{names}{more}")
    warnings.warn(msg, stacklevel=3)
    if log is not None:
        log(f"warning: {msg}")
