"""End to end on the tiny space: run, interrupt, resume; CLI contract; config errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from conftest import TINY_CONFIG

from nas.cli import main
from nas.config import load_config
from nas.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

CONFIG = TINY_CONFIG


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One full run of the tiny config, shared by the tests below."""
    d = tmp_path_factory.mktemp("run")
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    rc = main(["run", str(cfg), "--out", str(d / "out")])
    assert rc == 0
    return d / "out", cfg


def test_run_writes_every_artifact(tiny_run):
    out, _ = tiny_run
    m = json.loads((out / "manifest.json").read_text())
    for k in ("config", "seeds", "versions", "hashes", "stage_seconds"):
        assert k in m
    assert set(m["hashes"]) >= {"space", "supernet", "lut"}
    front = json.loads((out / "search" / "pareto.json").read_text())
    assert front and all({"arch_id", "arch", "error_deg", "latency_ms", "params", "macs"}
                         <= set(p) for p in front)
    for name in ("trials.csv", "pareto.csv", "pareto.png"):
        assert (out / "search" / name).exists()
    assert (out / "report.md").read_text().count("mean gaze") == 1
    cards = list((out / "export").glob("*/card.json"))
    assert cards
    for c in cards:
        sess = ort.InferenceSession(str(c.parent / "model.onnx"))
        card = json.loads(c.read_text())
        x = np.random.rand(2, *card["input"]["shape"][1:]).astype(np.float32)
        assert sess.run(None, {"input": x})[0].shape == (2, 2)


def test_every_budget_exported_once_with_finetune_record(tiny_run):
    out, _ = tiny_run
    best = json.loads((out / "search" / "best_per_budget.json").read_text())
    picked = {b["arch_id"] for b in best if b.get("arch_id")}
    cards = {json.loads(c.read_text())["arch_id"]: json.loads(c.read_text())
             for c in (out / "export").glob("*/card.json")}
    assert set(cards) == picked  # one export per distinct pick, none missing
    for c in cards.values():
        assert c["weights"] in ("finetuned", "inherited")
        assert c["error_finetuned_deg"] is not None
        assert c["error_deg"] == min(c["error_finetuned_deg"], c["error_inherited_deg"])
        assert sorted(c["budgets_ms"]) == sorted(b["budget_ms"] for b in best
                                                 if b.get("arch_id") == c["arch_id"])
    report = (out / "report.md").read_text()
    assert "fine-tuned (deg)" in report
    if len(picked) < len([b for b in best if b.get("arch_id")]):
        assert "share" in report


def test_baselines_trained_timed_and_compared(tiny_run, monkeypatch):
    out, cfg = tiny_run
    c = yaml.safe_load(cfg.read_text())
    c["baselines"] = {"lr_sweep": False, "workers": 1}
    cfg2 = cfg.parent / "tiny_bl.yaml"
    cfg2.write_text(yaml.safe_dump(c))
    assert main(["baselines", str(cfg2), "--out", str(out)]) == 0
    rows = json.loads((out / "baselines.json").read_text())
    names = {r["name"] for r in rows}
    assert {"resnet4", "shufflenet4", "ghost4-d1", "ghost4-d7", "mobilenetv3s"} <= names
    front = json.loads((out / "search" / "front_measured.json").read_text())
    for r in rows:
        assert {"name", "arch", "error_deg", "latency_ms", "params", "macs"} <= set(r)
        assert r["latency_ms"] > 0 and np.isfinite(r["error_deg"])
        for arch_id in r["dominated_by"]:  # dominance is real: lower error AND latency
            p = next(f for f in front if f["arch_id"] == arch_id)
            assert p["error_deg"] < r["error_deg"] and p["latency_ms"] < r["latency_ms"]
    report = (out / "report.md").read_text()
    assert "Hand-designed baselines" in report and "resnet4" in report
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage_status"]["train"] == "reused" and m["stage_status"]["baselines"] == "ran"


def test_rerun_reuses_finished_stages(tiny_run, capsys):
    out, cfg = tiny_run
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage_status"]["train"] == "reused"
    assert m["stage_status"]["latency"] == "reused"
    assert m["stage_status"]["validate"] == "reused"


