"""report.md: what a run found, next to the floor it must beat and what each stage cost."""

from __future__ import annotations

from pathlib import Path

from nas.gaze.tasks import Task
from nas.io import atomic_write_text


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def write_report(out: Path, manifest: dict, search: dict, history: list[dict],
                 task: Task) -> Path:
    """report.md; every error is read by `task`'s keys and written in its unit."""
    if search.get("devices"):  # several tables: per-device fronts and picks, the joint set
        return _write_devices_report(out, manifest, search, history, task)
    front = search["front"]
    lines = [f"# gaze-nas run `{manifest['name']}`", ""]
    lat = [p["latency_ms"] for p in front]
    err = [p[task.error_key] for p in front]
    mean_err = manifest[task.key("mean_gaze_error")]
    u = task.unit
    lines.append(f"- device: `{manifest['device']}` (LUT `{manifest['lut_path']}`)")
    if front:
        lines += [
            f"- Pareto front: {len(front)} non-dominated subnets, latency "
            f"{min(lat):.3f}-{max(lat):.3f} ms ({max(lat) / min(lat):.1f}x), error "
            f"{min(err):.2f}-{max(err):.2f} {u}",
            f"- best validation {task.metric_name} {task.format(min(err))} vs "
            f"{task.format(mean_err)} for always predicting the mean gaze"]
    else:
        lines.append("- Pareto front: **empty**: no subnet was evaluated with a finite error "
                     "(see search/trials.csv)")
    lines += [
        f"- supernet training throughput: {_fmt(manifest.get('supernet_train_img_s'), '.0f')} "
        "img/s (sandwich step images)",
        "", "## Best subnet per latency budget", ""]
    lines += budget_table(search["best_per_budget"], manifest, task)
    lines += [""] + shared_budget_notes(search["best_per_budget"])
    lines += ["", "## Latency table fidelity (leave-one-out, whole subnets measured end to end)", "",
              fidelity_line(manifest.get("lut_fidelity") or {}),
              "", "## Pareto front", "", "![pareto](search/pareto.png)", ""]
    lines += front_table(front, task)
    lines += baseline_lines(manifest.get("baselines") or [], task)
    lines += _tail(manifest, history, task)
    return atomic_write_text(out / "report.md", "\n".join(lines))


def budget_table(best: list[dict], manifest: dict, task: Task) -> list[str]:
    """Each budget's pick: inherited and fine-tuned error, LUT latency, size, arch."""
    u, err = task.unit, task.error_key
    lines = [f"| budget (ms) | arch_id | error ({u}) | inherited ({u}) | fine-tuned ({u}) | "
             "latency (ms, LUT) | params | MMAC | arch |",
             "|---|---|---|---|---|---|---|---|---|"]
    cards = {c["arch_id"]: c for c in manifest.get("exported") or []}
    for b in best:
        if not b.get("arch_id"):
            lines.append(f"| {b['budget_ms']} | none | - | - | - | - | - | - | "
                         f"{b.get('reason', '')} |")
            continue
        c = cards.get(b["arch_id"], {})
        lines.append(f"| {b['budget_ms']} | `{b['arch_id']}` | "
                     f"{_fmt(c.get(err, b[err]), '.2f')} | {b[err]:.2f} | "
                     f"{_fmt(c.get(task.key('error_finetuned')), '.2f')} | {b['latency_ms']:.3f} | "
                     f"{b['params']:,} | {b['macs'] / 1e6:.2f} | `{b['arch']}` |")
    return lines


def fidelity_line(fid: dict) -> str:
    return (f"- n = {fid.get('n')}, MAPE {_fmt(fid.get('mape'), '.2f')}%, within 5%: "
            f"{_fmt(fid.get('within_5'), '.0%')}, within 10%: {_fmt(fid.get('within_10'), '.0%')}, "
            f"Kendall tau {_fmt(fid.get('kendall_tau'), '.3f')}")


def front_table(front: list[dict], task: Task,
                lat_keys: tuple[str, ...] = ("latency_ms",)) -> list[str]:
    """A front as a table: error, the latency (one column per device), size."""
    heads = ["latency (ms)"] if lat_keys == ("latency_ms",) else [
        f"{k.partition('@')[2] or k} (ms)" for k in lat_keys]
    lines = [f"| arch_id | error ({task.unit}) | " + " | ".join(heads) + " | params | MMAC |",
             "|---|---|" + "---|" * len(heads) + "---|---|"]
    for p in front:
        lat = " | ".join(f"{p[k]:.3f}" for k in lat_keys)
        lines.append(f"| `{p['arch_id']}` | {p[task.error_key]:.2f} | {lat} | "
                     f"{p['params']:,} | {p['macs'] / 1e6:.2f} |")
    return lines


def _tail(manifest: dict, history: list[dict], task: Task) -> list[str]:
    """Supernet training and stage times: the same whatever was searched."""
    lines: list[str] = []
    if history:
        u = task.unit
        lines += ["", "## Supernet training", "",
                  f"| epoch | loss | largest ({u}) | smallest ({u}) |",
                  "|---|---|---|---|"]
        for h in history:
            lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {h['err_largest']:.2f} | "
                         f"{h['err_smallest']:.2f} |")
    lines += ["", "## Stage times", "", "| stage | seconds | status |", "|---|---|---|"]
    for k, v in manifest["stage_seconds"].items():
        lines.append(f"| {k} | {v:.1f} | {manifest['stage_status'][k]} |")
    lines += [f"| total | {manifest['total_seconds']:.1f} | |", ""]
    return lines


