"""The latency side of a search, for one latency table or several (`--lut A --lut B`,
`latency.luts: [A, B]`): which tables, what each device is called, its budgets, and what a
search row holds. One table keeps the classic error-latency search exactly as it was; several
make an (error, latency on each device) search whose outputs `nas.search.devices` writes.

Errors do not depend on the device, so a subnet is evaluated once (one evaluator, one
`eval_cache.jsonl`) and its row carries every device's predicted latency.

Budgets (`--budget-ms`, `search.budgets_ms`): plain numbers apply to every device (a frame
budget shared by all phones); `DEVICE:B1,B2` on the command line, or a mapping
`{DEVICE: [B1, B2]}` in a config, gives one device its own; a device given none gets the
automatic three (log-spaced between its smallest and largest subnet). DEVICE is the table's
`meta.device` or its file name without `.yaml`.

Sits beside the pipeline (as `nas.distributed` does): it uses the pipeline's table hash,
search row, warm start and hypervolume reference for each table, imported when called.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas.errors import UserError, excerpt, safe_name
from nas.gaze.tasks import get_task
from nas.io import json_hash
from nas.latency.table import LatencyTable
from nas.search.devices import latency_key
from nas.space import Arch, SearchSpace

MAX_DEVICES = 8  # the joint hypervolume grows fast with its dimension
HV_RULE_DEVICES = ("fixed: error = the mean-gaze error on the validation set, latency on each "
                   "device = 1.1 x that device's table's prediction for the space's largest "
                   "subnet (one axis per device)")
FIDELITY = ("mape", "within_5", "within_10", "kendall_tau", "n")  # the manifest's figures


class Devices:
    """The latency side of a search: what `OneTable` and `SeveralTables` share. Build one
    with `devices_of` (or `as_devices`, `load_devices`)."""

    latency_keys: tuple[str, ...]
    hv_rule: str

    def __init__(self, tables: Sequence[LatencyTable], labels: Sequence[str] | None = None):
        self.tables = list(tables)
        self.labels = list(labels or [t.device for t in self.tables])

    @property
    def single(self) -> bool:
        return len(self.tables) == 1

    def objectives(self, space: SearchSpace) -> tuple[str, ...]:
        """The minimised keys: the space's task's error (`error_deg`, pog2d `error_cm`),
        then each latency."""
        return (get_task(space.task).error_key, *self.latency_keys)

    def budgets(self, spec: Any, space: SearchSpace, seed: int, field: str = "--budget-ms",
                source: str | None = None) -> dict[str, list[float]]:
        """{device: budgets} from a spec of plain numbers (every device) and per-device
        entries (module docstring); a device given none gets the automatic three. An entry
        naming no table is refused."""
        from nas.pipeline import auto_budgets

        common, per = split_budgets(spec)
        names = {}
        for d, t in zip(self.labels, self.tables):
            names[d] = d
            if t.path is not None:
                names.setdefault(Path(t.path).stem, d)
        unknown = [k for k in per if k not in names]
        if unknown:
            raise UserError(f"no table for device {excerpt(unknown[0])}; the devices are "
                            f"{', '.join(self.labels)} (or their tables' file names)",
                            source=source, field=field)
        mine = {names[k]: v for k, v in per.items()}
        return {d: mine.get(d) or list(common) or auto_budgets(space, t, seed)
                for d, t in zip(self.labels, self.tables)}

    def latencies(self, space: SearchSpace, arch: Arch) -> tuple[float, ...]:
        """The arch's predicted latency on each device, in objective order (what a
        screened search scores candidates by before measuring their error)."""
        return tuple(t.predict(space, arch) for t in self.tables)

    def fastest(self, space: SearchSpace) -> list[Arch]:
        """Each device's fastest arch on its table (`nas.search.extremes`), once each."""
        from nas.search.extremes import fastest_arch

        out: dict[str, Arch] = {}
        for t in self.tables:
            a = fastest_arch(space, lambda arch, t=t: t.predict(space, arch))
            out.setdefault(a.arch_id, a)
        return list(out.values())

    def hv_reference(self, space: SearchSpace, splits) -> tuple[float, ...]:
        """The fixed reference point: the mean-gaze error, then 1.1 x each table's
        prediction for the largest subnet (`nas.pipeline.hv_reference` per table)."""
        from nas.pipeline import hv_reference

        refs = [hv_reference(space, t, splits) for t in self.tables]
        return (refs[0][0], *(r[1] for r in refs))


