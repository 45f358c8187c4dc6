"""One interface for "how long does this subnet take on that device": `predict(arch) -> ms`.

A measured table, an imported (bundle) table, an adapted table and a plain MACs model all
stand behind it, so a consumer (a search objective, a report, a budget check) needs no
knowledge of where the number comes from:

    model = latency_model(LatencyTable.load("latency_tables/phone.yaml"), space)
    ms = model.predict(arch)

Using a model never checks which machine runs it: a phone's table predicts the phone's
latency on any machine. Only *measuring* (profiling, validating, adapting) checks the
device (`nas.latency.backends.check_measuring_into`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from nas.latency.table import LatencyTable
from nas.space import Arch, SearchSpace


@runtime_checkable
class LatencyModel(Protocol):
    """Anything that predicts a subnet's latency in milliseconds on one device."""

    def predict(self, arch: Arch) -> float: ...


@dataclass
class TableModel:
    """A latency table (measured, imported or adapted) bound to a space."""

    table: LatencyTable
    space: SearchSpace

    def __post_init__(self) -> None:
        self.table.check_space(self.space)

    @property
    def device(self) -> str:
        return self.table.device

    def predict(self, arch: Arch) -> float:
        return self.table.predict(self.space, arch)


@dataclass
class MacsModel:
    """`ms = a * MMAC + c`: a FLOPs proxy, fitted on measured subnets (`fit`) or given."""

    space: SearchSpace
    ms_per_mmac: float
    c: float = 0.0
    device: str = "macs-proxy"
    _cache: dict[str, float] = field(default_factory=dict, repr=False)

    def macs(self, arch: Arch) -> float:
        if arch.arch_id not in self._cache:
            from nas.models import build_net, count_macs, example_input

            net = build_net(self.space, arch)
            self._cache[arch.arch_id] = float(count_macs(net, example_input(self.space, arch)))
        return self._cache[arch.arch_id]

    def predict(self, arch: Arch) -> float:
        return max(self.ms_per_mmac * self.macs(arch) / 1e6 + self.c, 1e-9)

    @classmethod
    def fit(cls, space: SearchSpace, archs: Sequence[Arch], measured_ms: Sequence[float],
            device: str = "macs-proxy") -> "MacsModel":
        m = cls(space, 1.0, 0.0, device)
        x = np.array([m.macs(a) / 1e6 for a in archs])
        y = np.asarray(measured_ms, dtype=np.float64)
        X = np.column_stack([x, np.ones_like(x)])
        (a, c), *_ = np.linalg.lstsq(X, y, rcond=None)
        if a <= 0 or c < 0:
            a, c = float(x @ y / (x @ x)), 0.0
        m.ms_per_mmac, m.c = float(a), float(c)
        return m


def latency_model(source: Any, space: SearchSpace) -> LatencyModel:
    """`source` as a `LatencyModel`: a table (bound to `space`), or already a model."""
    if isinstance(source, LatencyTable):
        return TableModel(source, space)
    if isinstance(source, LatencyModel):
        return source
    raise TypeError(f"cannot predict latency with a {type(source).__name__}")
