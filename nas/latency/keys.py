"""LUT keys: layer signatures that depend on shapes and op, never on position.

So one table serves every arch of a space, and of other spaces that reuse the same layers.
A searched layer's key is `family|cin=..|cout=..|s=..|hw=HxW|` followed by the fields its
block-family descriptor renders (`nas.blocks`), e.g.
`mbconv|cin=24|cout=40|s=2|hw=18x30|k=5|e=4|se=1|act=hswish`.
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


def arch_keys(space: SearchSpace, arch: Arch) -> list[str]:
    """LUT keys of every part of `arch`: stem, searched layers, head."""
    keys = [stem_key(space, arch.resolution, arch.stem_stride)]
    keys += [layer_key(op, shape) for op, shape in space.layer_shapes(arch)]
    keys.append(head_key(space, *space.final_shape(arch)))
    return keys


def all_keys(space: SearchSpace) -> dict[str, tuple[str, Any]]:
    """Every LUT key the space can produce -> (kind, spec) to build it from
    (`nas.latency.build.module_for_key`)."""
    opts = space.layer_options()
    keys: dict[str, tuple[str, Any]] = {}
    for res in space.resolutions:
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
                keys[head_key(space, c, (h, w))] = ("head", (c, (h, w)))
    return keys
