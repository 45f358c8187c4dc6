"""LUT keys: layer signatures that depend on shapes and op, never on position.

So one table serves every arch of a space, and of other spaces that reuse the same layers.
A searched layer's key is `family|cin=..|cout=..|s=..|hw=HxW|` followed by the fields its
block-family descriptor renders (`nas.blocks`), e.g.
`mbconv|cin=24|cout=40|s=2|hw=18x30|k=5|e=4|se=1|act=hswish`.

A multi-input net (`nas.models.FusionNet`) is priced part by part as it runs: every image
input runs its branch's stem, layers and feature head (`feat|...`) at its own resolution,
so the eye layers of an iTracker net appear twice in `arch_keys` (left and right eye) and
the table's sum counts them twice; each grid / vector input adds its encoder (`enc|...`)
and the net ends in one `fusion|...` key.
"""

from __future__ import annotations

from typing import Any

from nas.blocks import get_family
from nas.space import Arch, LayerOp, LayerShape, SearchSpace, conv_out


def layer_key(op: LayerOp, shape: LayerShape) -> str:
    """LUT key of one searched layer."""
    return "|".join([op.family, f"cin={shape.cin}", f"cout={shape.cout}", f"s={shape.stride}",
                     f"hw={shape.hw[0]}x{shape.hw[1]}"] + get_family(op.family).key_fields(op))


def stem_key(space: SearchSpace, resolution: tuple[int, int], stride: int) -> str:
    return (f"stem|cin={space.in_channels}|cout={space.stem_width}|s={stride}"
            f"|hw={resolution[0]}x{resolution[1]}|k={space.stem_kernel}|act={space.stem_act}")


def head_key(space: SearchSpace, cin: int, hw: tuple[int, int]) -> str:
    return (f"head|cin={cin}|hw={hw[0]}x{hw[1]}|width={space.head_width}"
            f"|out={space.outputs}|act={space.head_act}")


def feat_key(space: SearchSpace, cin: int, hw: tuple[int, int]) -> str:
    """A branch's end in a multi-input net: 1x1 conv to the feature width + global pool."""
    return f"feat|cin={cin}|hw={hw[0]}x{hw[1]}|width={space.head_width}|act={space.head_act}"


def encoder_key(space: SearchSpace, n_in: int) -> str:
    """The two-layer MLP of a grid (n_in = side^2) or vector input."""
    return f"enc|in={n_in}|width={space.head_width}|act={space.head_act}"


def fusion_key(space: SearchSpace) -> str:
    n_in = len(space.inputs) * space.head_width
    return (f"fusion|in={n_in}|width={space.head_fusion}|out={space.outputs}"
            f"|act={space.head_act}")


def encoder_inputs(space: SearchSpace) -> list[int]:
    """Input sizes of the space's grid / vector encoders, in input order."""
    return [i.size * i.size if i.kind == "grid" else i.size
            for i in space.inputs if i.kind != "image"]


def _at(arch: Arch, resolution: tuple[int, int]) -> Arch:
    return Arch(tuple(resolution), arch.stem_stride, arch.depths, arch.widths, arch.ops)


def _branch_keys(space: SearchSpace, arch: Arch) -> list[str]:
    keys = [stem_key(space, arch.resolution, arch.stem_stride)]
    keys += [layer_key(op, shape) for op, shape in space.layer_shapes(arch)]
    return keys


def arch_keys(space: SearchSpace, arch: Arch) -> list[str]:
    """LUT keys of every part of `arch` as it runs: stem, searched layers, head; for a
    multi-input net, each image input's branch at its size, the encoders, the fusion head
    (a part run twice is listed twice)."""
    if space.layout.single:
        return _branch_keys(space, arch) + [head_key(space, *space.final_shape(arch))]
    keys: list[str] = []
    for res in space.input_sizes(arch.resolution).values():
        a = _at(arch, res)
        keys += _branch_keys(space, a) + [feat_key(space, *space.final_shape(a))]
    keys += [encoder_key(space, n) for n in encoder_inputs(space)]
    keys.append(fusion_key(space))
    return keys


def all_keys(space: SearchSpace) -> dict[str, tuple[str, Any]]:
    """Every LUT key the space can produce -> (kind, spec) to build it from
    (`nas.latency.build.module_for_key`)."""
    if space.layout.single:
        return _resolution_keys(space, space.resolutions, "head")
    sizes = sorted({r for i in space.inputs for r in i.resolutions})
    keys = _resolution_keys(space, sizes, "feat")
    for n in encoder_inputs(space):
        keys[encoder_key(space, n)] = ("enc", n)
    keys[fusion_key(space)] = ("fusion", None)
    return keys


def _resolution_keys(space: SearchSpace, resolutions, end: str) -> dict[str, tuple[str, Any]]:
    """Stem, layer and end (`head` or `feat`) keys of every arch at these input sizes."""
    opts = space.layer_options()
    keys: dict[str, tuple[str, Any]] = {}
    end_key = head_key if end == "head" else feat_key
    for res in resolutions:
        for t in space.stem_strides:
            keys[stem_key(space, res, t)] = ("stem", (res, t))
            h, w = conv_out(res[0], t), conv_out(res[1], t)
            cins: tuple[int, ...] = (space.stem_width,)
            for st in space.stages:
                for j in range(max(st.depths)):
                    s = st.stride if j == 0 else 1
                    for cin in cins:
                        for cout in st.widths:
                            if j > 0 and cin != cout:
                                continue
                            shape = LayerShape(cin, cout, s, (h, w))
                            for op in opts:
                                keys[layer_key(op, shape)] = ("layer", (op, shape))
                    h, w = conv_out(h, s), conv_out(w, s)
                    cins = st.widths
            for c in space.stages[-1].widths:
                keys[end_key(space, c, (h, w))] = (end, (c, (h, w)))
    return keys
