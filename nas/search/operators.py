"""Genetic operators over the fixed-length genotype: mutation and uniform crossover.

They live with the strategies that use them, not in `SearchSpace`: the space only says
which genes exist and what values they take; how to vary them is a search decision.
"""

from __future__ import annotations

import numpy as np

from nas.space import Arch, LayerOp, SearchSpace


def mutate(space: SearchSpace, arch: Arch, rng: np.random.Generator,
           prob: float = 0.15) -> Arch:
    """Resample each gene with probability `prob`; an op gene either tweaks one attribute
    within its family or switches family. At least one gene changes."""
    opts = space.layer_options()
    for _ in range(20):
        res, stem = arch.resolution, arch.stem_stride
        if rng.random() < prob:
            res = space.resolutions[rng.integers(len(space.resolutions))]
        if rng.random() < prob:
            stem = space.stem_strides[rng.integers(len(space.stem_strides))]
        depths, widths, ops = list(arch.depths), list(arch.widths), []
        for i, s in enumerate(space.stages):
            if rng.random() < prob:
                depths[i] = int(s.depths[rng.integers(len(s.depths))])
            if rng.random() < prob:
                widths[i] = int(s.widths[rng.integers(len(s.widths))])
            st = []
            for op in arch.ops[i]:
                if rng.random() < prob:
                    op = mutate_op(op, opts, rng)
                st.append(op)
            ops.append(tuple(st))
        child = Arch(tuple(res), int(stem), tuple(depths), tuple(widths), tuple(ops))
        if child != arch:
            return child
    return space.sample(rng)


def mutate_op(op: LayerOp, opts: list[LayerOp], rng: np.random.Generator) -> LayerOp:
    """Mostly a neighbour in the same family (one attribute differs), else any option."""
    same = [o for o in opts if o.family == op.family and o != op
            and sum([o.kernel != op.kernel, o.expansion != op.expansion,
                     o.se != op.se, o.act != op.act]) == 1]
    if same and rng.random() < 0.7:
        return same[rng.integers(len(same))]
    return opts[rng.integers(len(opts))]


def crossover(a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    """Uniform crossover over the fixed-length genes (stage-level for depth/width); two
    archs of one space always yield an arch of that space."""
    pick = lambda x, y: x if rng.random() < 0.5 else y  # noqa: E731
    ops = tuple(tuple(pick(x, y) for x, y in zip(sa, sb)) for sa, sb in zip(a.ops, b.ops))
    return Arch(pick(a.resolution, b.resolution), pick(a.stem_stride, b.stem_stride),
                tuple(pick(x, y) for x, y in zip(a.depths, b.depths)),
                tuple(pick(x, y) for x, y in zip(a.widths, b.widths)), ops)