def test_search_after_interruption_resumes(tiny_run, monkeypatch):
    out, _ = tiny_run
    lut = next((out / "latency").glob("*.yaml"))
    import nas.evaluation as ev

    real = ev.SubnetEvaluator.evaluate
    calls = {"n": 0}

    def flaky(self, arch):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(self, arch)

    monkeypatch.setattr(ev.SubnetEvaluator, "evaluate", flaky)
    s_out = out / "s2"
    args = ["search", "--run", str(out), "--lut", str(lut), "--strategy", "random",
            "--evals", "12", "--seed", "3", "--out", str(s_out), "--budget-ms", "1", "10"]
    assert main(args) == 130
    monkeypatch.setattr(ev.SubnetEvaluator, "evaluate", real)
    assert main(args) == 0
    rows = (s_out / "trials.csv").read_text().strip().splitlines()[1:]
    ids = [r.split(",")[1] for r in rows]
    assert len(ids) == 12 == len(set(ids))


def test_cli_validate_json_and_export(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    lut = next((out / "latency").glob("*.yaml"))
    capsys.readouterr()
    assert main(["lut", "validate", str(lut), "--space", str(ROOT / "search_spaces" / "tiny.yaml"),
                 "--samples", "4", "--rounds", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) >= {"mape", "within_5", "within_10", "kendall_tau", "n"}
    front = json.loads((out / "search" / "pareto.json").read_text())
    cache = (out / "eval_cache.jsonl").read_bytes()
    assert main(["export", "--run", str(out), "--arch", front[0]["arch_id"],
                 "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "model.onnx").exists() and (tmp_path / "e" / "card.json").exists()
    card = json.loads((tmp_path / "e" / "card.json").read_text())
    assert card["error_deg"] == pytest.approx(front[0]["error_deg"], abs=1e-3)  # the run's error
    assert (out / "eval_cache.jsonl").read_bytes() == cache  # read, never written by export


def test_cli_finetune_exports_better_of_two(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    arch_id = json.loads((out / "search" / "pareto.json").read_text())[-1]["arch_id"]
    assert main(["finetune", "--run", str(out), "--arch", arch_id, "--epochs", "1",
                 "--out", str(tmp_path / "ft")]) == 0
    card = json.loads((tmp_path / "ft" / "card.json").read_text())
    assert card["weights"] == ("finetuned" if card["error_finetuned_deg"]
                               < card["error_inherited_deg"] else "inherited")
    assert card["finetune"]["epochs"] == 1
    assert main(["finetune", "--run", str(out), "--arch", arch_id, "--epochs", "0",
                 "--out", str(tmp_path / "ft2")]) == 2


def test_lut_for_another_space_is_refused(tiny_run, capsys):
    out, _ = tiny_run
    lut = next((out / "latency").glob("*.yaml"))
    capsys.readouterr()
    rc = main(["lut", "validate", str(lut), "--space",
               str(ROOT / "search_spaces" / "gaze_eye.yaml"), "--samples", "4"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(lut) in err and "space_hash" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("patch,field", [
    (lambda c: c.pop("name"), "name"),
    (lambda c: c["train"].update(epochs="many"), "train.epochs"),
    (lambda c: c["train"].update(optimizer="sgd"), "train.optimizer"),
    (lambda c: c["search"].update(budgets_ms=[-1]), "search.budgets_ms"),
    (lambda c: c.update(space="nowhere.yaml"), "space"),
    (lambda c: c["data"].update(source="mpiigazee"), "data.source"),
])
def test_malformed_config_names_file_and_field(tmp_path, patch, field):
    c = json.loads(json.dumps(CONFIG))
    patch(c)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(c))
    with pytest.raises(UserError) as e:
        load_config(p)
    assert str(p) in str(e.value) and field in str(e.value)


def test_cli_exit_code_2_without_traceback(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: [oops\n")
    r = subprocess.run([sys.executable, "-m", "nas.cli", "run", str(p)], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and str(p) in r.stderr


def test_search_options_and_storage_reach_the_strategy(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    lut = next((out / "latency").glob("*.yaml"))
    db = tmp_path / "shared.db"
    args = ["search", "--run", str(out), "--lut", str(lut), "--strategy", "optuna-nsga2",
            "--option", "population=4", "--storage", f"sqlite:///{db}", "--evals", "8",
            "--out", str(tmp_path / "s"), "--budget-ms", "1"]
    assert main(args) == 0
    import optuna

    (study,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    assert study.n_trials >= 8
    state = json.loads((tmp_path / "s" / "strategy_state.json").read_text())
    assert state["strategy"] == "optuna-nsga2"
    capsys.readouterr()
    bad = args[:7] + ["--option", "popsize=4"] + args[9:]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "population" in err[0]


def test_search_help_lists_every_strategy(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    for name in ("evolution", "random", "optuna-tpe", "optuna-nsga2", "optuna-gp", "nni-tpe"):
        assert name in text


def test_config_search_options_are_checked_before_training(tmp_path, capsys):
    c = yaml.safe_load(yaml.safe_dump(CONFIG))
    c["search"]["options"] = {"populaton": 8}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(c))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "population" in err[0]
    assert not (tmp_path / "o" / "supernet.pt").exists()


def test_re_search_on_a_new_table_warm_starts_from_cached_errors(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    data = yaml.safe_load(next((out / "latency").glob("*.yaml")).read_text())
    for key, e in data["entries"].items():  # another device: shuffle blocks 3x slower
        if key.startswith("shuffle"):
            for k in ("p50_ms", "ms", "mean_ms"):
                if k in e:
                    e[k] *= 3
    lut = tmp_path / "phone.yaml"
    lut.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    rc = main(["search", "--run", str(out), "--lut", str(lut), "--evals", "12", "--json",
               "--out", str(tmp_path / "s"), "--budget-ms", "1000"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    seeds = json.loads((tmp_path / "s" / "seeds.json").read_text())["seeds"]
    assert seeds and summary["n_trials"] == 12
    assert summary["evaluated_now"] <= 12 - len(seeds)  # the seeds' errors came from the cache
    assert summary["unmet_budgets_ms"] == []
    rc = main(["search", "--run", str(out), "--lut", str(lut), "--evals", "12", "--json",
               "--out", str(tmp_path / "s2"), "--budget-ms", "1e-6"])
    assert rc == 3 and json.loads(capsys.readouterr().out)["unmet_budgets_ms"] == [1e-6]


def test_re_search_screens_and_exports_in_one_command(tiny_run, tmp_path, capsys):
    """`--screen 4 --export DIR`: the predictor learns from the cache (rows frozen in the
    search folder), every reported error is measured (the cache's or a new evaluation),
    and each budget's pick is exported in the same process with a card and ONNX."""
    out, _ = tiny_run
    lut = next((out / "latency").glob("*.yaml"))
    capsys.readouterr()
    rc = main(["search", "--run", str(out), "--lut", str(lut), "--evals", "14", "--json",
               "--screen", "4", "--out", str(tmp_path / "s"), "--export", str(tmp_path / "x")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    rows = json.loads((tmp_path / "s" / "screen_rows.json").read_text())["rows"]
    assert len(rows) >= 10
    cache = {json.loads(line)["arch_id"]: json.loads(line) for line in
             (out / "eval_cache.jsonl").read_text().splitlines()}
    for p in json.loads((tmp_path / "s" / "pareto.json").read_text()):
        assert cache[p["arch_id"]]["error_deg"] == pytest.approx(p["error_deg"], abs=1e-4)
    picks = {b["arch_id"] for b in summary["best_per_budget"] if b.get("arch_id")}
    assert picks and {e["arch_id"] for e in summary["exported"]} == picks
    for e in summary["exported"]:
        card = json.loads((Path(e["path"]) / "card.json").read_text())
        assert card["weights"] == "inherited" and (Path(e["path"]) / "model.onnx").is_file()
    state = json.loads((tmp_path / "s" / "strategy_state.json").read_text())
    assert "screened" in json.dumps(state)
