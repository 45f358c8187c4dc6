"""Device bundle: profile a device that cannot run gaze-nas (a phone, a Raspberry Pi, a Mac).

`make_bundle` writes one self-contained folder (optionally also a zip):

    manifest.json     format, bundle_id, space (name, hash, definition), protocol, every
                      model (id, LUT key or arch string, file, sha256), anchors, every file's
                      sha256; bundle_id is the sha256 of the manifest without itself
    run_bundle.py     the standalone runner (`nas/latency/bundle_runner.py`): Python >= 3.8,
                      numpy and onnxruntime only
    README.txt        how to run it
    layers/*.onnx     one model per LUT key (or only the keys a given table lacks)
    archs/*.onnx      a few dozen whole subnets spanning the size range (the correction's fit
                      and the fidelity report are made on these, measured on the device)

`import_results` checks every file's hash against the manifest, the manifest against its
bundle_id, the results file against that bundle_id and its own digest, then builds the
device's table: entries from the layers, the correction fitted on the whole subnets measured
there, with their leave-one-out fidelity report. Any mismatch is a one-line UserError naming
the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import nas
from nas.errors import UserError, excerpt, safe_name
from nas.io import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from nas.latency import bundle_runner as runner
from nas.latency.keys import all_keys as keys_of_space, arch_keys
from nas.latency.table import LatencyTable
from nas.space import SearchSpace

BUNDLE_FORMAT = runner.BUNDLE_FORMAT
RESULTS_FORMAT = runner.RESULTS_FORMAT
MAX_RESULTS_BYTES = 64 << 20
MAX_MANIFEST_BYTES = 64 << 20
PLAN_FILE = ".bundle-plan.json"
RUNNER_PROTOCOL: dict[str, Any] = {
    "runtime": "onnxruntime", "rounds": 5, "runs_per_round": 5, "warmup": 3, "chunk": 48,
    "batch": 1, "dtype": "float32", "opset": 17, "inter_op_num_threads": 1,
    "execution_mode": "ORT_SEQUENTIAL", "allow_spinning": False,
    "timing": ("run_bundle.py: one process; warm-up runs, then rounds interleaving every model "
               "of a chunk, each run timed alone with perf_counter; p50_ms = min over rounds of "
               "the per-round median"),
    "gate": ("anchor models in every chunk; chunks whose anchors ran more than 10 % slower "
             "than their best are timed once more and the faster result kept"),
}
SAMPLER = "spread/1"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _name_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------- writing
def make_bundle(space: SearchSpace, out: str | Path, *, samples: int = 40, seed: int = 0,
                keys: list[str] | None = None, lut: LatencyTable | None = None,
                archs_only: bool = False, workers: int = 2, zip_path: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the bundle of `space` into the folder `out` (resumable: an interrupted build
    reuses the models already written). Layers: every key of the space, or `keys`, minus
    those `lut` already holds, plus the anchors; none with `archs_only` (a bundle for
    `lut adapt`). Returns the manifest."""
    from nas.latency.export import cache_dir, cache_file, export_many, exporter_tag
    from nas.latency.gate import pick_anchors
    from nas.latency.validate import sample_archs

    out = Path(out)
    every = keys_of_space(space)
    if keys is None:
        wanted = [] if archs_only else list(every)
    else:
        bad = [k for k in keys if k not in every]
        if bad:
            raise UserError(f"{len(bad)} key(s) are not keys of space {space.name!r}, e.g. "
                            f"{excerpt(bad[0])}", field="keys")
        wanted = list(dict.fromkeys(keys))
    if lut is not None:
        wanted = lut.missing(wanted)
    anchors = pick_anchors(space)
    layer_keys = sorted(set(wanted) | set(anchors))
    archs = sample_archs(space, samples, seed) if samples > 0 else []
    if not archs_only:
        have = set(layer_keys) | (set(lut.entries) if lut is not None else set())
        for a in archs:
            miss = [k for k in arch_keys(space, a) if k not in have]
            if miss:
                raise UserError(f"subnet {a.arch_id} needs key {miss[0]} that is neither in the "
                                "bundle nor in the table", field="keys")
    tag = exporter_tag()
    plan = {"format": BUNDLE_FORMAT, "space_hash": space.space_hash(), "exporter": tag,
            "keys": hashlib.sha256("\n".join(layer_keys).encode()).hexdigest(),
            "archs": [a.to_string() for a in archs]}
    plan_hash = hashlib.sha256(runner.canonical(plan)).hexdigest()
    _claim_folder(out, plan_hash)
    done = _finished(out, plan_hash)
    if done is not None:  # the same bundle, already written: keep it (and its bundle_id)
        (out / PLAN_FILE).unlink(missing_ok=True)
        if zip_path is not None:
            write_zip(out, Path(zip_path))
        log(f"bundle {done['bundle_id'][:12]}: {out} is already complete")
        return done

    models: list[dict[str, Any]] = []
    for i, k in enumerate(layer_keys):
        models.append({"id": f"k{i:05d}", "kind": "key", "name": k,
                       "file": f"layers/{_name_hash(k)}.onnx"})
    for i, a in enumerate(archs):
        s = a.to_string()
        models.append({"id": f"a{i:03d}", "kind": "arch", "name": s,
                       "file": f"archs/{_name_hash(s)}.onnx"})
    cache = cache_dir(lut.path) if lut is not None and lut.path is not None else None
    jobs, copied = [], 0
    for m in models:
        dest = out / m["file"]
        if dest.is_file():
            continue
        if m["kind"] == "key" and cache is not None and cache_file(cache, m["name"]).is_file():
            atomic_write_bytes(dest, cache_file(cache, m["name"]).read_bytes())
            copied += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if m["kind"] == "key":
            jobs.append((m["name"], *every[m["name"]], str(dest)))
        else:
            jobs.append((m["name"], "arch", m["name"], str(dest)))
    log(f"bundle {space.name} ({space.space_hash()}): {len(layer_keys)} layer models "
        f"({len(anchors)} anchors), {len(archs)} whole subnets; {len(jobs)} to export, "
        f"{len(models) - len(jobs) - copied} already there, {copied} from the table's cache")
    export_many(space, jobs, workers=workers, log=log, label="export bundle")

    runner_src = Path(runner.__file__).read_bytes()
    atomic_write_bytes(out / "run_bundle.py", runner_src)
    atomic_write_text(out / "README.txt", _readme(space, len(layer_keys), len(archs)))
    files = {m["file"]: runner.sha256_file(out / m["file"]) for m in models}
    for m in models:
        m["sha256"] = files[m["file"]]
    files["run_bundle.py"] = runner.sha256_bytes(runner_src)
    files["README.txt"] = runner.sha256_file(out / "README.txt")
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "created": _now(), "tool_version": nas.__version__,
        "plan": plan_hash, "exporter": tag,
        "space": {"name": space.name, "hash": space.space_hash(), "raw": space.raw},
        "protocol": dict(RUNNER_PROTOCOL),
        "archs": {"sampler": SAMPLER, "seed": seed, "samples": len(archs)},
        "layers": "none (whole subnets only)" if archs_only and not wanted else
                  ("missing from " + str(lut.path or lut.device) if lut is not None else
                   "every key" if keys is None else "selected keys"),
        "anchors": [m["id"] for m in models if m["kind"] == "key" and m["name"] in anchors],
        "models": models, "files": dict(sorted(files.items())),
    }
    manifest["bundle_id"] = runner.bundle_id_of(manifest)
    atomic_write_json(out / "manifest.json", manifest)
    (out / PLAN_FILE).unlink(missing_ok=True)
    if zip_path is not None:
        write_zip(out, Path(zip_path))
    log(f"bundle {manifest['bundle_id'][:12]}: {out} ({len(models)} models)")
    return manifest


