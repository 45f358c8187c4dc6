"""Experiment config (experiments/*.yaml): one file drives a whole run, validated up front."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import UserError, read_user_yaml
from nas.finetune import FinetuneConfig
from nas.train import SAMPLINGS, SMALLEST, TrainConfig


@dataclass
class DataConfig:
    source: str = "synthetic"
    train: int = 16000
    val: int = 2000
    workers: int = 2


@dataclass
class LatencyConfig:
    lut: str | None = None        # an existing table; None: profile this machine into the run
    device: str | None = None     # device name for a new table (default: from the CPU model)
    validate_samples: int = 40
    rounds: int = 5
    workers: int = 2


@dataclass
class SearchConfig:
    strategy: str = "evolution"
    evals: int = 160
    batch: int = 8
    budgets_ms: list = field(default_factory=list)
    recal_images: int = 512
    val_images: int = 2000
    threads: int = 2


@dataclass
class BaselinesConfig:
    enabled: bool = False         # the seed study's hand-designed nets (minutes of training)
    lr_sweep: bool = True         # plus the seed's learning-rate sweep on the Ghost net
    workers: int = 2              # training processes (one torch thread each)


@dataclass
class ExperimentConfig:
    name: str
    seed: int
    space: Path
    data: DataConfig
    train: TrainConfig
    latency: LatencyConfig
    search: SearchConfig
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    source: str = "<dict>"
    raw: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "space": str(self.space),
                "data": asdict(self.data), "train": asdict(self.train),
                "latency": asdict(self.latency), "search": asdict(self.search),
                "finetune": asdict(self.finetune), "baselines": asdict(self.baselines)}


def _section(cls: type, d: Any, name: str, source: str) -> Any:
    if d is None:
        return cls()
    if not isinstance(d, dict):
        raise UserError("expected a mapping", source=source, field=name)
    defaults = cls()
    out = {}
    for k, v in d.items():
        if k not in cls.__dataclass_fields__:
            raise UserError(f"unknown field; expected one of "
                            f"{', '.join(cls.__dataclass_fields__)}", source=source,
                            field=f"{name}.{k}")
        want = getattr(defaults, k)
        ok = True
        if isinstance(want, bool):
            ok = isinstance(v, bool)
        elif isinstance(want, int):
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        elif isinstance(want, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            v = float(v) if ok else v  # `lr: 3` and `lr: 3.0` are one config
        elif isinstance(want, list):
            ok = isinstance(v, list) and all(isinstance(x, (int, float)) and x > 0 for x in v)
        elif want is None:
            ok = v is None or isinstance(v, str)
        elif isinstance(want, str):
            ok = isinstance(v, str)
        if not ok:
            raise UserError(f"expected {type(want).__name__ if want is not None else 'a string'}"
                            f"{' of positive numbers' if isinstance(want, list) else ''}, "
                            f"got {v!r}", source=source, field=f"{name}.{k}")
        out[k] = v
    return cls(**out)


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate an experiment config; relative paths resolve from the config's folder
    first, then from the current directory."""
    path = Path(path)
    d = read_user_yaml(path, "an experiment config YAML")
    src = str(path)
    if not isinstance(d, dict):
        raise UserError("expected a mapping at the top level", source=src)
    known = {"version", "name", "seed", "space", "data", "train", "latency", "search", "finetune",
             "baselines"}
    for k in d:
        if k not in known:
            raise UserError(f"unknown field; expected one of {', '.join(sorted(known))}",
                            source=src, field=k)
    name = d.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise UserError(f"expected a run name without '/', got {name!r}", source=src, field="name")
    seed = d.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"expected a non-negative integer, got {seed!r}", source=src, field="seed")
    if not isinstance(d.get("space"), str):
        raise UserError("expected a path to a search-space YAML", source=src, field="space")
    space = resolve_path(d["space"], path, "space")
    data = _section(DataConfig, d.get("data"), "data", src)
    if data.source != "synthetic":
        raise UserError(f"unknown data source {data.source!r}; this version reads 'synthetic'",
                        source=src, field="data.source")
    if data.train < 256 or data.val < 64:
        raise UserError("expected train >= 256 and val >= 64 images", source=src, field="data")
    train = _section(TrainConfig, d.get("train"), "train", src)
    if train.sampling not in SAMPLINGS:
        raise UserError(f"expected one of {', '.join(SAMPLINGS)}, got {train.sampling!r}",
                        source=src, field="train.sampling")
    if train.smallest not in SMALLEST:
        raise UserError(f"expected one of {', '.join(SMALLEST)}, got {train.smallest!r}",
                        source=src, field="train.smallest")
    if train.feature_kd < 0 or not 0 <= train.kd_weight <= 1:
        raise UserError("expected feature_kd >= 0 and kd_weight in [0, 1]", source=src,
                        field="train")
    if train.epochs < 1 or train.batch_size < 2:
        raise UserError("expected epochs >= 1 and batch_size >= 2", source=src, field="train")
    latency = _section(LatencyConfig, d.get("latency"), "latency", src)
    if latency.lut is not None:
        latency.lut = str(resolve_path(latency.lut, path, "latency.lut"))
    search = _section(SearchConfig, d.get("search"), "search", src)
    if search.evals < 1:
        raise UserError("expected evals >= 1", source=src, field="search.evals")
    finetune = _section(FinetuneConfig, d.get("finetune"), "finetune", src)
    if finetune.epochs and (finetune.lr <= 0 or finetune.batch_size < 2
                            or not 0 <= finetune.kd_weight <= 1):
        raise UserError("expected lr > 0, batch_size >= 2 and kd_weight in [0, 1]",
                        source=src, field="finetune")
    baselines = _section(BaselinesConfig, d.get("baselines"), "baselines", src)
    return ExperimentConfig(name, seed, space, data, train, latency, search, finetune,
                            baselines, src, d)


def resolve_path(value: str, config_path: Path, field_name: str) -> Path:
    for base in (config_path.parent, Path.cwd()):
        p = (base / value).resolve()
        if p.exists():
            return p
    raise UserError(f"path {value!r} not found (relative to the config's folder or the "
                    "current directory)", source=str(config_path), field=field_name)
