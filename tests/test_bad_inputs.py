"""A corpus of malformed inputs: configs, spaces, latency tables, checkpoints and run folders,
CLI flags and the environment. Every case calls the CLI in-process and must exit 2 with one
line on stderr naming what is wrong, without a traceback, and without changing any file
(the run folder and the inputs are hashed before and after). Nothing expensive may run:
data rendering, training, profiling, validation and the search are replaced by a guard that
fails the test if it is ever reached, so each error must fire before any work."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from conftest import ROOT, TINY_CONFIG

from nas.cli import main
from nas.config import config_from_dict
from nas.latency.keys import all_keys
from nas.latency.table import LatencyTable
from nas.space import SearchSpace
from nas.supernet import Supernet
from nas.train import SUPERNET_FORMAT

TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"
BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}' if p else '1'] * 9)}]\n"
               for p, c in zip([""] + list("abcdefgh"), "abcdefghi"))


class Guard(Exception):
    """Raised where expensive work would start: a case that gets here failed too late."""


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A run folder made without training (an untrained supernet of the tiny space, its
    config, one evaluation-cache row) and a complete synthetic table for the tiny space."""
    d = tmp_path_factory.mktemp("bad_inputs_base")
    space = SearchSpace.load(TINY_SPACE)
    table = LatencyTable(meta={"device": "fake-dev", "complete": True},
                         space_hashes=[space.space_hash()],
                         entries={k: {"p50_ms": 0.01, "mean_ms": 0.011, "std_ms": 0.001, "n": 5}
                                  for k in all_keys(space)})
    table.save(d / "lut.yaml")
    run = d / "run"
    run.mkdir()
    cfg = copy.deepcopy(TINY_CONFIG)
    (run / "run_config.json").write_text(json.dumps(config_from_dict(cfg, "x").to_dict()))
    torch.save({"format": SUPERNET_FORMAT, "space": json.dumps(space.raw),
                "space_hash": space.space_hash(), "state_dict": Supernet(space).state_dict(),
                "data": "synth-fake", "fingerprint": "fake", "history": "[]"}, run / "supernet.pt")
    arch = space.smallest()
    (run / "eval_cache.jsonl").write_text(json.dumps(
        {"arch_id": arch.arch_id, "arch": arch.to_string(), "error_deg": 9.0, "params": 1,
         "macs": 1, "eval_s": 0.0, "tag": "t"}) + "\n")
    return d


class Ctx:
    """One case's private copies of the inputs, and helpers to spoil them."""

    def __init__(self, tmp: Path, base: Path):
        self.tmp = tmp
        self.run = tmp / "run"
        shutil.copytree(base / "run", self.run)
        self.lut = str(tmp / "lut.yaml")
        shutil.copy(base / "lut.yaml", self.lut)
        self.space_path = str(tmp / "space.yaml")
        shutil.copy(TINY_SPACE, self.space_path)
        self.arch_id = json.loads((self.run / "eval_cache.jsonl").read_text())["arch_id"]

    def write(self, name: str, data: str | bytes | Any) -> str:
        p = self.tmp / name
        if isinstance(data, bytes):
            p.write_bytes(data)
        elif isinstance(data, str):
            p.write_text(data)
        else:
            p.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(p)

    def config(self, patch: Callable | None = None, text: str | bytes | None = None,
               space: str | None = None) -> str:
        c = copy.deepcopy(TINY_CONFIG)
        c["space"] = space or self.space_path
        c["latency"]["lut"] = self.lut
        if patch:
            patch(c)
        return self.write("config.yaml", c if text is None else text)

    def space(self, patch: Callable | None = None, text: str | bytes | None = None) -> str:
        d = yaml.safe_load(TINY_SPACE.read_text())
        if patch:
            patch(d)
        return self.write("bad_space.yaml", d if text is None else text)

    def table(self, patch: Callable | None = None, text: str | bytes | None = None) -> str:
        d = yaml.safe_load(Path(self.lut).read_text())
        if patch:
            patch(d)
        return self.write("bad_lut.yaml", d if text is None else text)

    def search(self, *extra: str, lut: str | None = None) -> list[str]:
        return ["search", "--run", str(self.run), "--lut", lut or self.lut, *extra]

    def validate(self, *extra: str, lut: str | None = None) -> list[str]:
        return ["lut", "validate", lut or self.lut, "--space", str(TINY_SPACE), *extra]

    def export(self, arch: str | None = None, *extra: str) -> list[str]:
        return ["export", "--run", str(self.run), "--arch", arch or self.arch_id,
                "--out", str(self.tmp / "exported"), *extra]


