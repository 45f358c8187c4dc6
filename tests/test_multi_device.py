"""Several devices in one search (issue 7, item 4): error + one latency per device, per-device
fronts and budget picks, the joint Pareto set, the subnets good on all devices, one shared
evaluation cache. First on synthetic objectives (no torch), then end to end on the tiny space
with two tables: one profiled here, one scaled from it per block family (another device)."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY_CONFIG
from test_search import Counting as CountingCalls

from nas.search import hypervolume, make_strategy, run_search
from nas.search.devices import GOOD_SLACK, good_on_all, latency_key
from nas.search.pareto import non_dominated_mask
from nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SPACE = SearchSpace.load(ROOT / "search_spaces" / "tiny.yaml")
OBJ = ("error_deg", latency_key("cpu"), latency_key("phone"))
BUDGETS = {latency_key("cpu"): [0.5, 1.5], latency_key("phone"): [1.0, 3.0, 0.01]}


# ---------------------------------------------------------------------- synthetic
def synthetic(arch) -> dict:
    """Error falls with capacity; 'cpu' latency is a sum of op costs, 'phone' runs shuffle
    units 3x slower and pays more per pixel, so the two devices' fronts differ."""
    import hashlib

    res = arch.resolution[0] * arch.resolution[1] / (36 * 60)
    cpu, phone, cap = 0.2, 0.3, 0.0
    for w, ops in zip(arch.widths, arch.active_ops()):
        for op in ops:
            c = op.kernel ** 2 / 9 * op.expansion * w / 8
            cpu += 0.05 * c * res + 0.03
            phone += (0.15 if op.family == "shuffle" else 0.05) * c * res ** 1.5 + 0.02
            cap += c
    noise = int(hashlib.sha1(arch.arch_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return {"error_deg": 9.0 - 1.2 * np.log1p(cap * res) + 0.5 * noise,
            latency_key("cpu"): cpu, latency_key("phone"): phone,
            "params": int(cap * 1000), "macs": int(cap * res * 1e5)}


def Counting(raise_at: int | None = None) -> CountingCalls:
    """test_search's recording evaluator, on this file's three-objective problem."""
    return CountingCalls(raise_at, f=synthetic)


def search(out, evaluate, strategy="evolution", evals=40, **kw):
    opts = {"population": 12} if strategy == "evolution" else {}
    return run_search(SPACE, make_strategy(strategy, SPACE, 0, **opts), evaluate, evals=evals,
                      budgets=BUDGETS, objectives=OBJ, out_dir=out, batch=8,
                      log=lambda s: None, meta={"space": "tiny"}, **kw)


def read_json(p: Path):
    return json.loads(p.read_text())


def check_outputs(out: Path, lat_keys: tuple[str, ...]) -> None:
    """What every several-device search folder must satisfy, whatever made it."""
    devices = [k.partition("@")[2] for k in lat_keys]
    with open(out / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert set(lat_keys) <= set(rows[0])
    allF = np.array([[float(r["error_deg"])] + [float(r[k]) for k in lat_keys] for r in rows])
    joint = read_json(out / "pareto.json")
    J = np.array([[p["error_deg"]] + [p[k] for k in lat_keys] for p in joint])
    assert non_dominated_mask(J).all() and len(joint) == non_dominated_mask(allF).sum()
    joint_ids = {p["arch_id"] for p in joint}
    summary = read_json(out / "summary.json")
    assert summary["devices"] == devices and summary["front_size"] == len(joint)
    ref = [summary["hypervolume"]["reference"][k] for k in ("error_deg", *lat_keys)]
    assert summary["hypervolume"]["value"] == pytest.approx(hypervolume(allF, ref))
    picks = read_json(out / "best_per_budget.json")
    for i, (key, dev) in enumerate(zip(lat_keys, devices), start=1):
        d = out / "devices" / dev
        for f in ("pareto.json", "pareto.csv", "pareto.png", "best_per_budget.json",
                  "summary.json"):
            assert (d / f).is_file(), (dev, f)
        front = read_json(d / "pareto.json")  # the single-device format, on this device
        F = np.array([[p["error_deg"], p["latency_ms"]] for p in front])
        assert non_dominated_mask(F).all()
        assert len(front) == non_dominated_mask(allF[:, [0, i]]).sum()
        assert list(F[:, 1]) == sorted(F[:, 1])
        assert all(set(lat_keys) - {key} <= set(p) for p in front)  # other devices ride along
        best = read_json(d / "best_per_budget.json")
        assert [b["budget_ms"] for b in best] == summary["budgets_ms"][dev]
        assert [{"device": dev, **b} for b in best] == [p for p in picks if p["device"] == dev]
        for b in best:
            fits = allF[allF[:, i] <= b["budget_ms"]]
            if b["arch_id"] is None:
                assert len(fits) == 0
                continue
            assert b["latency_ms"] <= b["budget_ms"] and b["error_deg"] == fits[:, 0].min()
            assert b["arch_id"] in joint_ids  # a device's pick is optimal on all at once too
        assert {p["arch_id"] for p in front} <= joint_ids
    good = read_json(out / "good_on_all.json")
    assert {g["arch_id"] for g in good} <= joint_ids
    for g in good:
        assert set(g["latency_gap"]) == set(devices)
        assert all(0 <= v <= GOOD_SLACK + 1e-9 for v in g["latency_gap"].values())


def test_synthetic_two_devices_write_per_device_and_joint_outputs(tmp_path):
    ev = Counting()
    res = search(tmp_path, ev, evals=48)
    assert len(ev.calls) == 48 == len(set(ev.calls))  # one evaluation serves every device
    check_outputs(tmp_path, OBJ[1:])
    assert set(res["devices"]) == {"cpu", "phone"}
    fronts = [{p["arch_id"] for p in res["devices"][d]["front"]} for d in ("cpu", "phone")]
    assert fronts[0] != fronts[1]  # the devices disagree, so the joint set is a real union
    assert res["summary"]["budgets_ms"] == {"cpu": [0.5, 1.5], "phone": [1.0, 3.0, 0.01]}
    unmet = [b for b in res["best_per_budget"] if b["arch_id"] is None]
    assert [(b["device"], b["budget_ms"]) for b in unmet] == [("phone", 0.01)]


def test_good_on_all_is_within_the_slack_of_every_device_front():
    F = np.array([[3.0, 1.0, 1.0],     # on both fronts
                  [2.0, 2.0, 5.0],     # fastest of its accuracy on cpu, 25 % slower on phone
                  [2.0, 2.1, 4.0],     # 5 % slower on cpu, fastest on phone
                  [1.0, 9.0, 9.0]])
    got = dict(good_on_all(F, range(4)))
    assert set(got) == {0, 2, 3}
    assert got[0] == [0.0, 0.0] and got[2] == pytest.approx([0.05, 0.0])


@pytest.mark.parametrize("m", [3, 4])
def test_hypervolume_matches_pymoo(m):
    pytest.importorskip("pymoo", reason="pymoo is in the dev extra")
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(m)
    F, ref = rng.random((40, m)), np.full(m, 1.1)
    assert hypervolume(F, ref) == pytest.approx(HV(ref_point=ref)(F), abs=1e-12)
    assert hypervolume(F[:, :2], ref[:2]) == pytest.approx(HV(ref_point=ref[:2])(F[:, :2]))


@pytest.mark.parametrize("strategy", ["random", "optuna-tpe", "optuna-nsga2", "nni-tpe"])
def test_every_strategy_searches_several_devices(tmp_path, strategy):
    if strategy.startswith("nni-"):
        pytest.importorskip("nni", reason="the nni-* strategies need the [nni] extra")
    ev = Counting()
    search(tmp_path, ev, strategy=strategy, evals=16)
    assert len(ev.calls) == 16 == len(set(ev.calls))
    check_outputs(tmp_path, OBJ[1:])
    if strategy.startswith("optuna-"):
        import optuna

        (study,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
        trials = optuna.load_study(study_name=study.study_name,
                                   storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
        done = [t for t in trials if t.state.name == "COMPLETE"]
        assert done and all(len(t.values) == 3 for t in done)
        for t in done:  # each device's largest budget is its own constraint
            for i, key in enumerate(OBJ[1:], start=1):
                assert t.system_attrs[f"constraints:latency_over_largest_budget_ms:{key}"] == \
                    pytest.approx(t.values[i] - max(BUDGETS[key]))


def test_several_devices_resume_to_the_uninterrupted_outputs(tmp_path):
    search(tmp_path / "ref", Counting())
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "run", Counting(raise_at=13))
    second = Counting()
    search(tmp_path / "run", second)
    assert len(second.calls) == 40 - 13
    for f in ("pareto.json", "good_on_all.json", "best_per_budget.json",
              "devices/phone/pareto.json", "devices/cpu/best_per_budget.json"):
        assert (tmp_path / "run" / f).read_text() == (tmp_path / "ref" / f).read_text(), f


def test_budgets_must_say_which_device_they_belong_to(tmp_path):
    with pytest.raises(ValueError, match="map each of them"):
        run_search(SPACE, make_strategy("random", SPACE, 0), synthetic, evals=4,
                   budgets=[1.0], objectives=OBJ, out_dir=tmp_path, log=lambda s: None)
    with pytest.raises(ValueError, match="not one of the latency objectives"):
        run_search(SPACE, make_strategy("random", SPACE, 0), synthetic, evals=4,
                   budgets={"latency_ms@tablet": [1.0]}, objectives=OBJ, out_dir=tmp_path,
                   log=lambda s: None)


# ---------------------------------------------------------------------- budgets and tables
def scaled_table(src: Path, dst: Path, device: str, factors: dict[str, float]) -> Path:
    """Another device: `src` with each block family's entries scaled by its factor."""
    data = yaml.safe_load(src.read_text())
    data["meta"]["device"] = device
    for key, e in data["entries"].items():
        f = factors.get(key.partition("|")[0], 1.0)
        for k in ("p50_ms", "mean_ms"):
            if k in e:
                e[k] *= f
    dst.write_text(yaml.safe_dump(data))
    return dst


def test_budget_specs_resolve_per_device(tmp_path, tiny_space):
    from nas.errors import UserError
    from nas.latency.keys import all_keys
    from nas.latency.table import LatencyTable
    from nas.multidevice import devices_of, parse_budget, split_budgets

    assert parse_budget("0.5", float) == 0.5
    assert parse_budget("a:0.1,0.2", float) == ("a", [0.1, 0.2])
    assert split_budgets([0.5, ("a", [0.1]), ("a", [0.2])]) == ([0.5], {"a": [0.1, 0.2]})
    assert split_budgets({"a": [1]}) == ([], {"a": [1.0]})
    t = {"meta": {"device": "a"}, "space_hash": [tiny_space.space_hash()],
         "entries": {k: {"p50_ms": 0.01} for k in all_keys(tiny_space)}}
    a = LatencyTable.from_dict(t, path=tmp_path / "table-a.yaml")
    b = LatencyTable.from_dict({**t, "meta": {"device": "b"}}, path=tmp_path / "table-b.yaml")
    two, one = devices_of([a, b]), devices_of([a])
    auto = two.budgets([], tiny_space, 0)
    assert set(auto) == {"a", "b"} and all(len(v) == 3 for v in auto.values())
    assert two.budgets([1.0], tiny_space, 0) == {"a": [1.0], "b": [1.0]}
    assert two.budgets([1.0, ("table-b", [2.0])], tiny_space, 0) == {"a": [1.0], "b": [2.0]}
    assert one.budgets([1.0, 2.0], tiny_space, 0) == [1.0, 2.0]  # one table: a plain list
    assert one.budgets([("a", [3.0])], tiny_space, 0) == [3.0]
    with pytest.raises(UserError, match="no table for device 'c'"):
        two.budgets([("c", [1.0])], tiny_space, 0)


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def two_tables(tmp_path_factory):
    """A tiny run (its table profiled here: device A) and device B scaled from it: shuffle
    units 3x slower, MBConv 2x, the rest as A, so the fronts differ."""
    from nas.cli import main

    d = tmp_path_factory.mktemp("multi")
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_CONFIG))
    assert main(["run", str(cfg), "--out", str(d / "run")]) == 0
    a = next((d / "run" / "latency").glob("*.yaml"))
    b = scaled_table(a, d / "phone-b.yaml", "phone-b", {"shuffle": 3.0, "mbconv": 2.0})
    return d / "run", a, b


def cache_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval_cache.jsonl").read_text().splitlines()]


def test_cli_two_device_search(two_tables, tmp_path, capsys, monkeypatch):
    from nas.cli import main
    from nas.evaluation import SubnetEvaluator
    from nas.latency.table import LatencyTable

    run, a, b = two_tables
    computed: list[str] = []
    original = SubnetEvaluator.subnet

    def counting(self, arch):
        computed.append(arch.arch_id)
        return original(self, arch)

    monkeypatch.setattr(SubnetEvaluator, "subnet", counting)
    before = cache_rows(run)
    dev_a = yaml.safe_load(a.read_text())["meta"]["device"]
    capsys.readouterr()
    rc = main(["search", "--run", str(run), "--lut", str(a), "--lut", str(b), "--evals", "20",
               "--json", "--out", str(tmp_path / "s"), "--budget-ms", "1000",
               "phone-b:1000,1e-6"])
    assert rc == 3  # phone-b's 1e-6 ms budget cannot be met
    js = json.loads(capsys.readouterr().out)
    assert js["unmet_budgets_ms"] == ["phone-b:1e-06"]
    assert set(js["devices"]) == {dev_a, "phone-b"} and js["n_trials"] == 20
    check_outputs(tmp_path / "s", (latency_key(dev_a), latency_key("phone-b")))
    summary = read_json(tmp_path / "s" / "summary.json")
    assert summary["budgets_ms"] == {dev_a: [1000.0], "phone-b": [1000.0, 1e-6]}
    assert summary["hypervolume"]["rule"].startswith("fixed:")

    # every trial carries both tables' predictions; each error was computed once, for both
    tables = {dev_a: LatencyTable.load(a), "phone-b": LatencyTable.load(b)}
    with open(tmp_path / "s" / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        arch = SPACE.parse(r["arch"])
        for dev, t in tables.items():
            assert float(r[latency_key(dev)]) == round(t.predict(SPACE, arch), 5)
    after = cache_rows(run)
    new = after[len(before):]
    assert len(computed) == len(set(computed)) == len(new) == js["evaluated_now"]
    assert len({r["arch_id"] for r in after}) == len(after)  # no subnet evaluated twice
    assert js["evaluated_now"] <= 20 - len(read_json(tmp_path / "s" / "devices" / dev_a
                                                     / "seeds.json")["seeds"])

    # the same search again: nothing is evaluated, the outputs are rewritten identically
    joint = (tmp_path / "s" / "pareto.json").read_text()
    capsys.readouterr()
    assert main(["search", "--run", str(run), "--lut", str(a), "--lut", str(b), "--evals", "20",
                 "--out", str(tmp_path / "s"), "--budget-ms", "1000", "phone-b:1000,1e-6"]) == 0
    text = capsys.readouterr().out
    assert "good on all 2 devices" in text and "phone-b <= 1e-06 ms: none" in text
    assert (tmp_path / "s" / "pareto.json").read_text() == joint
    assert len(cache_rows(run)) == len(after)


def test_cli_one_table_keeps_the_single_device_outputs(two_tables, tmp_path):
    from nas.cli import main

    run, a, _ = two_tables
    assert main(["search", "--run", str(run), "--lut", str(a), "--evals", "8",
                 "--out", str(tmp_path / "s"), "--budget-ms", "1000"]) == 0
    front = read_json(tmp_path / "s" / "pareto.json")
    assert front and all({"error_deg", "latency_ms"} <= set(p) for p in front)
    assert not (tmp_path / "s" / "devices").exists()
    assert not (tmp_path / "s" / "good_on_all.json").exists()
    assert read_json(tmp_path / "s" / "summary.json")["objectives"] == ["error_deg", "latency_ms"]
    assert "luts" not in read_json(run / "run_config.json")["latency"]  # as before luts existed


@pytest.mark.parametrize("case", ["same-file", "same-content", "other-space", "mixed-spaces",
                                  "same-device", "unknown-budget-device", "bad-budget"])
def test_bad_tables_and_budgets_are_one_line_exit_2(two_tables, tmp_path, capsys, case):
    from nas.cli import main

    run, a, b = two_tables
    luts, budgets, want = [a, b], [], []
    if case == "same-file":
        luts, want = [a, b, a], [str(a), "--lut", "same latency table"]
    elif case == "same-content":
        twin = tmp_path / "twin.yaml"
        shutil.copy(a, twin)
        luts, want = [a, twin], [str(twin), "same latency table"]
    elif case == "other-space":
        data = yaml.safe_load(b.read_text())
        data["space_hash"] = ["0000"]
        data["entries"] = dict(list(data["entries"].items())[:10])
        other = tmp_path / "other.yaml"
        other.write_text(yaml.safe_dump(data))
        luts, want = [a, other], [str(other), "space_hash", "does not cover"]
    elif case == "mixed-spaces":  # a table of the default space, which lacks tiny's layers
        gaze_eye = ROOT / "latency_tables" / "intel-xeon-2c.yaml"
        luts, want = [a, gaze_eye], [str(gaze_eye), "space_hash"]
    elif case == "same-device":
        again = scaled_table(b, tmp_path / "b2.yaml", "phone-b", {"shuffle": 5.0})
        luts, want = [a, b, again], [str(again), "meta.device", "phone-b"]
    elif case == "unknown-budget-device":
        budgets, want = ["--budget-ms", "tablet:1"], ["--budget-ms", "no table for device"]
    elif case == "bad-budget":
        budgets, want = ["--budget-ms", "phone-b:fast"], ["--budget-ms", "fast"]
    args = ["search", "--run", str(run), "--evals", "4", "--out", str(tmp_path / "s")]
    for lut in luts:
        args += ["--lut", str(lut)]
    capsys.readouterr()
    assert main(args + budgets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for w in want:
        assert w in err[0], (w, err[0])
    assert not (tmp_path / "s" / "trials.csv").exists()  # refused before any work


def test_config_two_device_run_reports_each_device(two_tables, tmp_path):
    from nas.cli import main

    run, a, b = two_tables
    out = tmp_path / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns(".lock"))
    c = copy.deepcopy(TINY_CONFIG)
    c["latency"]["luts"] = [str(a), str(b)]
    c["search"]["budgets_ms"] = {"phone-b": [0.5, 5.0]}
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump(c))
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    m = read_json(out / "manifest.json")
    dev_a = yaml.safe_load(a.read_text())["meta"]["device"]
    assert m["device"] == f"{dev_a}+phone-b" and m["lut_path"] == [str(a), str(b)]
    assert m["stage_status"]["train"] == "reused"  # a new table never retrains
    assert set(m["budgets_ms"]) == {dev_a, "phone-b"} and m["budgets_ms"]["phone-b"] == [0.5, 5.0]
    assert len(m["budgets_ms"][dev_a]) == 3  # none given for A: its automatic three
    assert set(m["lut_fidelity"]) == {dev_a, "phone-b"}
    check_outputs(out / "search", (latency_key(dev_a), latency_key("phone-b")))
    picks = {b["arch_id"] for b in read_json(out / "search" / "best_per_budget.json")
             if b.get("arch_id")}
    cards = {read_json(p)["arch_id"]: read_json(p) for p in (out / "export").glob("*/card.json")}
    assert set(cards) == picks  # every device's picks exported, each once
    for card in cards.values():
        assert set(card["latency_ms_predicted"]) == {dev_a, "phone-b"}
    report = (out / "report.md").read_text()
    for text in (f"## Device `{dev_a}`", "## Device `phone-b`", "## Good on all devices",
                 "## Joint Pareto set", "search/devices/phone-b/pareto.png"):
        assert text in report, text


@pytest.mark.parametrize("patch,field,text", [
    (lambda c, a, b: c["latency"].update(lut=str(a), luts=[str(a), str(b)]), "latency.luts",
     "not both"),
    (lambda c, a, b: c["latency"].update(luts=[str(a), str(b)]) or
     c["search"].update(budgets_ms={"tablet": [1.0]}), "search.budgets_ms", "tablet"),
    (lambda c, a, b: c["latency"].update(luts=[str(a), str(b)]) or
     c.update(baselines={"enabled": True}), "baselines.enabled", "several"),
    (lambda c, a, b: c["latency"].update(luts=[str(a), str(a)]), "latency.luts", "same"),
    (lambda c, a, b: c["latency"].update(luts=[str(a), 3]), "latency.luts", "file paths"),
    (lambda c, a, b: c["search"].update(budgets_ms={"phone-b": [1.0]}), "search.budgets_ms",
     "latency.luts"),
])
def test_config_mistakes_are_one_line_before_any_work(two_tables, tmp_path, capsys, patch,
                                                      field, text):
    from nas.cli import main

    _, a, b = two_tables
    c = copy.deepcopy(TINY_CONFIG)
    patch(c, a, b)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(c))
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and text in err[0], err
    assert not (tmp_path / "o" / "supernet.pt").exists()