def _write_devices_report(out: Path, manifest: dict, search: dict,
                          history: list[dict], task: Task) -> Path:
    """A search over several devices: the joint Pareto set, the subnets good on all of
    them, then each device's own front and budget picks (nas.search.devices)."""
    devices = search["devices"]
    lat_keys = tuple(search["summary"]["objectives"][1:])
    front, good = search["front"], search.get("good_on_all") or []
    paths = manifest.get("lut_path") or []
    lines = [f"# gaze-nas run `{manifest['name']}`", "",
             f"- devices: {', '.join(f'`{d}`' for d in devices)} (LUTs "
             + ", ".join(f"`{p}`" for p in paths) + "); one search, each subnet evaluated "
             "once (errors do not depend on the device)",
             f"- joint Pareto set over error and every device's latency: {len(front)} subnets; "
             f"{len(good)} good on all devices (on each, at most "
             f"{search['summary']['good_on_all']['slack']:.0%} slower than the fastest "
             "evaluated subnet as accurate: `search/good_on_all.json`)"]
    if front:
        err = [p[task.error_key] for p in front]
        lines.append(f"- best validation {task.metric_name} {task.format(min(err))} vs "
                     f"{task.format(manifest[task.key('mean_gaze_error')])} for always "
                     "predicting the mean gaze")
    lines += ["", "## Good on all devices", ""]
    if good:
        lines += front_table(good, task, lat_keys)
    else:
        lines.append("- none: every subnet of the joint set is more than the slack slower than "
                     "some device's own front (see each device below)")
    fid = manifest.get("lut_fidelity") or {}
    for d, res in devices.items():
        dfront = res["front"]
        lat = [p["latency_ms"] for p in dfront]
        lines += ["", f"## Device `{d}`", ""]
        if dfront:
            lines.append(f"- its own Pareto front: {len(dfront)} subnets, latency "
                         f"{min(lat):.3f}-{max(lat):.3f} ms, error "
                         f"{min(p[task.error_key] for p in dfront):.2f}-"
                         f"{max(p[task.error_key] for p in dfront):.2f} {task.unit} "
                         f"(`search/devices/{d}/`)")
        lines.append(f"- latency table fidelity: {fidelity_line(fid.get(d) or {})[2:]}")
        lines += ["", "### Best subnet per latency budget", ""]
        lines += budget_table(res["best_per_budget"], manifest, task)
        lines += [""] + shared_budget_notes(res["best_per_budget"])
        lines += ["", "### Pareto front", "", f"![pareto {d}](search/devices/{d}/pareto.png)", ""]
        lines += front_table(dfront, task)
    lines += ["", "## Joint Pareto set", "", "![pareto](search/pareto.png)", ""]
    lines += front_table(front, task, lat_keys)
    lines += _tail(manifest, history, task)
    return atomic_write_text(out / "report.md", "\n".join(lines))


def shared_budget_notes(best: list[dict]) -> list[str]:
    """Say why two budgets picked the same subnet: nothing on the front between them is
    more accurate, so the larger budget buys no accuracy."""
    by_arch: dict[str, list[dict]] = {}
    for b in best:
        if b.get("arch_id"):
            by_arch.setdefault(b["arch_id"], []).append(b)
    notes = []
    for arch_id, rows in by_arch.items():
        if len(rows) > 1:
            budgets = ", ".join(f"{r['budget_ms']}" for r in rows)
            notes.append(f"- Budgets {budgets} ms share `{arch_id}` "
                         f"({rows[0]['latency_ms']:.3f} ms): no evaluated subnet slower than it "
                         f"but within the larger budget has a lower error, so it is exported "
                         f"once.")
    return notes


def baseline_lines(rows: list[dict], task: Task) -> list[str]:
    """The seed study: each hand-designed net, timed end to end beside the front, and the
    searched subnet that beats it on both error and latency (or that none does)."""
    if not rows:
        return []
    out = ["", "## Hand-designed baselines", "",
           "Baselines and the searched front are compared as architectures: each trained from "
           "scratch with the same data, epochs and schedule, and all timed end to end in one "
           "interleaved run on this machine (`baselines.json`, `search/front_measured.json`). "
           "*Dominated by* names a searched subnet with lower error and lower latency.", "",
           f"| baseline | error ({task.unit}) | latency (ms) | params | MMAC | dominated by | "
           "speed-up at its error |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        dom = f"`{r['dominated_by'][0]}`" if r["dominated_by"] else "none"
        if len(r["dominated_by"]) > 1:
            dom += f" (+{len(r['dominated_by']) - 1} more)"
        sp = r.get("speedup_at_equal_error")
        speed = ("no searched subnet is as accurate" if not sp else f"{sp:.2f}x" if sp >= 1
                 else f"{sp:.2f}x (the searched subnet is slower)")
        out.append(f"| {r['name']}: {r['arch']} | {r[task.error_key]:.2f} | "
                   f"{r['latency_ms']:.3f} | {r['params']:,} | {r['macs'] / 1e6:.2f} | {dom} | {speed} |")
    return out