def S(dotted: str, value: Any) -> Callable[[dict], None]:
    """A patch that sets `a.b.c` (list indices allowed) to `value`."""
    def patch(d: dict) -> None:
        *head, last = dotted.split(".")
        for k in head:
            d = d[int(k)] if isinstance(d, list) else d.setdefault(k, {})
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
    return patch


def D(dotted: str) -> Callable[[dict], None]:
    def patch(d: dict) -> None:
        *head, last = dotted.split(".")
        for k in head:
            d = d[k]
        del d[last]
    return patch


def torch_bytes(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _supernet(ctx: Ctx, **change: Any) -> None:
    ck = torch.load(ctx.run / "supernet.pt", weights_only=True)
    ck.update(change)
    torch.save(ck, ctx.run / "supernet.pt")


def _run_config(ctx: Ctx, patch: Callable | None = None, text: str | None = None) -> None:
    p = ctx.run / "run_config.json"
    d = json.loads(p.read_text())
    if patch:
        patch(d)
    p.write_text(text if text is not None else json.dumps(d))


# ---------------------------------------------------------------------- the corpus
# Each case: (id, setup(ctx) -> argv, a string the one error line must contain).
CMDS = ("run", "train", "baselines")  # config cases rotate through the commands that read one

CONFIG_FIELDS = [
    ("lr-zero", S("train.lr", 0), "train.lr"),
    ("lr-negative", S("train.lr", -0.1), "train.lr"),
    ("lr-nan", S("train.lr", math.nan), "train.lr"),
    ("lr-inf", S("train.lr", math.inf), "train.lr"),
    ("lr-string", S("train.lr", "fast"), "train.lr"),
    ("lr-bool", S("train.lr", True), "train.lr"),
    ("weight-decay-negative", S("train.weight_decay", -1e-4), "train.weight_decay"),
    ("weight-decay-inf", S("train.weight_decay", math.inf), "train.weight_decay"),
    ("train-threads-zero", S("train.threads", 0), "train.threads"),
    ("eval-images-zero", S("train.eval_images", 0), "train.eval_images"),
    ("epochs-zero", S("train.epochs", 0), "train.epochs"),
    ("epochs-float", S("train.epochs", 1.5), "train.epochs"),
    ("batch-size-one", S("train.batch_size", 1), "train.batch_size"),
    ("batch-size-over-train", S("train.batch_size", 1024), "train.batch_size"),  # 0 steps
    ("subnet-images-over-batch", S("train.random_subnet_images", 128),
     "train.random_subnet_images"),
    ("subnet-images-one", S("train.random_subnet_images", 1), "train.random_subnet_images"),
    ("random-subnets-negative", S("train.random_subnets", -1), "train.random_subnets"),
    ("kd-weight-over-one", S("train.kd_weight", 1.5), "train.kd_weight"),
    ("feature-kd-negative", S("train.feature_kd", -1), "train.feature_kd"),
    ("sampling-typo", S("train.sampling", "uniformm"), "did you mean 'uniform'"),
    ("smallest-unknown", S("train.smallest", "local"), "train.smallest"),
    ("layer-pool-unknown", S("train.layer_pool", "families"), "did you mean 'family'"),
    ("device-unknown", S("train.device", "tpu"), "expected one of cpu, cuda"),
    ("channels-last-int", S("train.channels_last", 1), "train.channels_last"),
    ("checkpoint-every-zero", S("train.checkpoint_every_s", 0), "train.checkpoint_every_s"),
    ("train-key-typo", S("train.lrr", 0.1), "did you mean 'lr'"),
    ("train-not-mapping", S("train", 5), "train"),
    ("data-train-float-1e9", S("data.train", 1e9), "data.train"),
    ("data-train-huge", S("data.train", 10**9), "data.train"),
    ("data-val-tiny", S("data.val", 10), "data.val"),
    ("data-workers-zero", S("data.workers", 0), "data.workers"),
    ("data-source-unknown", S("data.source", "mpigaze"), "data.source"),
    ("data-path-missing", S("data.source", "mpiigaze"), "data.path"),
    ("data-train-bool", S("data.train", True), "data.train"),
    ("latency-rounds-zero", S("latency.rounds", 0), "latency.rounds"),
    ("latency-workers-zero", S("latency.workers", 0), "latency.workers"),
    ("validate-samples-two", S("latency.validate_samples", 2), "latency.validate_samples"),
    ("device-parent-path", S("latency.device", "../../x"), "latency.device"),
    ("device-absolute", S("latency.device", "/tmp/x"), "latency.device"),
    ("device-hidden", S("latency.device", ".x"), "latency.device"),
    ("lut-missing", S("latency.lut", "nowhere.yaml"), "latency.lut"),
    ("lut-not-string", S("latency.lut", 5), "latency.lut"),
    ("recal-images-zero", S("search.recal_images", 0), "search.recal_images"),  # BN reset
    ("evals-zero", S("search.evals", 0), "search.evals"),
    ("search-batch-zero", S("search.batch", 0), "search.batch"),
    ("budget-zero", S("search.budgets_ms", [0]), "search.budgets_ms"),
    ("budget-negative", S("search.budgets_ms", [-1]), "search.budgets_ms"),
    ("budget-nan", S("search.budgets_ms", [math.nan]), "search.budgets_ms"),
    ("budget-inf", S("search.budgets_ms", [math.inf]), "search.budgets_ms"),
    ("budget-string", S("search.budgets_ms", ["1"]), "search.budgets_ms"),
    ("budgets-not-list", S("search.budgets_ms", 5), "search.budgets_ms"),
    ("strategy-typo", S("search.strategy", "evolutoin"), "did you mean 'evolution'"),
    ("val-images-zero", S("search.val_images", 0), "search.val_images"),
    ("search-threads-zero", S("search.threads", 0), "search.threads"),
    ("finetune-lr-zero", S("finetune.lr", 0), "finetune.lr"),
    ("finetune-batch-one", S("finetune.batch_size", 1), "finetune.batch_size"),
    ("finetune-kd-two", S("finetune.kd_weight", 2), "finetune.kd_weight"),
    ("finetune-epochs-negative", S("finetune.epochs", -1), "finetune.epochs"),
    ("finetune-batch-over-train", S("finetune.batch_size", 1024), "finetune.batch_size"),
    ("baselines-workers-zero", S("baselines.workers", 0), "baselines.workers"),
    ("baselines-enabled-string", S("baselines.enabled", "yes"), "baselines.enabled"),
    ("name-dotdot", S("name", ".."), "name"),
    ("name-slash", S("name", "a/b"), "name"),
    ("name-hidden", S("name", ".run"), "name"),
    ("name-empty", S("name", ""), "name"),
    ("name-number", S("name", 5), "name"),
    ("name-missing", D("name"), "name"),
    ("seed-negative", S("seed", -1), "seed"),
    ("seed-2-32", S("seed", 2**32), "seed"),
    ("seed-2-70", S("seed", 2**70), "seed"),
    ("seed-bool", S("seed", True), "seed"),
    ("seed-float", S("seed", 1.5), "seed"),
    ("version-two", S("version", 2), "version"),
    ("top-key-typo", S("trian", {}), "did you mean 'train'"),
    ("space-missing", D("space"), "space"),
    ("space-not-string", S("space", 5), "space"),
    ("space-nul-byte", S("space", "a\0b"), "space"),
    ("space-name-too-long", S("space", "a" * 5000), "space"),
    ("data-list", S("data", [1]), "data"),
    ("strategy-optuna-typo", S("search.strategy", "optuna-nsga"), "did you mean 'optuna-nsga2'"),
    ("strategy-external-missing", S("search.strategy", "no_such_module:Thing"),
     "cannot import external strategy"),
]

BAD_YAML = [  # raw bytes of a user YAML file -> what the one line must say
    ("latin-1", b"name: caf\xe9\n", "UTF-8"),
    ("binary", bytes(range(256)) * 4, "UTF-8"),
    ("nul-byte", b"name: a\x00b\n", "NUL"),
    ("deep-nesting", b"a: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested deeper"),
    ("alias-bomb", BOMB.encode(), "aliases expand"),
    ("recursive-alias", b"a: &a [1, *a]\n", "recursive alias"),
    ("syntax-error", b"name: [oops\n", "malformed YAML"),
    ("tab-indent", b"a:\n\t- 1\n", "malformed YAML"),
    ("python-tag", b"a: !!python/object/apply:os.system [ls]\n", "malformed YAML"),
    ("huge-int", b"seed: " + b"7" * 5000 + b"\n", "bad value"),
    ("bad-date", b"seed: 2001-13-45\n", "bad value"),
    ("control-char", b"name: \x07\n", "malformed YAML"),
    ("two-megabytes", b"#" * (2 << 20), "bytes"),
]

CONFIG_TEXT = BAD_YAML + [
    ("duplicate-key", lambda c: yaml.safe_dump(c) + "seed: 3\n", "duplicate key"),
    ("duplicate-nested-key", lambda c: yaml.safe_dump(c).replace(
        "  lr: 0.001\n", "  lr: 0.001\n  lr: 0.01\n", 1), "duplicate key"),
    ("empty-file", "", "top level"),
    ("top-level-list", "- 1\n- 2\n", "top level"),
    ("top-level-scalar", "hello\n", "top level"),
]

SPACE_FIELDS = [
    ("key-typo", S("stgaes", []), "did you mean 'stages'"),
    ("stem-key-typo", S("stem.widht", 8), "stem.widht"),
    ("width-not-multiple-of-8", S("stages.0.widths", [12]), "stages[0].widths"),
    ("width-huge", S("stages.0.widths", [8, 10**6]), "stages[0].widths"),
    ("depth-zero", S("stages.0.depths", [0, 1]), "stages[0].depths"),
    ("stage-key-typo", S("stages.0.strides", 2), "stages[0].strides"),
    ("resolution-too-small", S("input.resolutions", [[4, 4]]), "input.resolutions[0]"),
    ("resolution-huge", S("input.resolutions", [[36, 10**6]]), "input.resolutions[0]"),
    ("kernel-four", S("blocks.mbconv.kernels", [4]), "blocks.mbconv.kernels"),
    ("option-typo", S("blocks.shuffle", {"kernel": [3]}), "blocks.shuffle.kernel"),
    ("acts-duplicate", S("blocks.mbconv.acts", ["relu", "relu"]), "blocks.mbconv.acts"),
    ("dropout-nan", S("head.dropout", math.nan), "head.dropout"),
    ("dropout-bool", S("head.dropout", True), "head.dropout"),
    ("outputs-three", S("head.outputs", 3), "head.outputs"),
    ("channels-three", S("input.channels", 3), "input.channels"),  # data has one channel
    ("task-pog2d", S("task", "pog2d"), "task"),  # synthetic labels are gaze angles
    ("family-unknown", S("blocks.resnet", {"kernels": [3]}), "blocks.resnet"),
    ("blocks-empty", S("blocks", {}), "blocks"),
    ("version-99", S("version", 99), "version"),
    ("name-list", S("name", ["a"]), "name"),
]

TABLE_FIELDS = [
    ("correction-c-negative", S("correction", {"a": 1.0, "b": 0.0, "c": -1.0}), "correction"),
    ("correction-a-zero", S("correction", {"a": 0.0, "b": 0.0, "c": 0.0}), "correction.a"),
    ("correction-a-nan", S("correction", {"a": math.nan, "b": 0.0, "c": 0.0}), "correction.a"),
    ("correction-extra-key", S("correction", {"a": 1.0, "b": 0.0, "c": 0.0, "d": 1}),
     "correction.d"),
    ("correction-string", S("correction", {"a": "1", "b": 0.0, "c": 0.0}), "correction.a"),
    ("power-exponent-negative", S("correction", {"scale": 1.0, "exponent": -1.0,
                                                 "per_part": 0.0}), "correction.exponent"),
    ("power-missing-term", S("correction", {"scale": 1.0, "exponent": 1.0}),
     "correction.per_part"),
    ("power-and-linear-keys", S("correction", {"scale": 1.0, "exponent": 1.0,
                                               "per_part": 0.0, "a": 1.0}), "correction.a"),
    ("entry-negative", lambda d: next(iter(d["entries"].values())).update(p50_ms=-1),
     "p50_ms"),
    ("entry-zero", lambda d: next(iter(d["entries"].values())).update(p50_ms=0), "p50_ms"),
    ("entry-inf", lambda d: next(iter(d["entries"].values())).update(p50_ms=math.inf),
     "p50_ms"),
    ("entry-string", lambda d: next(iter(d["entries"].values())).update(p50_ms="x"), "p50_ms"),
    ("entry-bool", lambda d: next(iter(d["entries"].values())).update(p50_ms=True), "p50_ms"),
    ("entry-n-zero", lambda d: next(iter(d["entries"].values())).update(n=0), ".n"),
    ("entry-unknown-field", lambda d: next(iter(d["entries"].values())).update(p90_ms=1),
     "p90_ms"),
    ("top-key-typo", lambda d: d.update(entires=d.pop("entries")), "did you mean 'entries'"),
    ("meta-missing", D("meta"), "meta"),
    ("device-missing", D("meta.device"), "meta.device"),
    ("format-version-99", S("meta.format_version", 99), "meta.format_version"),
    ("other-space", lambda d: (d.update(space_hash=[]), d["entries"].popitem()), "space_hash"),
    ("entries-list", S("entries", [1, 2]), "entries"),
]

TABLE_TEXT = BAD_YAML[:9] + [
    ("duplicate-entry", lambda t: t.replace("entries:\n", "entries:\n" + t.split(
        "entries:\n")[1].splitlines()[0] + "\n", 1), "duplicate key"),
    ("top-level-list", "- 1\n", "expected a mapping"),
]

RUN_FOLDER = [  # (id, spoil(ctx), argv(ctx), must contain)
    ("supernet-foreign-dict", lambda c: (c.run / "supernet.pt").write_bytes(torch_bytes(
        {"a": 1})), "search", "not a gaze-nas supernet"),
    ("supernet-foreign-list", lambda c: (c.run / "supernet.pt").write_bytes(torch_bytes(
        [1, 2])), "search", "not a gaze-nas supernet"),
    ("supernet-truncated", lambda c: (c.run / "supernet.pt").write_bytes(
        (c.run / "supernet.pt").read_bytes()[:5000]), "search", "corrupt"),
    ("supernet-random-bytes", lambda c: (c.run / "supernet.pt").write_bytes(
        bytes(range(256)) * 64), "export", "corrupt"),
    ("supernet-empty", lambda c: (c.run / "supernet.pt").write_bytes(b""), "finetune",
     "corrupt"),
    ("supernet-without-space", lambda c: (c.run / "supernet.pt").write_bytes(torch_bytes(
        {"format": SUPERNET_FORMAT, "state_dict": {}, "data": "x"})), "search", "space"),
    ("supernet-space-not-json", lambda c: _supernet(c, space="{oops"), "search", "space"),
    ("supernet-space-invalid", lambda c: _supernet(c, space=json.dumps({"name": "x"})),
     "search", "supernet.pt:space"),
    ("supernet-missing", lambda c: (c.run / "supernet.pt").unlink(), "search", "supernet.pt"),
    ("supernet-is-folder", lambda c: ((c.run / "supernet.pt").unlink(),
                                      (c.run / "supernet.pt").mkdir()), "export", "supernet.pt"),
    ("run-folder-missing", lambda c: shutil.rmtree(c.run), "search", "--run"),
    ("run-config-missing", lambda c: (c.run / "run_config.json").unlink(), "search",
     "run_config.json"),
    ("run-config-bad-json", lambda c: _run_config(c, text="{'name': "), "search",
     "malformed JSON"),
    ("run-config-list", lambda c: _run_config(c, text="[1, 2]"), "export", "top level"),
    ("run-config-bad-data", lambda c: _run_config(c, S("data.train", "x")), "search",
     "data.train"),
    ("run-config-seed-negative", lambda c: _run_config(c, S("seed", -1)), "finetune", "seed"),
    ("run-config-nan", lambda c: _run_config(c, text=(c.run / "run_config.json").read_text()
                                             .replace('"lr": 0.001', '"lr": NaN')), "search",
     "NaN"),
    ("run-config-deep", lambda c: _run_config(c, text="[" * 100000), "search",
     "malformed JSON"),
    ("eval-cache-list-line", lambda c: (c.run / "eval_cache.jsonl").write_text("[1]\n"),
     "export", "line 1"),
    ("eval-cache-number-id", lambda c: (c.run / "eval_cache.jsonl").write_text(
        '{"arch_id": 5, "arch": "x"}\n'), "search", "eval_cache.jsonl"),
    ("run-over-foreign-supernet", lambda c: (c.run / "supernet.pt").write_bytes(torch_bytes(
        {"a": 1})), "run", "not a gaze-nas supernet"),
    ("run-over-foreign-checkpoint", lambda c: ((c.run / "train").mkdir(), (
        c.run / "train" / "checkpoint.pt").write_bytes(torch_bytes([1]))), "run",
     "checkpoint.pt"),
    ("train-over-truncated-supernet", lambda c: (c.run / "supernet.pt").write_bytes(
        (c.run / "supernet.pt").read_bytes()[:100]), "train", "corrupt"),
    ("run-over-bad-eval-cache", lambda c: (c.run / "eval_cache.jsonl").write_text("7\n"),
     "run", "eval_cache.jsonl"),
    ("run-config-strategy-typo", lambda c: _run_config(c, S("search.strategy", "evolutoin")),
     "search", "did you mean 'evolution'"),
]

FLAGS = [  # (id, argv(ctx), must contain)
    ("search-budget-zero", lambda c: c.search("--budget-ms", "0"), "--budget-ms"),
    ("search-budget-negative", lambda c: c.search("--budget-ms", "1", "-1"), "--budget-ms"),
    ("search-budget-nan", lambda c: c.search("--budget-ms", "nan"), "--budget-ms"),
    ("search-budget-inf", lambda c: c.search("--budget-ms", "inf"), "--budget-ms"),
    ("search-budget-word", lambda c: c.search("--budget-ms", "fast"), "--budget-ms"),
    ("search-evals-zero", lambda c: c.search("--evals", "0"), "--evals"),
    ("search-evals-negative", lambda c: c.search("--evals", "-5"), "--evals"),
    ("search-evals-float", lambda c: c.search("--evals", "1.5"), "--evals"),
    ("search-seed-negative", lambda c: c.search("--seed", "-1"), "--seed"),
    ("search-seed-2-32", lambda c: c.search("--seed", str(2**32)), "--seed"),
    ("search-strategy-unknown", lambda c: c.search("--strategy", "annealing"), "--strategy"),
    ("search-strategy-typo", lambda c: c.search("--strategy", "evolutoin"),
     "--strategy: unknown strategy 'evolutoin'; did you mean 'evolution'? expected one of "),
    ("search-strategy-typo-first", lambda c: ["search", "--strategy", "optuna-tpee", "--run",
                                              str(c.run), "--lut", c.lut],
     "did you mean 'optuna-tpe'?"),
    ("search-strategy-empty-module", lambda c: c.search("--strategy", ":Thing"),
     "--strategy: cannot import external strategy"),
    ("search-strategy-relative-module", lambda c: c.search("--strategy", ".x:Thing"),
     "--strategy: cannot import external strategy"),
    ("search-strategy-not-a-strategy", lambda c: c.search("--strategy", "os:sep"),
     "not a Strategy class or factory"),
    ("search-lut-missing", lambda c: c.search(lut=str(c.tmp / "nope.yaml")), "not found"),
    ("search-lut-folder", lambda c: c.search(lut=str(c.tmp)), "not found"),
    ("search-without-lut", lambda c: ["search", "--run", str(c.run)], "--lut"),
    ("search-out-is-file", lambda c: c.search("--out", c.write("f.txt", "x")), "--out"),
    ("validate-samples-zero", lambda c: c.validate("--samples", "0"), "--samples"),
    ("validate-samples-one", lambda c: c.validate("--samples", "1"), "--samples"),
    ("validate-samples-two", lambda c: c.validate("--samples", "2"), "--samples"),
    ("validate-samples-three", lambda c: c.validate("--samples", "3"), "--samples"),
    ("validate-rounds-zero", lambda c: c.validate("--rounds", "0"), "--rounds"),
    ("validate-seed-negative", lambda c: c.validate("--seed", "-1"), "--seed"),
    ("validate-space-missing", lambda c: ["lut", "validate", c.lut, "--space",
                                          str(c.tmp / "no.yaml")], "not found"),
    ("profile-workers-zero", lambda c: ["profile", "--space", c.space_path, "--out",
                                        str(c.tmp / "t.yaml"), "--workers", "0"], "--workers"),
    ("profile-rounds-zero", lambda c: ["profile", "--space", c.space_path, "--out",
                                       str(c.tmp / "t.yaml"), "--rounds", "0"], "--rounds"),
    ("profile-device-path", lambda c: ["profile", "--space", c.space_path, "--out",
                                       str(c.tmp / "t.yaml"), "--device", "../x"], "--device"),
    ("profile-out-is-folder", lambda c: ["profile", "--space", c.space_path, "--out",
                                         str(c.run)], "--out"),
    ("profile-out-under-file", lambda c: ["profile", "--space", c.space_path, "--out",
                                          str(c.run / "supernet.pt" / "t.yaml")], "--out"),
    ("finetune-epochs-zero", lambda c: ["finetune", "--run", str(c.run), "--arch", c.arch_id,
                                        "--epochs", "0", "--out", str(c.tmp / "ft")],
     "--epochs"),
    ("finetune-lr-zero", lambda c: ["finetune", "--run", str(c.run), "--arch", c.arch_id,
                                    "--lr", "0", "--out", str(c.tmp / "ft")], "--lr"),
    ("finetune-lr-nan", lambda c: ["finetune", "--run", str(c.run), "--arch", c.arch_id,
                                   "--lr", "nan", "--out", str(c.tmp / "ft")], "--lr"),
    ("finetune-kd-two", lambda c: ["finetune", "--run", str(c.run), "--arch", c.arch_id,
                                   "--kd", "2", "--out", str(c.tmp / "ft")], "--kd"),
    ("finetune-out-is-file", lambda c: ["finetune", "--run", str(c.run), "--arch", c.arch_id,
                                        "--out", str(c.run / "run_config.json")], "--out"),
    ("export-arch-garbage", lambda c: c.export("r36x60|nonsense"), "arch"),
    ("export-arch-unknown-id", lambda c: c.export("deadbeef00"), "arch_id"),
    ("export-arch-other-space", lambda c: c.export(
        "r36x60_t1|w16:mb_k7_e6_hs|w24:mb_k3_e3_re|w40:sh_k3|w80:sh_k3"), "arch"),
    ("export-arch-too-long", lambda c: c.export("x" * 3000), "--arch"),
    ("export-out-is-file", lambda c: ["export", "--run", str(c.run), "--arch", c.arch_id,
                                      "--out", str(c.run / "supernet.pt")], "--out"),
    ("run-out-is-file", lambda c: ["run", c.config(), "--out", str(c.run / "supernet.pt")],
     "--out"),
    ("train-out-under-file", lambda c: ["train", c.config(), "--out",
                                        str(c.run / "supernet.pt" / "sub")], "--out"),
    ("run-config-missing", lambda c: ["run", str(c.tmp / "nope.yaml")], "not found"),
    ("run-config-is-folder", lambda c: ["run", str(c.run)], "not found"),
    ("space-show-missing", lambda c: ["space", "show", str(c.tmp / "nope.yaml")], "not found"),
    ("unknown-command", lambda c: ["fly"], "invalid choice"),
    ("unknown-flag", lambda c: c.search("--evalz", "1"), "unrecognized"),
    ("lut-without-subcommand", lambda c: ["lut"], "required"),
]


def _cases() -> list:
    out = []
    for i, (cid, patch, want) in enumerate(CONFIG_FIELDS):
        cmd = CMDS[i % len(CMDS)]
        out.append((f"config-{cid}", lambda c, p=patch, cmd=cmd: [
            cmd, c.config(p), "--out", str(c.run)], want))
    for i, (cid, text, want) in enumerate(CONFIG_TEXT):
        cmd = CMDS[i % len(CMDS)]
        out.append((f"config-yaml-{cid}", lambda c, t=text, cmd=cmd: [
            cmd, c.config(text=t(copy.deepcopy(TINY_CONFIG)) if callable(t) else t),
            "--out", str(c.run)], want))
    for cid, patch, want in SPACE_FIELDS:
        out.append((f"space-{cid}", lambda c, p=patch: [
            "run", c.config(space=c.space(p)), "--out", str(c.run)], want))
    for cid, text, want in BAD_YAML[:9] + [("duplicate-key", lambda t: t + "name: again\n",
                                             "duplicate key")]:
        out.append((f"space-yaml-{cid}", lambda c, t=text: [
            "train", c.config(space=c.space(text=t(TINY_SPACE.read_text()) if callable(t)
                                            else t)), "--out", str(c.run)], want))
    out.append(("space-show-key-typo", lambda c: ["space", "show", c.space(S("haed", {}))],
                "did you mean 'head'"))
    out.append(("space-show-alias-bomb", lambda c: ["space", "show", c.space(text=BOMB)],
                "aliases expand"))
    for i, (cid, patch, want) in enumerate(TABLE_FIELDS):
        route = i % 3  # search --lut, lut validate, and a config's latency.lut
        out.append((f"table-{cid}", lambda c, p=patch, r=route: (
            c.search(lut=c.table(p)) if r == 0 else c.validate(lut=c.table(p)) if r == 1
            else ["run", c.config(S("latency.lut", c.table(p))), "--out", str(c.run)]), want))
    for cid, text, want in TABLE_TEXT:
        out.append((f"table-yaml-{cid}", lambda c, t=text: c.search(lut=c.table(
            text=t(Path(c.lut).read_text()) if callable(t) else t)), want))
    for cid, spoil, cmd, want in RUN_FOLDER:
        def argv(c, spoil=spoil, cmd=cmd):
            spoil(c)
            if cmd == "search":
                return c.search()
            if cmd in ("export", "finetune"):
                return [cmd, "--run", str(c.run), "--arch", c.arch_id, "--out",
                        str(c.tmp / "o")]
            return [cmd, c.config(), "--out", str(c.run)]
        out.append((f"rundir-{cid}", argv, want))
    out += [(f"flag-{cid}", fn, want) for cid, fn, want in FLAGS]
    out += [  # checks across files, before any work
        ("cross-run-table-for-other-space", lambda c: ["run", c.config(S("latency.lut", c.table(
            lambda d: (d.update(space_hash=[]), d["entries"].popitem())))), "--out",
            str(c.run)], "does not cover space"),
        ("cross-train-table-negative-latency", lambda c: ["train", c.config(S(
            "latency.lut", c.table(S("correction.c", -1.0)))), "--out", str(c.run)],
         "positive latency"),
        ("cross-search-space-of-run-vs-table", lambda c: c.search(
            lut=str(ROOT / "latency_tables" / "amd-epyc-2c.yaml")), "does not cover space"),
    ]
    return out


CASES = _cases()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "<dir>" for p in sorted(folder.rglob("*"))}


