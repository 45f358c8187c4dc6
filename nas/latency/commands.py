"""CLI of the device work: `--backend` for `profile` and `lut validate`, `lut validate
--no-fit`, and the commands `lut bundle`, `lut import` and `lut adapt`.

`nas.cli.build_parser` calls `register(lut_subparsers, profile_parser)`. Nothing heavy is
imported here: each command imports what it needs when it runs, and every user mistake is
a one-line `UserError` raised before any work starts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from nas.errors import UserError, excerpt

REPORT_KEYS = ("mape", "within_5", "within_10", "kendall_tau", "n")


def _log(msg: str) -> None:
    from nas.cli import log

    log(msg)


def _writable_dir(path: Path, flag: str) -> Path:
    from nas.cli import _writable_dir as check

    return check(path, flag)


# ---------------------------------------------------------------------- argument types
def _int_at_least(lo: int, hi: int = 1_000_000) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {excerpt(text)}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {v}")
        return v

    return parse


def _backend(text: str) -> str:
    from nas.latency.backends import known_backends

    if text not in known_backends():
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(known_backends())}, got "
                                         f"{excerpt(text)}")
    return text


def _table_out(out: Path) -> Path:
    if out.is_dir():
        raise UserError("expected a table file, found a folder", source=str(out), field="--out")
    _writable_dir(out.parent, "--out")
    return out


def _print_report(path: Any, rep: dict[str, Any], correction: dict[str, float], as_json: bool,
                  how: str) -> None:
    if as_json:
        print(json.dumps({k: rep.get(k) for k in REPORT_KEYS} | {"correction": correction}))
        return
    tau = rep.get("kendall_tau")
    print(f"{path}: n={rep.get('n')} MAPE {rep.get('mape', float('nan')):.2f}% within 5% "
          f"{rep.get('within_5', float('nan')):.0%} within 10% "
          f"{rep.get('within_10', float('nan')):.0%} Kendall tau "
          f"{'n/a' if tau is None else f'{tau:.3f}'} ({how})")


# ---------------------------------------------------------------------- commands
def cmd_profile(a: argparse.Namespace) -> int:
    """`profile --backend B` (B other than onnxruntime; onnxruntime keeps the plain path)."""
    from nas.latency import profile_space
    from nas.space import SearchSpace

    out = _table_out(Path(a.out))
    sp = SearchSpace.load(a.space)
    t = profile_space(sp, out, device=a.device, workers=a.workers, rounds=a.rounds, log=_log,
                      backend=a.backend)
    print(f"{t.path}: {len(t.entries)} entries for device {t.meta.get('device')} "
          f"(backend {a.backend})")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    """`lut validate --backend B` and/or `--no-fit` (the table's fidelity as it stands)."""
    from nas.latency import LatencyTable, validate_table
    from nas.latency.backends import get_backend
    from nas.space import SearchSpace

    sp = SearchSpace.load(a.space)
    t = LatencyTable.load(a.lut)
    t.check_space(sp, correction=not a.no_fit)  # --no-fit uses the correction as it is
    if a.backend:
        get_backend(a.backend).refuse_remote()
    rep = validate_table(t, sp, samples=a.samples, seed=a.seed, rounds=a.rounds, log=_log,
                         backend=a.backend, fit=not a.no_fit)
    _print_report(a.lut, rep, t.correction, a.json,
                  "as it stands, no refit" if a.no_fit else "leave-one-out")
    return 0


def cmd_bundle(a: argparse.Namespace) -> int:
    from nas.latency import LatencyTable
    from nas.latency.bundle import make_bundle
    from nas.space import SearchSpace

    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UserError("expected a folder for the bundle, found a file", source=str(out),
                        field="--out")
    _writable_dir(out, "--out")
    sp = SearchSpace.load(a.space)
    lut = LatencyTable.load(a.lut) if a.lut else None
    if a.subnets_only and a.samples < 1:
        raise UserError("a bundle of whole subnets only needs --samples >= 1",
                        field="--samples")
    zip_path = Path(str(out).rstrip("/\\") + ".zip") if a.zip else None
    if zip_path is not None:
        _writable_dir(zip_path.parent, "--zip")
    m = make_bundle(sp, out, samples=a.samples, seed=a.seed, lut=lut,
                    archs_only=a.subnets_only, workers=a.workers, zip_path=zip_path, log=_log)
    kinds = [x["kind"] for x in m["models"]]
    print(f"{out}: bundle {m['bundle_id'][:12]}, {kinds.count('key')} layer models, "
          f"{kinds.count('arch')} whole subnets" + (f"; zip {zip_path}" if zip_path else ""))
    print(f"on the device: python {out.name}/run_bundle.py --out results.json; then here: "
          f"gaze-nas lut import results.json --bundle {out} --out latency_tables/<device>.yaml")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    from nas.latency.bundle import import_results

    out = _table_out(Path(a.out))
    t = import_results(a.results, a.bundle, out, space_path=a.space, device=a.device,
                       log=_log)
    _print_report(out, t.validation or {}, t.correction, a.json,
                  f"{(t.validation or {}).get('n', 0)} whole subnets measured on "
                  f"{t.device}, leave-one-out")
    return 0


def cmd_adapt(a: argparse.Namespace) -> int:
    from nas.latency import LatencyTable
    from nas.latency.adapt import adapt_with_backend, adapt_with_bundle
    from nas.space import SearchSpace

    out = _table_out(Path(a.out))
    if a.bundle or a.results:
        if not (a.bundle and a.results):
            raise UserError("the bundle variant needs both --bundle DIR and --results FILE",
                            field="--results" if a.bundle else "--bundle")
        if a.backend not in (None, "bundle"):
            raise UserError(f"--backend {a.backend} measures here; with --bundle the subnets "
                            "were measured on the device", field="--backend")
        ref = LatencyTable.load(getattr(a, "from"))
        t = adapt_with_bundle(ref, a.bundle, a.results, out, space_path=a.space,
                              device=a.device, log=_log)
    else:
        if not a.space:
            raise UserError("--space is required (or --bundle and --results)", field="--space")
        if a.backend == "bundle":
            raise UserError("the bundle backend needs --bundle DIR --results FILE (a bundle "
                            "made with `gaze-nas lut bundle --subnets-only`)", field="--backend")
        sp = SearchSpace.load(a.space)
        ref = LatencyTable.load(getattr(a, "from"))
        t = adapt_with_backend(ref, sp, out, backend=a.backend, measure=a.measure, seed=a.seed,
                               rounds=a.rounds, device=a.device, workers=a.workers, log=_log)
    _print_report(out, t.validation or {}, t.correction, a.json,
                  f"adapted from {ref.device} with {(t.validation or {}).get('n')} measured "
                  "subnets, leave-one-out")
    return 0


# ---------------------------------------------------------------------- parser
def _either(plain: Callable[[argparse.Namespace], int],
            mine: Callable[[argparse.Namespace], int],
            use_mine: Callable[[argparse.Namespace], bool]) -> Callable[[argparse.Namespace], int]:
    """Keep the existing command for its own flags; ours only when our flags are used."""
    def run(a: argparse.Namespace) -> int:
        return mine(a) if use_mine(a) else plain(a)

    return run


def register(lut: Any, profile: argparse.ArgumentParser) -> None:
    """Add `--backend` to `profile` and `lut validate`, `--no-fit` to `lut validate`, and the
    subcommands `lut bundle`, `lut import`, `lut adapt`."""
    from nas.cli import _device  # the CLI's one device-name check (nas.cli calls register)
    from nas.latency.backends import DEFAULT_BACKEND, known_backends

    names = ", ".join(known_backends())
    profile.add_argument("--backend", type=_backend, default=None,
                         help=f"what measures ({names}; default {DEFAULT_BACKEND})")
    profile.set_defaults(fn=_either(profile.get_default("fn"), cmd_profile,
                                    lambda a: a.backend not in (None, DEFAULT_BACKEND)))

    v = lut.choices["validate"]
    v.add_argument("--backend", type=_backend, default=None,
                   help="what measures the subnets (default: the table's own backend)")
    v.add_argument("--no-fit", action="store_true",
                   help="judge the table as it stands: keep its correction, write nothing")
    v.set_defaults(fn=_either(v.get_default("fn"), cmd_validate,
                              lambda a: bool(a.backend or a.no_fit)))

    b = lut.add_parser("bundle", help="write a device bundle: ONNX layers + whole subnets + "
                       "a standalone runner (numpy + onnxruntime only)")
    b.add_argument("--space", required=True)
    b.add_argument("--out", required=True, help="bundle folder (resumable)")
    b.add_argument("--samples", type=_int_at_least(0, 1000), default=40,
                   help="whole subnets to measure on the device (fit + fidelity report)")
    b.add_argument("--seed", type=_int_at_least(0, 2**31 - 1), default=0)
    b.add_argument("--lut", help="only the layers this table of the same device lacks")
    b.add_argument("--subnets-only", action="store_true",
                   help="no layer models: whole subnets for `lut adapt --bundle`")
    b.add_argument("--zip", action="store_true", help="also write OUT.zip")
    b.add_argument("--workers", type=_int_at_least(1, 64), default=2,
                   help="ONNX export processes")
    b.set_defaults(fn=cmd_bundle)

    i = lut.add_parser("import", help="turn a bundle's results into the device's table")
    i.add_argument("results", help="results file written by run_bundle.py")
    i.add_argument("--bundle", required=True, help="the bundle folder (or its zip)")
    i.add_argument("--out", required=True, help="table file (added to if the same device's)")
    i.add_argument("--space", help="check that the bundle is of this space")
    i.add_argument("--device", type=_device, help="device name (default: from the results)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(fn=cmd_import)

    ad = lut.add_parser("adapt", help="a new device's table from a reference table and K "
                        "whole subnets measured on the new device")
    ad.add_argument("--from", required=True, metavar="REFERENCE",
                    help="reference table (another device's full profile)")
    ad.add_argument("--space")
    ad.add_argument("--backend", type=_backend, default=None,
                    help="what measures the K subnets here (default onnxruntime)")
    ad.add_argument("--measure", type=_int_at_least(1, 1000), default=20,
                    help="K, the number of whole subnets to measure")
    ad.add_argument("--bundle", help="remote device: a bundle (lut bundle --subnets-only)")
    ad.add_argument("--results", help="remote device: its runner's results file")
    ad.add_argument("--out", required=True)
    ad.add_argument("--seed", type=_int_at_least(0, 2**31 - 1), default=0)
    ad.add_argument("--rounds", type=_int_at_least(1, 100), default=5)
    ad.add_argument("--device", type=_device)
    ad.add_argument("--workers", type=_int_at_least(1, 64), default=2)
    ad.add_argument("--json", action="store_true", help="print one JSON object")
    ad.set_defaults(fn=cmd_adapt)