class OneTable(Devices):
    """One table: the classic (error, latency_ms) search, every output as it always was."""

    latency_keys = ("latency_ms",)

    @property
    def table(self) -> LatencyTable:
        return self.tables[0]

    @property
    def hash(self) -> str:
        from nas.pipeline import table_hash

        return table_hash(self.table)

    @property
    def device(self) -> str:
        return self.table.meta.get("device")

    @property
    def path(self) -> str:
        return str(self.table.path)

    @property
    def hv_rule(self) -> str:  # type: ignore[override]
        from nas.pipeline import HV_RULE

        return HV_RULE

    def budgets(self, spec: Any, space: SearchSpace, seed: int, field: str = "--budget-ms",
                source: str | None = None) -> list[float]:  # type: ignore[override]
        """The given budgets, else the automatic three: a plain list, as always."""
        return super().budgets(spec, space, seed, field, source)[self.labels[0]]

    def by_objective(self, budgets: list[float]) -> list[float]:
        return budgets

    def search_row(self, space: SearchSpace, arch: Arch, row: dict) -> dict:
        from nas.pipeline import search_row

        return search_row(space, self.table, arch, row)

    def meta(self) -> dict[str, Any]:
        return {"lut": self.hash, "device": self.device}

    def warm_start(self, ev, space: SearchSpace, out_dir: Path, cap: int) -> list[Arch]:
        from nas.pipeline import warm_start_seeds

        return warm_start_seeds(ev, space, self.table, out_dir, cap)

    def card_fields(self, pick: dict) -> dict[str, Any]:
        return {"latency_ms_predicted": pick["latency_ms"], "device": self.device}

    def fidelity(self, report: dict) -> dict[str, Any]:
        return {k: report.get(k) for k in FIDELITY}


class SeveralTables(Devices):
    """Several tables: error + one `latency_ms@<device>` objective per device."""

    hv_rule = HV_RULE_DEVICES

    @property
    def latency_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(latency_key(d) for d in self.labels)

    @property
    def hash(self) -> str:
        from nas.pipeline import table_hash

        return json_hash({d: table_hash(t) for d, t in zip(self.labels, self.tables)})

    @property
    def device(self) -> str:
        """The devices joined by '+' (titles, logs, the manifest's `device`)."""
        return "+".join(self.labels)

    @property
    def path(self) -> list[str]:
        return [str(t.path) for t in self.tables]

    def by_objective(self, budgets: dict[str, list[float]]) -> dict[str, list[float]]:
        """Budgets as `run_search` takes them: per latency objective."""
        return {latency_key(d): list(budgets[d]) for d in self.labels}

    def search_row(self, space: SearchSpace, arch: Arch, row: dict) -> dict:
        """What the search sees of an evaluator row: the error once, every device's
        latency, params, MACs and the `_reused` / `_seconds` signals."""
        lat = {latency_key(d): round(t.predict(space, arch), 5)
               for d, t in zip(self.labels, self.tables)}
        err = get_task(space.task).error_key
        out = {k: row[k] for k in (err,) if k in row} | lat
        return out | {k: row[k] for k in ("params", "macs", "_reused", "_seconds") if k in row}

    def meta(self) -> dict[str, Any]:
        """What a search records of its tables (and resumes only with the same)."""
        return {"lut": self.hash, "device": self.device, "devices": list(self.labels)}

    def warm_start(self, ev, space: SearchSpace, out_dir: Path, cap: int) -> list[Arch]:
        """Each device's warm-start seeds (kept in `devices/<device>/seeds.json`), fastest
        first per device, interleaved without repeats up to `cap`."""
        from nas.pipeline import warm_start_seeds

        per = [warm_start_seeds(ev, space, t, out_dir / "devices" / d, cap)
               for d, t in zip(self.labels, self.tables)]
        seen: dict[str, Arch] = {}
        for i in range(max(map(len, per), default=0)):
            for seeds in per:
                if i < len(seeds) and len(seen) < cap:
                    seen.setdefault(seeds[i].arch_id, seeds[i])
        return list(seen.values())

    def card_fields(self, pick: dict) -> dict[str, Any]:
        """Every device's predicted latency (a budget pick holds its own device's as
        `latency_ms`, the others' as `latency_ms@<device>`) and the devices."""
        lat = {d: pick["latency_ms"] if pick.get("device") == d else pick.get(latency_key(d))
               for d in self.labels}
        return {"latency_ms_predicted": lat, "device": list(self.labels)}

    def fidelity(self, report: dict) -> dict[str, Any]:
        """{device: its table's figures}."""
        return {d: {k: (report.get(d) or {}).get(k) for k in FIDELITY} for d in self.labels}


