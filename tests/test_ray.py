"""Ray integration on the tiny space: the Ray executor against the sequential search,
Tune fine-tuning, Ray Train. Skipped when Ray is not installed; one local Ray with 2 CPUs
and no dashboard for the whole module."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray", reason="the Ray integration needs the [ray] extra: "
                                        "pip install -e '.[ray]'")

from conftest import TINY_CONFIG  # noqa: E402

from nas.cli import main  # noqa: E402
from nas.config import config_from_dict  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One full (sequential) run of the tiny config: supernet, table, search, export."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAZE_NAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        d = tmp_path_factory.mktemp("rayrun")
        cfg = d / "tiny.yaml"
        cfg.write_text(yaml.safe_dump(TINY_CONFIG))
        assert main(["run", str(cfg), "--out", str(d / "out")]) == 0
    return d / "out"


def _search(run: Path, folder: Path, executor: str):
    """The run's search settings on a copy of its supernet in `folder` (a fresh evaluation
    cache the first time; the same folder again resumes). Returns the result, the trials
    (without timings), the evaluation cache's rows (without timings) and the log."""
    from nas.latency import LatencyTable
    from nas.pipeline import evaluator_spec, run_search_stage, splits_from
    from nas.space import SearchSpace

    folder.mkdir(exist_ok=True)
    if not (folder / "supernet.pt").exists():
        shutil.copy(run / "supernet.pt", folder / "supernet.pt")
    cfg = config_from_dict(json.loads((run / "run_config.json").read_text()), "run_config")
    space = SearchSpace.load(cfg.space)
    splits = splits_from(asdict(cfg.data), cfg.seed, "test", lambda _m: None)
    table = LatencyTable.load(next((run / "latency").glob("*.yaml")))
    s = cfg.search
    logs: list[str] = []
    res = run_search_stage(space, folder / "supernet.pt", splits, table, folder / "search",
                           strategy="evolution", evals=12, budgets=[0.05, 0.2], seed=5,
                           batch=4, recal_images=s.recal_images, val_images=s.val_images,
                           threads=1, log=logs.append, executor=executor, workers=2,
                           spec=evaluator_spec(folder / "supernet.pt", cfg, splits.fingerprint))
    with open(folder / "search" / "trials.csv", newline="") as fh:
        trials = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]
    cache = sorted(json.dumps({k: v for k, v in json.loads(line).items() if k != "eval_s"},
                              sort_keys=True)
                   for line in (folder / "eval_cache.jsonl").read_text().splitlines())
    return res, trials, cache, logs


def test_ray_executor_gives_the_sequential_search(tiny_run, tmp_path, local_ray):
    seq, seq_trials, seq_cache, _ = _search(tiny_run, tmp_path / "seq", "sequential")
    par, par_trials, par_cache, logs = _search(tiny_run, tmp_path / "ray", "ray")
    assert any("Ray workers ready" in m for m in logs)
    assert par["summary"]["evaluated_this_run"] == 12
    assert par_trials == seq_trials and len(par_trials) == 12
    assert par["front"] == seq["front"] and par["best_per_budget"] == seq["best_per_budget"]
    assert par_cache == seq_cache  # written by the driver, one row per subnet
    # run again: a finished search is rewritten from its folder, no worker is started
    again, again_trials, again_cache, logs = _search(tiny_run, tmp_path / "ray", "ray")
    assert again["resumed_complete"] and again_trials == seq_trials
    assert again_cache == seq_cache
    assert not any("Ray workers ready" in m for m in logs)


def test_tune_finetunes_an_exported_subnet_and_reports_its_lr(tiny_run, tmp_path, local_ray):
    from nas.distributed.tune import TuneSettings, tune_finetune
    from nas.train import load_checkpoint

    arch_id = sorted(p.name for p in (tiny_run / "export").iterdir())[0]
    settings = TuneSettings(samples=2, max_epochs=2, lr_min=1e-4, lr_max=3e-3)
    recs = tune_finetune(tiny_run, [arch_id], out_dir=tmp_path / "tuned", settings=settings,
                         workers=2, export=False, log=lambda _m: None)
    (rec,) = recs
    assert rec["arch_id"] == arch_id and rec["n_trials"] == 2
    assert 1e-4 <= rec["lr"] <= 3e-3 and rec["epochs"] in (1, 2)
    assert rec["kd_weight"] in settings.kd_weights
    chosen = [t for t in rec["trials"] if t["lr"] == rec["lr"]]
    assert chosen and chosen[0]["error_deg"] == pytest.approx(rec["error_finetuned"], abs=1e-4)
    summary = json.loads((tmp_path / "tuned" / "summary.json").read_text())
    assert summary["subnets"][0]["lr"] == rec["lr"]
    ck = load_checkpoint(tmp_path / "tuned" / f"{arch_id}.pt")
    assert ck["error_finetuned"] == rec["error_finetuned"]


def test_ray_train_two_workers_writes_a_loadable_supernet(tmp_path, local_ray):
    from nas.distributed.train import train_supernet_ray
    from nas.pipeline import load_splits
    from nas.space import SearchSpace
    from nas.train import load_supernet, train_fingerprint

    cfg = config_from_dict(copy.deepcopy(TINY_CONFIG), "tiny")
    path = train_supernet_ray(cfg, tmp_path / "out", workers=2, log=lambda _m: None)
    net, meta = load_supernet(path)
    assert meta["trainer"] == "ray-train" and meta["workers"] == 2
    space = SearchSpace.load(cfg.space)
    splits = load_splits(cfg, lambda _m: None)
    assert meta["fingerprint"] == train_fingerprint(space, splits, cfg.train, cfg.seed)
    history = json.loads(meta["history"])
    assert len(history) == cfg.train.epochs and history[-1]["workers"] == 2
    assert (tmp_path / "out" / "train" / "log.jsonl").read_text().count("\n") == cfg.train.epochs
    # the same command again reuses the finished supernet
    assert train_supernet_ray(cfg, tmp_path / "out", workers=2, log=lambda _m: None) == path


def test_ray_train_one_worker_is_the_single_process_recipe_exactly(tmp_path, local_ray):
    """Same step, same randomness, gradients averaged over one worker: the weights are
    those of `gaze-nas train` bit for bit (with 2 workers only BN statistics and float
    summation order differ)."""
    from nas.distributed.train import train_supernet_ray
    from nas.pipeline import load_splits
    from nas.space import SearchSpace
    from nas.train import load_checkpoint, train_supernet

    cfg = config_from_dict(copy.deepcopy(TINY_CONFIG), "tiny")
    ray_path = train_supernet_ray(cfg, tmp_path / "ray", workers=1, log=lambda _m: None)
    splits = load_splits(cfg, lambda _m: None)
    one = train_supernet(SearchSpace.load(cfg.space), splits, cfg.train, cfg.seed,
                         tmp_path / "one", lambda _m: None)
    a, b = load_checkpoint(ray_path), load_checkpoint(one)
    assert a["weights_hash"] == b["weights_hash"] and a["fingerprint"] == b["fingerprint"]


def test_missing_ray_is_one_line_with_the_install_command(monkeypatch):
    import builtins

    from nas.distributed import require_ray
    from nas.errors import UserError

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match=r"pip install -e '\.\[ray\]'"):
        require_ray("search.executor: ray")
