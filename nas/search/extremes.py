"""The fastest subnet on a device, found on its latency table.

Strategies seed their first asks with the space's largest and smallest archs, where
"smallest" is by MACs. On a real device the fastest subnet can be another one entirely:
on this machine's PyTorch-eager table the fewest-MACs arch (ShuffleNet units, many small
ops) takes 1.17 ms, while a net of residual blocks at the minimum depth takes 0.50 ms. A
front that never measures the device's fast end leaves most of the low-latency
hypervolume unclaimed, so every search is seeded with each device's fastest arch.
"""

from __future__ import annotations

from typing import Callable

from nas.space import Arch, SearchSpace


def fastest_arch(space: SearchSpace, predict: Callable[[Arch], float]) -> Arch:
    """The arch of lowest predicted latency: coordinate descent over the genes (each gene
    in turn set to its fastest choice, until none improves), started from each block
    family's smallest arch; the fastest result wins, ties broken by arch_id so the answer
    does not depend on dict order. A few thousand table lookups: well under a second."""
    best: tuple[float, str, Arch] | None = None
    starts = [space.smallest(f) for f in space.blocks] or [space.smallest()]
    for start in starts:
        arch, lat = _descend(space, predict, start)
        if best is None or (lat, arch.arch_id) < best[:2]:
            best = (lat, arch.arch_id, arch)
    return best[2]


def _descend(space: SearchSpace, predict: Callable[[Arch], float],
             start: Arch) -> tuple[Arch, float]:
    card = space.gene_cardinalities()
    enc, lat = space.encode(start), predict(start)
    improved = True
    while improved:
        improved = False
        for gene, n in card.items():
            for v in range(n):
                if v == enc[gene]:
                    continue
                trial = {**enc, gene: v}
                arch = space.decode(trial)
                t = predict(arch)
                if t < lat - 1e-12:
                    enc, lat, improved = trial, t, True
    return space.decode(enc), lat
