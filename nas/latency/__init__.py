"""Latency lookup tables: profile a device once, predict any subnet's latency from its parts.

`LatencyTable` (the LUT file) is imported eagerly and is light; `profile_space` and
`validate_table` need torch and onnxruntime, so they load on first use.
"""

from __future__ import annotations

from typing import Any

from nas.latency.table import LatencyTable

__all__ = ["LatencyTable", "profile_space", "validate_table"]


def __getattr__(name: str) -> Any:
    if name == "profile_space":
        from nas.latency.profile import profile_space

        return profile_space
    if name == "validate_table":
        from nas.latency.validate import validate_table

        return validate_table
    raise AttributeError(f"module 'nas.latency' has no attribute {name!r}")
