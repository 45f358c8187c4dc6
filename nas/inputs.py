"""The named inputs a search space declares (`input.inputs`, space format version 2).

A single-input space (an eye patch, a face crop) needs none of this: its one input is
`input`, at the searched resolution. A multi-input task (pog2d: face, both eyes and a face
grid) names its inputs; each image input runs its branch's copy of the searched backbone
at its own resolution, paired by index with the searched resolution gene, so one gene
scales every branch. No torch here: `nas.space` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas.errors import UserError, check_keys, excerpt
from nas.gaze.tasks import InputSpec, Layout, Task

Resolution = tuple[int, int]


@dataclass(frozen=True)
class SpaceInput:
    """One input of a space: its layout spec plus the space's sizes for it.

    resolutions: image inputs, one per entry of `input.resolutions` (same index = same gene
    value); size: grid side / vector length."""

    name: str
    kind: str
    branch: str
    resolutions: tuple[Resolution, ...] = ()
    size: int = 0

    def resolution_at(self, gene: int) -> Resolution:
        return self.resolutions[gene]


def single_input(resolutions: tuple[Resolution, ...]) -> tuple[SpaceInput, ...]:
    """The inputs of a classic space: one image, `input`, at the searched resolution."""
    return (SpaceInput("input", "image", "main", tuple(resolutions)),)


def _resolutions(value: Any, n: int, source: str, fld: str) -> tuple[Resolution, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise UserError(f"expected a list of {n} [height, width] pairs (one per entry of "
                        f"input.resolutions, same order), got {excerpt(value)}",
                        source=source, field=fld)
    out = []
    for i, r in enumerate(value):
        if (not isinstance(r, list) or len(r) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) and 8 <= x <= 1024 for x in r)):
            raise UserError(f"expected [height, width] integers in [8, 1024], got {excerpt(r)}",
                            source=source, field=f"{fld}[{i}]")
        out.append((r[0], r[1]))
    return tuple(out)


def _size(value: Any, spec: InputSpec, source: str, fld: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise UserError(f"expected an integer in [1, 256] ({spec.kind} size), got "
                        f"{excerpt(value)}", source=source, field=fld)
    if spec.kind == "vector" and value != spec.size:
        raise UserError(f"{spec.name} has {spec.size} values, got {value}", source=source,
                        field=fld)
    return value


def parse_inputs(raw: Any, task: Task, resolutions: tuple[Resolution, ...], version: int,
                 source: str) -> tuple[Layout, tuple[SpaceInput, ...]]:
    """The layout and inputs of a space from its `input.inputs` mapping (None: the task's
    default layout, which must then be single-input). Every error is one line naming the
    field."""
    if raw is None:
        layout = task.layouts[0]
        if not layout.single:
            raise UserError(f"task {task.name} takes several inputs; declare them under "
                            f"input.inputs ({', '.join(layout.names)}; space version 2)",
                            source=source, field="task")
        return layout, single_input(resolutions)
    if version < 2:
        raise UserError("input.inputs needs space format version 2 (set `version: 2`)",
                        source=source, field="version")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"expected a mapping of input names to their settings, got "
                        f"{excerpt(raw)}", source=source, field="input.inputs")
    layout = task.layout_of(tuple(raw), source)
    out = []
    for spec in layout.inputs:
        fld = f"input.inputs.{spec.name}"
        opts = raw[spec.name] if raw[spec.name] is not None else {}
        if not isinstance(opts, dict):
            raise UserError(f"expected a mapping (may be empty: {{}}), got {excerpt(opts)}",
                            source=source, field=fld)
        if spec.kind == "image":
            check_keys(opts, ("resolutions",), source, fld + ".")
            res = (_resolutions(opts["resolutions"], len(resolutions), source,
                                fld + ".resolutions")
                   if "resolutions" in opts else tuple(resolutions))
            out.append(SpaceInput(spec.name, spec.kind, spec.branch, res))
        else:
            check_keys(opts, ("size",), source, fld + ".")
            size = _size(opts.get("size", spec.size), spec, source, fld + ".size")
            out.append(SpaceInput(spec.name, spec.kind, spec.branch, size=size))
    return layout, tuple(out)


def inputs_hash_part(layout: Layout, inputs: tuple[SpaceInput, ...]) -> dict | None:
    """What the inputs add to the space hash (None for a classic space: hashes unchanged)."""
    if layout.single:
        return None
    return {"layout": layout.name,
            "inputs": [[i.name, i.kind, i.branch, [list(r) for r in i.resolutions], i.size]
                       for i in inputs]}