def _claim_folder(out: Path, plan_hash: str) -> None:
    """`out` is new or empty, or holds this very bundle (done or interrupted): else refuse."""
    if out.exists() and not out.is_dir():
        raise UserError("expected a folder for the bundle, found a file", source=str(out),
                        field="--out")
    if out.is_dir() and any(out.iterdir()):
        for name in ("manifest.json", PLAN_FILE):
            try:
                mark = json.loads((out / name).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(mark, dict) and mark.get("plan") == plan_hash:
                atomic_write_json(out / PLAN_FILE, {"plan": plan_hash})
                return
        raise UserError("folder is not empty and holds no bundle of this space and these "
                        "options; choose another --out", source=str(out), field="--out")
    atomic_write_json(out / PLAN_FILE, {"plan": plan_hash})


def _finished(out: Path, plan_hash: str) -> dict[str, Any] | None:
    """The manifest of a finished bundle of this very plan whose files are intact."""
    try:
        manifest, _ = read_bundle(out)
    except UserError:
        return None
    return manifest if manifest.get("plan") == plan_hash else None


def write_zip(folder: Path, zip_path: Path) -> Path:
    """The bundle folder as one zip (top folder = the bundle's name), written atomically."""
    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    zf.write(f, f"{folder.name}/{f.relative_to(folder).as_posix()}")

    return atomic_write(zip_path, write)


def _readme(space: SearchSpace, layers: int, archs: int) -> str:
    return f"""gaze-nas device bundle for search space {space.name} ({space.space_hash()}):
{layers} layer models and {archs} whole subnets.

On the device (Python >= 3.8 with numpy and onnxruntime; nothing else):

    python run_bundle.py --list-providers
    python run_bundle.py --out results.json                 # CPU provider, 1 thread
    python run_bundle.py --out results-xnn.json --provider xnnpack --threads 2

Interrupt it at any time; the same command resumes. Bring results.json back and run

    gaze-nas lut import results.json --bundle <this folder> --out latency_tables/<device>.yaml

Do not edit the files: every one is checked against manifest.json (sha256).
"""


# ---------------------------------------------------------------------- reading
class _Files:
    """A bundle folder or zip: read its files by their path inside the bundle."""

    def __init__(self, where: str | Path):
        self.where = Path(where)
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if self.where.is_file():
            try:
                self.zip = zipfile.ZipFile(self.where)
            except (zipfile.BadZipFile, OSError):
                raise UserError("expected a bundle folder or its zip", source=str(self.where),
                                field="--bundle") from None
            names = [n for n in self.zip.namelist() if n.endswith("manifest.json")]
            if not names:
                raise UserError("no manifest.json in the zip; not a gaze-nas bundle",
                                source=str(self.where), field="--bundle")
            self.prefix = min(names, key=len)[:-len("manifest.json")]
        elif not self.where.is_dir():
            raise UserError("no such bundle folder or zip", source=str(self.where),
                            field="--bundle")

    def label(self, rel: str) -> str:
        return f"{self.where}/{rel}" if self.zip is None else f"{self.where}:{self.prefix}{rel}"

    def read(self, rel: str, limit: int | None = None) -> bytes | None:
        try:
            if self.zip is not None:
                info = self.zip.getinfo(self.prefix + rel)
                if limit is not None and info.file_size > limit:
                    raise UserError(f"file is {info.file_size} bytes; expected at most {limit}",
                                    source=self.label(rel))
                return self.zip.read(info)
            p = self.where / rel
            if limit is not None and p.stat().st_size > limit:
                raise UserError(f"file is {p.stat().st_size} bytes; expected at most {limit}",
                                source=self.label(rel))
            return p.read_bytes()
        except (KeyError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None


def read_bundle(where: str | Path) -> tuple[dict[str, Any], SearchSpace]:
    """The verified manifest and the space of a bundle (folder or zip): the manifest matches
    its bundle_id and every file its sha256."""
    files = _Files(where)
    src = files.label("manifest.json")
    raw = files.read("manifest.json", MAX_MANIFEST_BYTES)
    if raw is None:
        raise UserError("no manifest.json; not a gaze-nas bundle (make one with `gaze-nas lut "
                        "bundle`)", source=str(where), field="--bundle")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"malformed JSON ({type(exc).__name__})", source=src) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise UserError(f"expected format {BUNDLE_FORMAT}, got {excerpt(got)}", source=src,
                        field="format")
    try:
        own = runner.bundle_id_of(manifest)
    except (TypeError, ValueError):
        own = None
    if own is None or own != manifest.get("bundle_id"):
        raise UserError("does not match the manifest's content: it was modified after "
                        "`gaze-nas lut bundle` wrote it", source=src, field="bundle_id")
    for name in ("files", "models", "space", "anchors"):
        if not isinstance(manifest.get(name), (dict, list)):
            raise UserError("missing or malformed", source=src, field=name)
    for rel, digest in manifest["files"].items():
        data = files.read(rel)
        if data is None:
            raise UserError("missing from the bundle (listed in its manifest)",
                            source=files.label(rel), field=f"files.{rel}")
        if runner.sha256_bytes(data) != digest:
            raise UserError("sha256 differs from the bundle manifest: the file was changed "
                            "after `gaze-nas lut bundle` wrote it", source=files.label(rel),
                            field="sha256")
    space = SearchSpace.from_dict(manifest["space"].get("raw"), source=f"{src}:space")
    if space.space_hash() != manifest["space"].get("hash"):
        raise UserError(f"the space defined here hashes to {space.space_hash()}, not "
                        f"{excerpt(manifest['space'].get('hash'))}", source=src,
                        field="space.hash")
    every = keys_of_space(space)
    for m in manifest["models"]:
        if m.get("kind") == "key" and m.get("name") not in every:
            raise UserError(f"{excerpt(m.get('name'))} is not a key of the space", source=src,
                            field=f"models.{m.get('id')}")
    return manifest, space


def _number_ok(x: Any, positive: bool) -> bool:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return ok and (x > 0 if positive else x >= 0)


IDENTITY_FIELDS = ("device", "model", "cpu_model", "cores", "machine", "os", "platform",
                   "python", "numpy", "runtime", "runtime_version", "provider", "providers",
                   "threads", "graph_optimization_level", "batch", "dtype")


def read_results(path: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """A results file of `run_bundle.py` for this very bundle, complete and unmodified."""
    path = Path(path)
    src = str(path)
    try:
        if path.stat().st_size > MAX_RESULTS_BYTES:
            raise UserError(f"file is larger than {MAX_RESULTS_BYTES} bytes; not a results file",
                            source=src)
        res = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("file not found (expected the results of run_bundle.py)",
                        source=src) from None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"malformed JSON ({type(exc).__name__}); expected the results of "
                        "run_bundle.py", source=src) from None
    if not isinstance(res, dict) or res.get("format") != RESULTS_FORMAT:
        raise UserError(f"expected format {RESULTS_FORMAT} (the results of run_bundle.py)",
                        source=src, field="format")
    if res.get("bundle_id") != manifest["bundle_id"]:
        raise UserError(f"results of another bundle ({excerpt(str(res.get('bundle_id'))[:12])}), "
                        f"not of this one ({manifest['bundle_id'][:12]}); import them with the "
                        "bundle they were measured from", source=src, field="bundle_id")
    try:
        digest = runner.results_digest(res)
    except (TypeError, ValueError):
        digest = None
    if digest is None or res.get("digest") != digest:
        raise UserError("does not match the file's content: the results were modified after "
                        "run_bundle.py wrote them", source=src, field="digest")
    entries = res.get("entries")
    if not isinstance(entries, dict):
        raise UserError("expected a mapping of model id -> timing", source=src, field="entries")
    ids = {m["id"] for m in manifest["models"]}
    for mid, e in entries.items():
        if mid not in ids:
            raise UserError("not a model of this bundle", source=src, field=f"entries.{mid}"[:80])
        if not isinstance(e, dict) or not _number_ok(e.get("p50_ms"), True):
            raise UserError(f"expected a positive number of milliseconds, got "
                            f"{excerpt(e.get('p50_ms') if isinstance(e, dict) else e)}",
                            source=src, field=f"entries.{mid}.p50_ms")
        for name in ("mean_ms", "std_ms"):
            if name in e and not _number_ok(e[name], False):
                raise UserError(f"expected a non-negative number, got {excerpt(e[name])}",
                                source=src, field=f"entries.{mid}.{name}")
        n = e.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UserError(f"expected a positive integer, got {excerpt(n)}", source=src,
                            field=f"entries.{mid}.n")
    left = len(ids - set(entries))
    if left or res.get("complete") is not True:
        raise UserError(f"incomplete: {len(ids) - left} of {len(ids)} models measured; run "
                        "run_bundle.py again with the same --out to finish", source=src,
                        field="complete")
    dev = res.get("device")
    if not isinstance(dev, dict):
        raise UserError("expected the device's identity (a mapping)", source=src, field="device")
    for k in IDENTITY_FIELDS:
        v = dev.get(k)
        ok = v is None or isinstance(v, (str, int, float, bool)) and len(str(v)) <= 300 or \
            isinstance(v, list) and len(v) <= 20 and all(isinstance(x, str) for x in v)
        if not ok:
            raise UserError(f"unexpected value {excerpt(v)}", source=src, field=f"device.{k}")
    if not isinstance(dev.get("device"), str) or not dev["device"].strip():
        raise UserError("expected a device name", source=src, field="device.device")
    return res


def results_info(res: dict[str, Any], manifest: dict[str, Any],
                 device: str | None = None) -> dict[str, Any]:
    """The device identity recorded in a table's meta, from a results file."""
    dev = res["device"]
    info = {k: dev[k] for k in IDENTITY_FIELDS if dev.get(k) is not None}
    if device is not None:
        info["device"] = device
    if not safe_name(info["device"]):
        raise UserError(f"device name {excerpt(info['device'])} is not a plain name; pass "
                        "--device NAME", field="device.device")
    info["opset"] = int(manifest["protocol"].get("opset", 17))
    info["backend"] = "bundle"
    return info


def measurements(res: dict[str, Any], manifest: dict[str, Any]
                 ) -> tuple[dict[str, dict], dict[str, float]]:
    """(LUT key -> entry, arch string -> end-to-end p50 ms) of a verified results file."""
    keys, archs = {}, {}
    for m in manifest["models"]:
        e = res["entries"][m["id"]]
        if m["kind"] == "key":
            keys[m["name"]] = {k: e[k] for k in ("p50_ms", "mean_ms", "std_ms", "n") if k in e}
        else:
            archs[m["name"]] = float(e["p50_ms"])
    return keys, archs


def check_space_arg(space: SearchSpace, space_path: str | None) -> None:
    """A --space the user named must be the bundle's own."""
    if space_path is None:
        return
    given = SearchSpace.load(space_path)
    if given.space_hash() != space.space_hash():
        raise UserError(f"is space {given.name!r} ({given.space_hash()}); the bundle was made "
                        f"for {space.name!r} ({space.space_hash()})", source=str(space_path),
                        field="space_hash")


def import_results(results_path: str | Path, bundle: str | Path, out: str | Path, *,
                   space_path: str | None = None, device: str | None = None,
                   log: Callable[[str], None] = print) -> LatencyTable:
    """Turn a device's results into its latency table at `out` (added to the table already
    there if it is the same device's, measured the same way: only keys it lacks are added).
    The correction is fitted on the whole subnets measured on the device; their
    leave-one-out fidelity report is stored as the table's validation."""
    from nas.latency.backends import check_measuring_into
    from nas.latency.validate import fidelity_report

    out = Path(out)
    manifest, space = read_bundle(bundle)
    check_space_arg(space, space_path)
    res = read_results(results_path, manifest)
    info = results_info(res, manifest, device)
    key_entries, arch_ms = measurements(res, manifest)
    if out.exists():
        table = LatencyTable.load(out)
        if device is not None and table.device != device:
            raise UserError(f"holds device {table.device!r}, not {device!r}; choose another "
                            "--out", source=str(out), field="meta.device")
        info["device"] = table.device
        for w in check_measuring_into(table, info):
            log(f"warning: {w}")
    else:
        meta = dict(info)
        meta.update({"created": _now(), "tool_version": nas.__version__,
                     "exporter": manifest.get("exporter"),
                     "protocol": dict(manifest["protocol"], **res.get("settings", {})),
                     "complete": False})
        table = LatencyTable(meta=meta)
    new = {k: e for k, e in key_entries.items() if k not in table.entries}
    table.entries.update(new)
    archs = [space.parse(a) for a in arch_ms]
    lacking = sorted({k for a in archs for k in table.missing(arch_keys(space, a))})
    if lacking:
        raise UserError(f"the table would lack {len(lacking)} key(s) of the bundle's whole "
                        f"subnets, e.g. {lacking[0]}: a bundle of whole subnets only is for "
                        "`gaze-nas lut adapt --from REFERENCE --bundle DIR --results RESULTS`",
                        source=str(bundle), field="models")
    imported = {"bundle_id": manifest["bundle_id"],
                "results_sha256": runner.sha256_file(results_path),
                "imported": _now(), "layers": len(key_entries), "added": len(new),
                "subnets": len(archs)}
    table.meta.setdefault("bundles", [])
    table.meta["bundles"] = [b for b in table.meta["bundles"]
                             if b.get("bundle_id") != manifest["bundle_id"]] + [imported]
    if archs:
        report, corr = fidelity_report(
            table, space, archs, [arch_ms[a.to_string()] for a in archs], fit=True,
            seed=manifest.get("archs", {}).get("seed"), sampler=manifest.get("archs", {}).get(
                "sampler"), rounds=res.get("settings", {}).get("rounds"), backend="bundle",
            device_measured_on=info["device"], bundle_id=manifest["bundle_id"])
        table.correction, table.validation = corr, report
    every = keys_of_space(space)
    if not table.missing(every) and space.space_hash() not in table.space_hashes:
        table.space_hashes.append(space.space_hash())
    table.meta["complete"] = not table.missing(every)
    table.meta["updated"] = _now()
    table.save(out)
    v = table.validation or {}
    tau = v.get("kendall_tau")
    log(f"import: {len(new)} of {len(key_entries)} layer entries added to {out} "
        f"(device {table.device}, {info.get('provider')}, {info.get('threads')} thread(s))"
        + (f"; {len(archs)} whole subnets: MAPE {v['mape']:.2f}%, within 10% "
           f"{v['within_10']:.0%}, Kendall tau {'n/a' if tau is None else f'{tau:.3f}'} "
           "(leave-one-out)" if archs and v.get("mape") is not None else ""))
    return table
