"""Experiment config (experiments/*.yaml): one file drives a whole run, validated up front."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from nas.distributed import EXECUTORS, RayConfig
from nas.errors import UserError, check_keys, excerpt, find_non_finite, read_user_yaml, safe_name
from nas.finetune import FinetuneConfig
from nas.latency.fit import MIN_SAMPLES_FULL_FIT
from nas.space import LAYER_POOLS
from nas.train import DEVICES, SAMPLINGS, SMALLEST, TrainConfig


@dataclass
class DataConfig:
    source: str = "synthetic"     # or mpiigaze, mpiifacegaze, ethxgaze, cache (`gaze-nas data sources`)
    path: str | None = None       # the dataset's folder (real sources), relative to the config
    options: dict = field(default_factory=dict)  # reader options (`gaze-nas data info NAME`)
    val_subjects: list = field(default_factory=list)  # held out for validation, by subject
    train: int = 16000            # synthetic: images rendered; a dataset: at most this many (0: all)
    val: int = 2000
    workers: int = 2
    in_memory_mb: int = 4096      # a dataset's images up to this size are read into memory once


@dataclass
class LatencyConfig:
    lut: str | None = None        # an existing table; None: profile this machine into the run
    luts: list = field(default_factory=list)  # several tables: one search over their devices
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
    head_refit_images: int = 0     # > 0: refit each subnet's linear head on this many images
    options: dict = field(default_factory=dict)  # passed to the strategy (e.g. population)
    storage: str | None = None     # optuna-*: study storage URL (default: SQLite in the search dir)
    val_images: int = 2000
    threads: int = 2
    executor: str = "sequential"  # sequential | ray: each batch on Ray workers (nas.distributed)
    workers: int = 2              # Ray evaluation workers with executor: ray (1 CPU each)
    screen: int = 0               # > 0: ask this many x candidates, measure those an error
                                  # predictor expects to improve the front (nas.search.screening)
    fill_gaps: float = 2.0        # > 1: while the front has a latency step wider than this
                                  # ratio, spend up to `fill_share` of the evaluations on archs
                                  # the table puts inside it (nas.search.gapfill); 0: off
    fill_share: float = 0.25


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
    ray: RayConfig = field(default_factory=RayConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "space": str(self.space),
                "data": asdict(self.data), "train": asdict(self.train),
                "latency": {k: v for k, v in asdict(self.latency).items()
                            if v or k != "luts"},  # one table: as before `luts` existed
                "search": asdict(self.search),
                "finetune": asdict(self.finetune), "baselines": asdict(self.baselines),
                "ray": asdict(self.ray)}


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: [lo, hi] (`lo_open`: lo itself excluded), plus `also`."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    also: tuple = ()

    def ok(self, x: float) -> bool:
        if x in self.also:
            return True
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or x <= self.hi

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None and not self.lo_open:
            text = f"in [{self.lo}, {self.hi}]"
        else:
            text = " and ".join(
                ([f"{'>' if self.lo_open else '>='} {self.lo}"] if self.lo is not None else [])
                + ([f"<= {self.hi}"] if self.hi is not None else [])) or "any value"
        return " or ".join([*map(str, self.also), text])


MAX_IMAGES = 500_000
SEED = Range(0, 2**32 - 1)
# Every number a config (or the CLI flag that sets the same thing) may hold: one place.
LIMITS: dict[str, Range] = {
    "seed": SEED,
    "data.train": Range(256, MAX_IMAGES, also=(0,)), "data.val": Range(64, MAX_IMAGES // 5, also=(0,)),
    "data.workers": Range(1, 64), "data.in_memory_mb": Range(0, 10**7),
    "train.epochs": Range(1, 10_000), "train.batch_size": Range(2, MAX_IMAGES),
    "train.lr": Range(0, 10, lo_open=True), "train.weight_decay": Range(0, 10),
    "train.warmup_steps": Range(0, 10**7), "train.random_subnets": Range(0, 64),
    "train.random_subnet_images": Range(2, MAX_IMAGES, also=(0,)),
    "train.kd_weight": Range(0, 1), "train.feature_kd": Range(0, 100),
    "train.threads": Range(1, 256), "train.checkpoint_every_s": Range(0, None, lo_open=True),
    "train.eval_images": Range(1, MAX_IMAGES // 5),
    "latency.validate_samples": Range(MIN_SAMPLES_FULL_FIT, 10_000, also=(0,)),
    "latency.rounds": Range(1, 1000), "latency.workers": Range(1, 64),
    "search.evals": Range(1, 10**6), "search.batch": Range(1, 4096),
    "search.budgets_ms": Range(0, None, lo_open=True), "search.recal_images": Range(1, MAX_IMAGES),
    "search.head_refit_images": Range(64, MAX_IMAGES, also=(0,)),
    "search.val_images": Range(1, MAX_IMAGES), "search.threads": Range(1, 256),
    "search.workers": Range(1, 4096), "search.screen": Range(0, 1024),
    "search.fill_gaps": Range(1, 1000, lo_open=True, also=(0,)),
    "search.fill_share": Range(0, 1, lo_open=True),
    "finetune.epochs": Range(0, 10_000), "finetune.lr": Range(0, 10, lo_open=True),
    "finetune.batch_size": Range(2, MAX_IMAGES), "finetune.weight_decay": Range(0, 10),
    "finetune.warmup_steps": Range(0, 10**7), "finetune.kd_weight": Range(0, 1),
    "finetune.threads": Range(1, 256), "baselines.workers": Range(1, 64),
    # CLI flags whose meaning differs from their config field's
    "lut validate --samples": Range(MIN_SAMPLES_FULL_FIT, 10_000),  # 0 does not skip there
    "finetune --epochs": Range(1, 10_000),                          # 0 would fine-tune nothing
}
_SECTIONS = {"data": DataConfig, "train": TrainConfig, "latency": LatencyConfig,
             "search": SearchConfig, "finetune": FinetuneConfig, "baselines": BaselinesConfig,
             "ray": RayConfig}
_TOP = ("version", "name", "seed", "space", *_SECTIONS)
CONFIG_KEYS = _TOP  # the top-level keys of an experiment config


def _sources() -> list[str]:
    from nas.gaze.datasets import available_sources

    return available_sources()


def _strategies() -> list[str]:
    from nas.search.strategy import known_strategies

    return known_strategies()


_NAME_LISTS = {"data.val_subjects"}  # lists of ids, not numbers
_PATH_LISTS = {"latency.luts"}       # lists of file paths
_PER_DEVICE = {"search.budgets_ms"}  # a list, or a mapping device -> list (nas.multidevice)
_CHOICES: dict[str, Callable[[], Any]] = {
    "data.source": _sources, "train.sampling": lambda: SAMPLINGS,
    "train.smallest": lambda: SMALLEST, "train.device": lambda: DEVICES,
    "train.layer_pool": lambda: LAYER_POOLS,
    "search.strategy": _strategies, "search.executor": lambda: EXECUTORS}


def _number_ok(v: Any, kind: type) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
        return False
    return kind is int or math.isfinite(v)


def field_error(key: str, v: Any, kind: type = int) -> str | None:
    """None if `v` is a valid value of the number `key` ("section.field"), else what was
    expected: the one rule the config and its CLI flags share. Bools are not numbers."""
    rng = LIMITS.get(key, Range())
    if _number_ok(v, kind) and rng.ok(v):
        return None
    return f"expected {'an integer' if kind is int else 'a finite number'} {rng}, got {excerpt(v)}"


def _fail(msg: str, src: str, fld: str | None = None) -> None:
    raise UserError(msg, source=src, field=fld)


def _choice(v: Any, key: str, src: str) -> None:
    if key == "search.strategy" and isinstance(v, str) and ":" in v:
        return  # module:attr, an external strategy: checked by check_inputs
    options = list(_CHOICES[key]())
    if v not in options:
        near = difflib.get_close_matches(str(v), options, n=1)
        _fail(f"unknown value {excerpt(v)}; {f'did you mean {near[0]!r}? ' if near else ''}"
              f"expected one of {', '.join(options)}", src, key)


def _section(cls: type, d: Any, name: str, src: str) -> Any:
    if d is None:
        return cls()
    if not isinstance(d, dict):
        _fail(f"expected a mapping, got {excerpt(d)}", src, name)
    check_keys(d, cls.__dataclass_fields__, src, f"{name}.")
    defaults, out = cls(), {}
    for k, v in d.items():
        key, want = f"{name}.{k}", getattr(defaults, k)
        if isinstance(want, bool):
            if not isinstance(v, bool):
                _fail(f"expected true or false, got {excerpt(v)}", src, key)
        elif isinstance(want, (int, float)):
            err = field_error(key, v, type(want))
            if err:
                _fail(err, src, key)
            v = float(v) if isinstance(want, float) else v  # `lr: 3` and `lr: 3.0` are one
        elif isinstance(want, dict):
            if not isinstance(v, dict) or len(v) > 50 or not all(
                    isinstance(x, str) and (y is None or isinstance(y, (bool, int, float, str)))
                    for x, y in v.items()):
                _fail(f"expected a mapping of option names to plain values, got {excerpt(v)}",
                      src, key)
        elif key in _PER_DEVICE and isinstance(v, dict):
            v = _per_device(v, src, key)
        elif isinstance(want, list):
            if not isinstance(v, list) or len(v) > 100:
                _fail(f"expected a list (at most 100), got {excerpt(v)}", src, key)
            if key in _NAME_LISTS:
                if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
                    _fail(f"expected a list of names or numbers, got {excerpt(v)}", src, key)
                v = list(v)
            if key in _PATH_LISTS and not all(isinstance(x, str) and x for x in v):
                _fail(f"expected a list of file paths, got {excerpt(v)}", src, key)
            for x in (v if key not in _NAME_LISTS | _PATH_LISTS else ()):
                err = field_error(key, x, float)
                if err:
                    _fail(err, src, key)
        elif not (isinstance(v, str) or (want is None and v is None)):
            _fail(f"expected a string{' or null' if want is None else ''}, got {excerpt(v)}",
                  src, key)
        if key in _CHOICES:
            _choice(v, key, src)
        out[k] = v
    return cls(**out)


def _per_device(v: dict, src: str, key: str) -> dict:
    """A mapping device -> list of numbers (budgets per device), each number checked as the
    list form's are."""
    if len(v) > 100:
        _fail(f"expected at most 100 devices, got {len(v)}", src, key)
    out = {}
    for dev, xs in v.items():
        if not safe_name(dev):
            _fail(f"expected a plain device name, got {excerpt(dev)}", src, key)
        if not isinstance(xs, list) or not xs or len(xs) > 100:
            _fail(f"expected a non-empty list (at most 100), got {excerpt(xs)}", src,
                  f"{key}.{dev}")
        for x in xs:
            err = field_error(key, x, float)
            if err:
                _fail(err, src, f"{key}.{dev}")
        out[dev] = list(xs)
    return out


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate an experiment config; relative paths resolve from the config's folder
    first, then from the current directory."""
    path = Path(path)
    return config_from_dict(read_user_yaml(path, "an experiment config YAML"), str(path), path)


def config_from_dict(d: Any, src: str, path: Path | None = None) -> ExperimentConfig:
    """Validate a config mapping (a YAML config, or a run folder's run_config.json): every
    field's type and range, names, and the checks across fields. With `path`, `space` and
    `latency.lut` resolve from its folder and must exist; without, they are kept as given."""
    if not isinstance(d, dict):
        _fail(f"expected a mapping at the top level, got {excerpt(d)}", src)
    bad = find_non_finite(d)
    if bad:
        _fail("NaN or infinite value (expected a finite number)", src, bad)
    check_keys(d, _TOP, src)
    if d.get("version", 1) != 1 or isinstance(d.get("version"), bool):
        _fail(f"expected 1 (the only config version), got {excerpt(d.get('version'))}", src,
              "version")
    name = d.get("name")
    if not safe_name(name):
        _fail(f"expected a plain run name (a file name: no '/', not starting with '.'), got "
              f"{excerpt(name)}", src, "name")
    seed = d.get("seed", 0)
    err = field_error("seed", seed, int)
    if err:
        _fail(err, src, "seed")
    if not isinstance(d.get("space"), str) or not d["space"]:
        _fail(f"expected a path to a search-space YAML, got {excerpt(d.get('space'))}", src,
              "space")
    space = resolve_path(d["space"], path, "space") if path else Path(d["space"])
    data, train, latency, search, finetune, baselines, ray = (
        _section(cls, d.get(k), k, src) for k, cls in _SECTIONS.items())
    embedded = not _needs_path(data.source)  # rendered here: synthetic, synthetic_face, ...
    if data.source == "synthetic":  # its reader option (labels), checked before any work
        from nas.gaze.data import synthetic_labels

        synthetic_labels(data.options, src)
    if embedded and 0 in (data.train, data.val):
        _fail("expected a number of images to render (0 means 'all' only for a dataset on "
              "disk)", src, "data.train" if data.train == 0 else "data.val")
    if not embedded and not data.path:
        _fail(f"expected the folder of the {data.source} dataset", src, "data.path")
    if data.path is not None and path:
        data.path = str(resolve_path(data.path, path, "data.path"))
    if data.train and train.batch_size > data.train:
        _fail(f"expected at most data.train ({data.train}) images per batch, got "
              f"{train.batch_size} (an epoch would have no step)", src, "train.batch_size")
    if train.random_subnet_images > train.batch_size:
        _fail(f"expected 0 (whole batch) or at most train.batch_size ({train.batch_size}), got "
              f"{train.random_subnet_images}", src, "train.random_subnet_images")
    if finetune.epochs and data.train and finetune.batch_size > data.train:
        _fail(f"expected at most data.train ({data.train}) images per batch, got "
              f"{finetune.batch_size}", src, "finetune.batch_size")
    if latency.device is not None and not safe_name(latency.device):
        _fail(f"expected a plain device name (a file name: no '/', not starting with '.'), "
              f"got {excerpt(latency.device)}", src, "latency.device")
    if latency.lut is not None and path:
        latency.lut = str(resolve_path(latency.lut, path, "latency.lut"))
    if latency.luts and latency.lut is not None:
        _fail("expected latency.lut (one table) or latency.luts (several), not both", src,
              "latency.luts")
    if path:
        latency.luts = [str(resolve_path(p, path, f"latency.luts[{i}]"))
                        for i, p in enumerate(latency.luts)]
    if isinstance(search.budgets_ms, dict) and not (latency.luts or latency.lut):
        _fail("budgets per device need the devices' tables (latency.luts or latency.lut); "
              "give a list of budgets to profile this machine", src, "search.budgets_ms")
    if len(latency.luts) > 1 and baselines.enabled:
        _fail("the baselines are timed on this machine, against one table; with several "
              "(latency.luts) leave baselines.enabled false", src, "baselines.enabled")
    return ExperimentConfig(name, seed, space, data, train, latency, search, finetune,
                            baselines, src, d, ray=ray)


def _needs_path(source: str) -> bool:
    """Whether a data source reads a dataset folder (the embedded renderers do not)."""
    from nas.gaze.datasets import get_source

    return get_source(source).needs_path


def check_inputs(cfg: ExperimentConfig) -> None:
    """The checks across files, before any work: the space loads and suits the data, the
    given latency table loads and covers the space (and predicts positive latencies)."""
    from nas.space import SearchSpace

    space = SearchSpace.load(cfg.space)
    if cfg.baselines.enabled and not space.layout.single:
        _fail(f"the baselines are single-input nets; space {space.name!r} takes "
              f"{', '.join(space.input_kinds())} (set baselines.enabled: false)", cfg.source,
              "baselines.enabled")
    if cfg.data.source != "synthetic":  # channels are checked when the data are opened
        from nas.gaze.datasets import get_source

        task = get_source(cfg.data.source, cfg.source).task
        if task is not None and task != space.task:
            _fail(f"data.source {cfg.data.source!r} gives {task} labels; the space's task is "
                  f"{space.task!r}", str(cfg.space), "task")
    elif space.in_channels != 1 or space.task != "gaze3d":
        _fail(f"data.source {cfg.data.source!r} gives 1-channel images with gaze3d labels; the "
              f"space has input.channels {space.in_channels} and task {space.task!r}",
              str(cfg.space), "input.channels" if space.in_channels != 1 else "task")
    if cfg.latency.lut:
        from nas.latency.table import LatencyTable

        LatencyTable.load(cfg.latency.lut).check_space(space)
    if cfg.latency.luts or isinstance(cfg.search.budgets_ms, dict):  # tables and budgets agree
        from nas.multidevice import load_devices

        devices = load_devices(cfg.latency.luts or [cfg.latency.lut], space,
                               field="latency.luts", source=cfg.source)
        devices.budgets(cfg.search.budgets_ms, space, cfg.seed, "search.budgets_ms", cfg.source)
    strategy_options(cfg.search, space, cfg.seed, src=cfg.source)


def strategy_options(search: SearchConfig, space, seed: int, src: str | None = None) -> dict:
    """The strategy's options (search.options, plus search.storage for strategies that keep
    a study), checked by building the strategy once, so a bad name or option fails before
    any training."""
    from nas.search import make_strategy

    opts = dict(search.options)
    if search.storage is not None:
        opts["storage"] = search.storage
    try:
        make_strategy(search.strategy, space, seed, **opts)
    except UserError as exc:
        raise UserError(str(exc), source=src) from None
    return opts


def resolve_path(value: str, config_path: Path, field_name: str) -> Path:
    for base in (config_path.parent, Path.cwd()):
        try:
            p = (base / value).resolve()
            if p.exists():
                return p
        except (OSError, ValueError):  # a name too long, a NUL byte
            break
    raise UserError(f"path {excerpt(value)} not found (relative to the config's folder or the "
                    "current directory)", source=str(config_path), field=field_name)