@pytest.fixture
def guarded(monkeypatch):
    """Every expensive entry point raises Guard: a case must fail before reaching one."""
    def guard(*a, **k):
        raise Guard("expensive work reached: the error should have fired before")

    for mod, name in (("nas.pipeline", "run"), ("nas.pipeline", "splits_from"),
                      ("nas.pipeline", "run_search_stage"), ("nas.gaze.data", "splits_from"),
                      ("nas.gaze.data", "synthetic_splits"), ("nas.train", "train_supernet"),
                      ("nas.latency", "profile_space"), ("nas.latency", "validate_table"),
                      ("nas.latency.profile", "profile_space"),
                      ("nas.latency.validate", "validate_table")):
        monkeypatch.setattr(f"{mod}.{name}", guard)


def _assert_one_line_exit_2(argv: list[str], tmp_path: Path, capsys, want: str) -> str:
    before = _snapshot(tmp_path)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("gaze-nas: error: ")
    assert len(lines[0]) <= 700, "message not bounded"
    assert want in lines[0], lines[0]
    assert _snapshot(tmp_path) == before, "files changed"
    return lines[0]


@pytest.mark.parametrize("setup,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(setup, want, base, tmp_path, capsys, guarded):
    ctx = Ctx(tmp_path, base)
    _assert_one_line_exit_2(setup(ctx), tmp_path, capsys, want)


def test_corpus_size():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------- environment
@pytest.mark.parametrize("value,want", [("", "GAZE_NAS_CACHE"), ("  ", "GAZE_NAS_CACHE"),
                                        (None, "GAZE_NAS_CACHE")])
def test_bad_cache_environment(value, want, base, tmp_path, capsys, guarded, monkeypatch):
    ctx = Ctx(tmp_path, base)
    monkeypatch.setenv("GAZE_NAS_CACHE", value if value is not None else ctx.lut)  # None: a file
    _assert_one_line_exit_2(ctx.search(), tmp_path, capsys, want)


def test_read_only_out_folder(base, tmp_path, capsys, guarded, monkeypatch):
    ctx = Ctx(tmp_path, base)
    monkeypatch.setattr("os.access", lambda *a, **k: False)  # as a non-root user would see
    _assert_one_line_exit_2(["run", ctx.config(), "--out", str(ctx.run)], tmp_path, capsys,
                            "not writable")


def test_file_system_error_at_the_boundary(base, tmp_path, capsys, guarded, monkeypatch):
    """An OSError from deep inside (a read-only cache, a full disk) is one line too."""
    ctx = Ctx(tmp_path, base)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(ctx.tmp / "cache" / ("x" * 500)))

    monkeypatch.setattr("nas.pipeline.run", denied)
    line = _assert_one_line_exit_2(["run", ctx.config(), "--out", str(ctx.run)], tmp_path,
                                   capsys, "Permission denied")
    assert "x" * 300 not in line  # the path is shown bounded


