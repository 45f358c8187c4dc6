"""`gaze-nas data ...` subcommands (the lead wires `add_data_commands` into nas/cli.py):

    gaze-nas data sources
    gaze-nas data info NAME [PATH] [--opt key=value ...]
    gaze-nas data prepare NAME PATH --out FOLDER [--opt key=value ...] [--chunk-size N]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from nas.errors import excerpt


def _option(text: str) -> tuple[str, Any]:
    """`key=value`; the value read as JSON where it parses (numbers, true, null, [96, 96]),
    else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {excerpt(text)}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_sources(a: argparse.Namespace) -> int:
    from nas.gaze.datasets.registry import available_sources, get_source

    for name in available_sources():
        src = get_source(name)
        opts = ", ".join(f"{k}={v!r}" for k, v in src.options.items()) or "-"
        print(f"{name:14s} task={src.task or '(as prepared)'}  options: {opts}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from nas.gaze.datasets.registry import open_dataset

    ds = open_dataset(a.name, a.path, log=_log, **dict(a.opt or []))
    imgs = ds.images if isinstance(ds.images, dict) else {"images": ds.images}
    print(f"{ds.name}: {len(ds)} samples, task {ds.task}, "
          f"{len(np.unique(ds.subjects))} subjects, fingerprint {ds.fingerprint}")
    for k, v in imgs.items():
        print(f"  {k}: uint8 {tuple(v.shape)}")
    print(f"  labels: {'none (unlabeled)' if ds.labels is None else ds.labels.shape}, "
          f"head pose: {'yes' if ds.head_pose is not None else 'no'}")
    if ds.official:
        print("  official split: " + ", ".join(f"{k} {len(v)}" for k, v in ds.official.items()))
    return 0


def cmd_prepare(a: argparse.Namespace) -> int:
    from nas.gaze.datasets.prepare import prepare

    kw: dict[str, Any] = dict(a.opt or [])
    if a.max_bad_fraction is not None:
        kw["max_bad_fraction"] = a.max_bad_fraction
    out = prepare(a.name, a.path, a.out, chunk_size=a.chunk_size, log=_log, **kw)
    print(out)
    return 0


def add_data_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `data` (sources / info / prepare) to a `add_subparsers()` object; each leaf sets
    `fn` (Namespace -> exit code) like the other commands."""
    d = subparsers.add_parser("data", help="gaze datasets: list sources, inspect, prepare a "
                              "fast local cache")
    ds = d.add_subparsers(dest="data_cmd", required=True)
    s = ds.add_parser("sources", help="the data sources and their options")
    s.set_defaults(fn=cmd_sources)
    for name, fn, hlp in (("info", cmd_info, "open a dataset and print what it holds"),
                          ("prepare", cmd_prepare, "convert a dataset to a memory-mapped "
                           "cache (resumable; rerun the same command after an interruption)")):
        p = ds.add_parser(name, help=hlp)
        p.add_argument("name", help="data source (see `gaze-nas data sources`)")
        p.add_argument("path", nargs="?", default=None,
                       help="the dataset's folder, in its published layout (none for "
                       "synthetic)")
        p.add_argument("--opt", action="append", type=_option, metavar="KEY=VALUE",
                       help="reader option, e.g. size=112 or evaluation_subset=false")
        p.set_defaults(fn=fn)
        if name == "prepare":
            p.add_argument("--out", required=True, help="cache folder (new, or one to resume)")
            p.add_argument("--chunk-size", type=int, default=None,
                           help="samples per resumable chunk (default: about 64 MB)")
            p.add_argument("--max-bad-fraction", type=float, default=None,
                           help="unreadable samples tolerated (skipped, with a warning); "
                           "default 0.01")
    return d
