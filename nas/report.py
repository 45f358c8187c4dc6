"""report.md: what a run found, next to the floor it must beat and what each stage cost."""

from __future__ import annotations

from pathlib import Path

from nas.io import atomic_write_text


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def write_report(out: Path, manifest: dict, search: dict, history: list[dict]) -> Path:
    front = search["front"]
    lines = [f"# gaze-nas run `{manifest['name']}`", ""]
    lat = [p["latency_ms"] for p in front]
    err = [p["error_deg"] for p in front]
    mean_err = manifest["mean_gaze_error_deg"]
    lines.append(f"- device: `{manifest['device']}` (LUT `{manifest['lut_path']}`)")
    if front:
        lines += [
            f"- Pareto front: {len(front)} non-dominated subnets, latency "
            f"{min(lat):.3f}-{max(lat):.3f} ms ({max(lat) / min(lat):.1f}x), error "
            f"{min(err):.2f}-{max(err):.2f} deg",
            f"- best validation error {min(err):.2f} deg vs {mean_err:.2f} deg for always "
            f"predicting the mean gaze"]
    else:
        lines.append("- Pareto front: **empty**: no subnet was evaluated with a finite error "
                     "(see search/trials.csv)")
    lines += [
        f"- supernet training throughput: {_fmt(manifest.get('supernet_train_img_s'), '.0f')} "
        "img/s (sandwich step images)",
        "", "## Best subnet per latency budget", "",
        "| budget (ms) | arch_id | error (deg) | inherited (deg) | fine-tuned (deg) | "
        "latency (ms, LUT) | params | MMAC | arch |",
        "|---|---|---|---|---|---|---|---|---|"]
    cards = {c["arch_id"]: c for c in manifest.get("exported") or []}
    for b in search["best_per_budget"]:
        if not b.get("arch_id"):
            lines.append(f"| {b['budget_ms']} | none | - | - | - | - | - | - | "
                         f"{b.get('reason', '')} |")
            continue
        c = cards.get(b["arch_id"], {})
        lines.append(f"| {b['budget_ms']} | `{b['arch_id']}` | "
                     f"{_fmt(c.get('error_deg', b['error_deg']), '.2f')} | {b['error_deg']:.2f} | "
                     f"{_fmt(c.get('error_finetuned_deg'), '.2f')} | {b['latency_ms']:.3f} | "
                     f"{b['params']:,} | {b['macs'] / 1e6:.2f} | `{b['arch']}` |")
    lines += [""] + shared_budget_notes(search["best_per_budget"])
    fid = manifest.get("lut_fidelity") or {}
    lines += ["", "## Latency table fidelity (leave-one-out, whole subnets measured end to end)", "",
              f"- n = {fid.get('n')}, MAPE {_fmt(fid.get('mape'), '.2f')}%, within 5%: "
              f"{_fmt(fid.get('within_5'), '.0%')}, within 10%: {_fmt(fid.get('within_10'), '.0%')}, "
              f"Kendall tau {_fmt(fid.get('kendall_tau'), '.3f')}",
              "", "## Pareto front", "", "![pareto](search/pareto.png)", "",
              "| arch_id | error (deg) | latency (ms) | params | MMAC |", "|---|---|---|---|---|"]
    for p in front:
        lines.append(f"| `{p['arch_id']}` | {p['error_deg']:.2f} | {p['latency_ms']:.3f} | "
                     f"{p['params']:,} | {p['macs'] / 1e6:.2f} |")
    lines += baseline_lines(manifest.get("baselines") or [])
    if history:
        lines += ["", "## Supernet training", "", "| epoch | loss | largest (deg) | smallest (deg) |",
                  "|---|---|---|---|"]
        for h in history:
            lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {h['err_largest']:.2f} | "
                         f"{h['err_smallest']:.2f} |")
    lines += ["", "## Stage times", "", "| stage | seconds | status |", "|---|---|---|"]
    for k, v in manifest["stage_seconds"].items():
        lines.append(f"| {k} | {v:.1f} | {manifest['stage_status'][k]} |")
    lines += [f"| total | {manifest['total_seconds']:.1f} | |", ""]
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


def baseline_lines(rows: list[dict]) -> list[str]:
    """The seed study: each hand-designed net, timed end to end beside the front, and the
    searched subnet that beats it on both error and latency (or that none does)."""
    if not rows:
        return []
    out = ["", "## Hand-designed baselines", "",
           "Baselines and the searched front are compared as architectures: each trained from "
           "scratch with the same data, epochs and schedule, and all timed end to end in one "
           "interleaved run on this machine (`baselines.json`, `search/front_measured.json`). "
           "*Dominated by* names a searched subnet with lower error and lower latency.", "",
           "| baseline | error (deg) | latency (ms) | params | MMAC | dominated by | "
           "speed-up at its error |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        dom = f"`{r['dominated_by'][0]}`" if r["dominated_by"] else "none"
        if len(r["dominated_by"]) > 1:
            dom += f" (+{len(r['dominated_by']) - 1} more)"
        sp = r.get("speedup_at_equal_error")
        speed = ("no searched subnet is as accurate" if not sp else f"{sp:.2f}x" if sp >= 1
                 else f"{sp:.2f}x (the searched subnet is slower)")
        out.append(f"| {r['name']}: {r['arch']} | {r['error_deg']:.2f} | {r['latency_ms']:.3f} | "
                   f"{r['params']:,} | {r['macs'] / 1e6:.2f} | {dom} | {speed} |")
    return out