# ---------------------------------------------------------------------- controls
@pytest.mark.parametrize("argv", [
    lambda c: ["run", c.config(), "--out", str(c.run)],
    lambda c: ["train", c.config(), "--out", str(c.run)],
    lambda c: c.search("--budget-ms", "0.5", "--evals", "1", "--seed", "7"),
    lambda c: c.validate("--samples", "4"),
    lambda c: c.export(),
    lambda c: ["finetune", "--run", str(c.run), "--arch", c.arch_id, "--out", str(c.tmp / "f")],
    lambda c: ["profile", "--space", c.space_path, "--out", str(c.tmp / "t.yaml")],
], ids=["run", "train", "search", "lut-validate", "export", "finetune", "profile"])
def test_unspoiled_inputs_pass_every_check(argv, base, tmp_path, guarded):
    """The corpus' base inputs are valid: each command gets as far as its expensive work,
    so every case above fails for the one thing it spoils."""
    with pytest.raises(Guard):
        main(argv(Ctx(tmp_path, base)))


def test_messages_bound_a_huge_bad_value(base, tmp_path, capsys, guarded):
    ctx = Ctx(tmp_path, base)
    line = _assert_one_line_exit_2(
        ["run", ctx.config(S("train.sampling", "u" * 100_000)), "--out", str(ctx.run)],
        tmp_path, capsys, "train.sampling")
    assert line.count("u") < 200


def test_torn_jsonl_line_never_swallows_the_next_row(tmp_path):
    from nas.io import append_jsonl, iter_jsonl

    p = tmp_path / "cache.jsonl"
    append_jsonl(p, {"arch_id": "a", "arch": "x"})
    with open(p, "a") as fh:
        fh.write('{"arch_id": "b", "ar')  # an interrupted append
    append_jsonl(p, {"arch_id": "c", "arch": "z"})
    assert [r["arch_id"] for r in iter_jsonl(p, ("arch_id", "arch"))] == ["a", "c"]
