"""The device's fastest arch on a latency table (no torch)."""

from __future__ import annotations

import itertools

from test_search import SPACE, synthetic

from nas.search.extremes import fastest_arch
from nas.space import SearchSpace

SMALL = SearchSpace.from_dict({  # 8,192 archs: enumerable
    "version": 1, "name": "small", "task": "gaze3d",
    "input": {"channels": 1, "resolutions": [[36, 60], [24, 40]]},
    "stem": {"width": 8, "kernel": 3, "strides": [2], "act": "relu"},
    "stages": [{"widths": [8, 16], "depths": [1, 2], "stride": 2},
               {"widths": [16, 24], "depths": [1, 2], "stride": 2}],
    "blocks": {"shuffle": {"kernels": [3, 5, 7]}, "resblock": {"kernels": [3]}},
    "head": {"width": 16, "act": "relu", "outputs": 2}})


def test_fastest_arch_is_the_true_minimum_on_an_additive_table():
    """Every arch of a small space enumerated: coordinate descent on an additive per-layer
    cost (as a LUT is) finds the global minimum, and not the fewest-MACs arch when the
    table says residual blocks are faster, as this machine's torch table does."""
    def lat(arch):  # resblocks cheap per layer, shuffle units dear: not the MACs order
        res = arch.resolution[0] / 36
        return sum((0.05 if op.family == "resblock" else 0.3 + 0.01 * op.kernel) * w / 8 * res
                   for w, ops in zip(arch.widths, arch.active_ops()) for op in ops)

    card = SMALL.gene_cardinalities()
    best = min((SMALL.decode(dict(zip(card, v))) for v in
                itertools.product(*[range(n) for n in card.values()])), key=lat)
    got = fastest_arch(SMALL, lat)
    assert abs(lat(got) - lat(best)) < 1e-12
    assert lat(got) < lat(SMALL.smallest())


def test_fastest_arch_on_the_synthetic_latency_is_deterministic():
    def f(a):
        return synthetic(a)["latency_ms"]

    assert fastest_arch(SPACE, f) == fastest_arch(SPACE, f)
    assert f(fastest_arch(SPACE, f)) <= f(SPACE.smallest())
