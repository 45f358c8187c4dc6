"""The LUT file: one device's per-key latencies, its correction and its last fidelity report.

Loading validates everything, because a silently wrong number in here becomes a silently
wrong Pareto front later. Writing is atomic with entries sorted by key, one line each, so
tables diff cleanly in git.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from nas.errors import EXCERPT, UserError, check_keys, excerpt, find_non_finite, read_user_yaml
from nas.io import atomic_write_text
from nas.latency.fit import (IDENTITY, POWER_KEYS, apply_correction, correction_form,
                             describe_correction)
from nas.latency.keys import all_keys, arch_keys
from nas.space import Arch, SearchSpace

FORMAT_VERSION = 1
MAX_TABLE_BYTES = 256 << 20
# Protocol fields that must agree before entries measured under them may share one table.
PROTOCOL_FIELDS = ("provider", "threads", "batch", "dtype", "opset")
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass
class LatencyTable:
    """One device's LUT. `predict(space, arch)` is what the search's latency objective calls."""

    meta: dict[str, Any]
    space_hashes: list[str] = field(default_factory=list)
    entries: dict[str, dict[str, float | int]] = field(default_factory=dict)
    correction: dict[str, float] = field(default_factory=lambda: dict(IDENTITY))
    validation: dict[str, Any] | None = None
    path: Path | None = None
    # What the last profiling call did (exported, reused, measured): never written to disk.
    stats: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def device(self) -> str:
        return str(self.meta.get("device", "?"))

    def _where(self) -> str:
        return str(self.path) if self.path else f"<latency table {self.device}>"

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        """Read and validate a LUT file; any defect is a one-line UserError naming the field."""
        path = Path(path)
        data = read_user_yaml(path, "a latency table YAML; make one with `gaze-nas profile "
                              "--space SPACE --out LUT`", max_bytes=MAX_TABLE_BYTES)
        return cls.from_dict(data, source=str(path), path=path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>",
                  path: Path | None = None) -> "LatencyTable":
        def fail(msg: str, fld: str | None = None) -> None:
            raise UserError(msg, source=source, field=fld)

        if not isinstance(data, dict):
            fail(f"expected a mapping with meta, space_hash, entries; got {type(data).__name__}")
        bad = find_non_finite(data)
        if bad:
            fail("NaN or infinite value (expected a finite number)", bad)
        check_keys(data, ("meta", "space_hash", "entries", "correction", "validation"), source)
        for required in ("meta", "entries"):
            if required not in data:
                fail("missing required field", required)
        meta = data["meta"]
        if not isinstance(meta, dict):
            fail(f"expected a mapping, got {type(meta).__name__}", "meta")
        dev = meta.get("device")
        if not isinstance(dev, str) or not dev.strip():
            fail(f"expected a non-empty device name, got {excerpt(dev)}", "meta.device")
        fmt = meta.get("format_version", FORMAT_VERSION)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > FORMAT_VERSION:
            fail(f"format version {excerpt(fmt)} is not one this tool reads ({FORMAT_VERSION})",
                 "meta.format_version")
        hashes = data.get("space_hash", [])
        if isinstance(hashes, str):
            hashes = [hashes]
        if not isinstance(hashes, list) or not all(isinstance(h, str) and h for h in hashes):
            fail(f"expected a list of space-hash strings, got {excerpt(hashes)}", "space_hash")
        entries_in = data["entries"]
        if entries_in is None:
            entries_in = {}
        if not isinstance(entries_in, dict):
            fail(f"expected a mapping key -> {{p50_ms, mean_ms, std_ms, n}}, got "
                 f"{type(entries_in).__name__}", "entries")
        entries = {}
        for key, e in entries_in.items():
            entries[str(key)] = _check_entry(key, e, fail)
        corr_in = data.get("correction") or dict(IDENTITY)
        if not isinstance(corr_in, dict):
            fail(f"expected a mapping {{scale, exponent, per_part}} or {{a, b, c}}, got "
                 f"{excerpt(corr_in)}", "correction")
        power = correction_form(corr_in) == "power"
        names = POWER_KEYS if power else tuple(IDENTITY)
        check_keys(corr_in, names, source, "correction.")
        corr = {}
        for name in names:
            v = corr_in.get(name, None if power else IDENTITY[name])
            if not _num(v):
                fail(f"expected a number, got {excerpt(v)}", f"correction.{name}")
            corr[name] = float(v)
        for name in (("scale", "exponent") if power else ("a",)):
            if corr[name] <= 0:
                fail(f"expected a positive number, got {corr[name]!r}", f"correction.{name}")
        validation = data.get("validation")
        if validation is not None and not isinstance(validation, dict):
            fail(f"expected a mapping or nothing, got {type(validation).__name__}", "validation")
        return cls(dict(meta), list(hashes), entries, corr, validation, path)

    # ------------------------------------------------------------------ writing
    def to_text(self) -> str:
        """YAML text: meta and the rest in block style, one flow-style line per entry."""
        head = {"meta": self.meta, "space_hash": list(self.space_hashes)}
        entries = {k: self.entries[k] for k in sorted(self.entries)}
        tail = {"correction": self.correction, "validation": self.validation}
        block = dict(Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)
        return (yaml.dump(head, default_flow_style=False, **block)
                + yaml.dump({"entries": entries}, default_flow_style=None, **block)
                + yaml.dump(tail, default_flow_style=False, **block))

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (temp file + rename) to `path` or the path it was loaded from."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("LatencyTable.save needs a path")
        self.meta.setdefault("format_version", FORMAT_VERSION)
        atomic_write_text(target, self.to_text())
        self.path = target
        return target

    # ------------------------------------------------------------------ coverage
    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys (in the given order) this table has no entry for."""
        return [k for k in keys if k not in self.entries]

    def check_space(self, space: SearchSpace, correction: bool = True) -> None:
        """Refuse a space this table was not built for, unless it happens to hold every key;
        and (`correction`) a correction that predicts a non-positive latency for the space's
        smallest arch."""
        if space.space_hash() not in self.space_hashes:
            every = all_keys(space)
            miss = self.missing(every)
            if miss:
                raise UserError(
                    f"does not cover space {space.name!r} (hash {space.space_hash()}): "
                    f"{len(miss)} of its {len(every)} keys are missing; run "
                    f"`gaze-nas profile --space {space.source} --out {self._where()}`",
                    source=self._where(), field="space_hash")
        if correction:
            self.predict(space, space.smallest())

    def _keys_of(self, space: SearchSpace, arch: Arch) -> list[str]:
        keys = arch_keys(space, arch)
        miss = list(dict.fromkeys(self.missing(keys)))
        if miss:
            shown = ", ".join(miss[:3]) + (", ..." if len(miss) > 3 else "")
            raise UserError(
                f"no latency for {len(miss)} key(s) of arch {arch.to_string()} ({shown}); "
                f"run `gaze-nas profile --space {space.source} --out {self._where()}`",
                source=self._where(), field="entries")
        return keys

    # ------------------------------------------------------------------ prediction
    def raw_sum(self, space: SearchSpace, arch: Arch) -> tuple[float, int]:
        """Uncorrected sum of the arch's part latencies (ms) and how many parts it has."""
        keys = self._keys_of(space, arch)
        return float(sum(self.entries[k]["p50_ms"] for k in keys)), len(keys)

    def predict(self, space: SearchSpace, arch: Arch) -> float:
        """Corrected latency (ms): the correction (`nas.latency.fit`) of the parts' sum."""
        total, n = self.raw_sum(space, arch)
        c = self.correction
        ms = float(apply_correction(c, total, n))
        if not ms > 0:
            raise UserError(
                f"the correction ({describe_correction(c)}) predicts "
                f"{ms:.4g} ms for {arch.to_string()[:EXCERPT]}; expected a positive latency "
                "(run `gaze-nas lut validate` to fit it again)", source=self._where(),
                field="correction")
        return ms

    # ------------------------------------------------------------------ provenance
    def check_device(self, info: dict[str, Any]) -> list[str]:
        """Before adding measurements made on the machine `info` describes: raise if it is
        another CPU or another protocol (the entries would not be comparable); return
        warnings for softer differences (runtime version, OS)."""
        where = self._where()
        for fld in ("cpu_model", "cores") + PROTOCOL_FIELDS:
            mine, theirs = self.meta.get(fld), info.get(fld)
            if mine is not None and theirs is not None and mine != theirs:
                raise UserError(
                    f"table was measured with {fld}={excerpt(mine)} but this machine has "
                    f"{fld}={excerpt(theirs)}; profile into another file (--out)",
                    source=where, field=f"meta.{fld}")
        warn = []
        for fld in ("runtime_version", "os"):
            mine, theirs = self.meta.get(fld), info.get(fld)
            if mine is not None and theirs is not None and mine != theirs:
                warn.append(f"{where}: meta.{fld} is {excerpt(mine)}, this machine has "
                            f"{excerpt(theirs)}; "
                            f"old and new entries may not be comparable")
        return warn