def devices_of(tables: Sequence[LatencyTable], labels: Sequence[str] | None = None) -> Devices:
    """`OneTable` for one table, `SeveralTables` for more."""
    return (OneTable if len(tables) == 1 else SeveralTables)(tables, labels)


def as_devices(table: Any) -> Devices:
    """The `Devices` of one LatencyTable, a list of them, or a `Devices` (unchanged)."""
    if isinstance(table, Devices):
        return table
    return devices_of([table] if isinstance(table, LatencyTable) else list(table))


def load_devices(paths: Sequence[str | Path], space: SearchSpace, *, field: str = "--lut",
                 source: str | None = None) -> Devices:
    """Load and check the tables of one search: each covers `space` (as one table must),
    none twice (same file or same content), each device named once by a plain name (it
    names an output folder). Every refusal is one line naming the file and field."""
    paths = list(paths)
    if not paths:
        raise UserError("expected at least one latency table", source=source, field=field)
    if len(paths) > MAX_DEVICES:
        raise UserError(f"expected at most {MAX_DEVICES} latency tables, got {len(paths)}",
                        source=source, field=field)
    tables: list[LatencyTable] = []
    seen: dict[str, str] = {}
    devices: dict[str, str] = {}
    for p in paths:
        t = LatencyTable.load(p)
        t.check_space(space)
        if len(paths) == 1:
            return OneTable([t])
        from nas.pipeline import table_hash

        h = table_hash(t)
        same = seen.get(str(Path(p).resolve())) or seen.get(h)
        if same is not None:
            raise UserError(f"the same latency table as {same} (same file or identical "
                            f"entries, correction and device); give each device once",
                            source=str(p), field=field)
        seen[str(Path(p).resolve())] = seen[h] = str(p)
        dev = t.device
        if not safe_name(dev):
            raise UserError(f"expected a plain device name (it names the output folder "
                            f"devices/<device>/: no '/', ':', not starting with '.'), got "
                            f"{excerpt(dev)}", source=str(p), field="meta.device")
        if dev in devices:
            raise UserError(f"device {dev!r} is also the device of {devices[dev]}; give each "
                            f"table its own meta.device", source=str(p), field="meta.device")
        devices[dev] = str(p)
        tables.append(t)
    return SeveralTables(tables)


def split_budgets(spec: Any) -> tuple[list[float], dict[str, list[float]]]:
    """(budgets for every device, budgets per named device) from a config value (a list,
    or a mapping device -> list) or the parsed `--budget-ms` values (numbers and
    (device, [budgets]) pairs). A device named twice gets both lists."""
    if isinstance(spec, Mapping):
        return [], {str(k): [float(b) for b in v] for k, v in spec.items()}
    common: list[float] = []
    per: dict[str, list[float]] = {}
    for x in spec or ():
        if isinstance(x, tuple):
            per.setdefault(x[0], []).extend(float(b) for b in x[1])
        else:
            common.append(x)
    return common, per


def parse_budget(text: str, check: Callable[[str], float]) -> float | tuple[str, list[float]]:
    """One `--budget-ms` value: a number (every device), or DEVICE:B1,B2 (that device);
    `check` parses and range-checks one number (the flag's usual rule)."""
    if ":" not in text:
        return check(text)
    device, _, values = text.rpartition(":")
    if not safe_name(device):
        raise ValueError(f"expected DEVICE:BUDGET[,BUDGET...] with a plain device name, got "
                         f"{excerpt(text)}")
    return device, [check(v) for v in values.split(",")]


def ensure_devices(cfg, space: SearchSpace, out: Path, log: Callable[[str], None], clock
                   ) -> tuple[Devices, dict[str, dict]]:
    """The latency and validate stages of a config with `latency.luts`: each table used and
    validated exactly as a `latency.lut` would be. Returns the devices and the fidelity
    report (one table's, or {device: report})."""
    from nas.pipeline import ensure_validated

    with clock.stage("latency") as info:
        devices = load_devices(cfg.latency.luts, space, field="latency.luts", source=cfg.source)
        info["status"] = "given"
    with clock.stage("validate") as info:
        checked = [ensure_validated(replace(cfg, latency=replace(cfg.latency, lut=str(t.path),
                                                                 luts=[])),
                                    space, t, out, log, info) for t in devices.tables]
    reports = {d: rep for d, (_, rep) in zip(devices.labels, checked)}
    return (devices_of([t for t, _ in checked], devices.labels),
            reports[devices.labels[0]] if devices.single else reports)