def _check_entry(key: Any, e: Any, fail) -> dict[str, float | int]:
    base = f"entries.{str(key)[:120]}"
    if not isinstance(e, dict):
        fail(f"expected a mapping {{p50_ms, mean_ms, std_ms, n}}, got {excerpt(e)}", base)
    extra = [k for k in e if k not in ("p50_ms", "mean_ms", "std_ms", "n")]
    if extra:
        fail("unknown field; expected p50_ms, mean_ms, std_ms, n", f"{base}.{str(extra[0])[:40]}")
    if "p50_ms" not in e:
        fail("missing required field", f"{base}.p50_ms")
    p50 = e["p50_ms"]
    if not _num(p50) or p50 <= 0:
        fail(f"expected a positive number of milliseconds, got {excerpt(p50)}", f"{base}.p50_ms")
    out: dict[str, float | int] = {"p50_ms": float(p50)}
    for name in ("mean_ms", "std_ms"):
        if name in e:
            v = e[name]
            if not _num(v) or v < 0:
                fail(f"expected a non-negative number, got {excerpt(v)}", f"{base}.{name}")
            out[name] = float(v)
    if "n" in e:
        n = e["n"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            fail(f"expected a positive integer, got {excerpt(n)}", f"{base}.n")
        out["n"] = n
    return out
