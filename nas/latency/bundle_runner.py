#!/usr/bin/env python3
"""Standalone latency runner of a gaze-nas device bundle (copied into it as run_bundle.py).

Needs only Python >= 3.8, numpy and onnxruntime: it runs where gaze-nas cannot (a phone under
Termux, a Raspberry Pi, a Jetson, a Mac). It times every ONNX model of the bundle with the
gaze-nas protocol (one process, models interleaved over rounds, each model's latency the
minimum over rounds of its per-round median, anchor models in every chunk; chunks timed while
the anchors ran slowed are timed again) and writes a results file with this device's
identity, which `gaze-nas lut import RESULTS --bundle BUNDLE --out TABLE` turns into a
latency table.

    python run_bundle.py --out results.json                       # CPU, 1 thread
    python run_bundle.py --out results-xnn.json --provider xnnpack --threads 2
    python run_bundle.py --list-providers

Interrupt it at any time: the results file is rewritten (atomically) after every chunk, and
the same command resumes where it stopped.
"""

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time

BUNDLE_FORMAT = "gaze-nas-bundle/1"
RESULTS_FORMAT = "gaze-nas-bundle-results/1"
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider", "coreml": "CoreMLExecutionProvider",
    "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
    "qnn": "QNNExecutionProvider", "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider", "acl": "ACLExecutionProvider",
}
OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED",
              "basic": "ORT_ENABLE_BASIC", "off": "ORT_DISABLE_ALL"}
TOLERANCE = 0.10  # a chunk whose anchors ran > 10 % slower than their best is timed again
PROGRESS_EVERY_S = 5.0


class RunnerError(Exception):
    """A user mistake: printed as one line, exit code 2."""


# ---------------------------------------------------------------------- hashing (shared)
def canonical(obj):
    """The bytes every digest of the bundle protocol is taken over (gaze-nas uses this very
    function, so runner and importer agree byte for byte)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("utf-8")


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundle_id_of(manifest):
    """sha256 of the manifest without its own `bundle_id`: it covers every file's hash, the
    space, the models and the protocol, so a changed bundle gets another id."""
    return sha256_bytes(canonical({k: v for k, v in manifest.items() if k != "bundle_id"}))


def results_digest(results):
    """sha256 of the results without their `digest`: an edited or torn file no longer
    matches (an integrity check, not a signature)."""
    return sha256_bytes(canonical({k: v for k, v in results.items() if k != "digest"}))


# ---------------------------------------------------------------------- files
def atomic_write_json(path, obj):
    """Temp file in the same folder, fsync, rename: a reader never sees a torn file."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_manifest(bundle, verify=True):
    path = os.path.join(bundle, "manifest.json")
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RunnerError("%s: cannot read the bundle manifest (%s)" % (path, exc))
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise RunnerError("%s: format: expected %s" % (path, BUNDLE_FORMAT))
    if bundle_id_of(manifest) != manifest.get("bundle_id"):
        raise RunnerError("%s: bundle_id: the manifest was modified after gaze-nas wrote it; "
                          "copy the bundle again" % path)
    if verify:
        for rel, digest in sorted(manifest["files"].items()):
            f = os.path.join(bundle, rel)
            if not os.path.isfile(f):
                raise RunnerError("%s: missing (listed in the manifest); copy the whole bundle "
                                  "folder" % f)
            if sha256_file(f) != digest:
                raise RunnerError("%s: sha256 differs from the manifest (damaged in transfer?); "
                                  "copy the bundle again" % f)
    return manifest


# ---------------------------------------------------------------------- device identity
def _run(cmd):
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=3, check=False)
        return out.stdout.decode("utf-8", "replace").strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


def cpu_model():
    """CPU model name from /proc/cpuinfo (Linux, Android), sysctl (macOS), else platform."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
            name = line.split(":", 1)[1].strip()
            if name:
                return name
    if sys.platform == "darwin":
        name = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if name:
            return name
    soc = _run(["getprop", "ro.soc.model"]) if os.path.exists("/system/build.prop") else ""
    return soc or platform.processor() or platform.machine() or "unknown-cpu"


def device_model():
    """The product: phone model (Android), board (Raspberry Pi, Jetson), Mac model."""
    if os.path.exists("/system/build.prop") or "ANDROID_ROOT" in os.environ:
        maker = _run(["getprop", "ro.product.manufacturer"])
        model = _run(["getprop", "ro.product.model"])
        if model:
            return (maker + " " + model).strip()
    board = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    if board:
        return board
    if sys.platform == "darwin":
        return _run(["sysctl", "-n", "hw.model"])
    return ""


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def slug(text):
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    text = re.sub(r"\b(cpu|processor)\b|@.*$", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "device"


def identity(name, ort, np, providers_used, args):
    cpu, n, model = cpu_model(), cores(), device_model()
    return {
        "device": name or "%s-%dc" % (slug(model or cpu), n),
        "model": model or None,
        "cpu_model": cpu,
        "cores": n,
        "machine": platform.machine(),
        "os": "%s %s" % (platform.system(), platform.release()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runtime": "onnxruntime",
        "runtime_version": ort.__version__,
        "provider": providers_used[0],
        "providers": providers_used,
        "threads": args.threads,
        "graph_optimization_level": args.graph_opt,
        "batch": 1,
        "dtype": "float32",
    }


# ---------------------------------------------------------------------- sessions
def resolve_providers(names, ort):
    """Full provider names, each checked against what this onnxruntime build offers; the CPU
    provider is appended as the fallback for operators the others do not take."""
    available = ort.get_available_providers()
    out = []
    for name in names or ["CPUExecutionProvider"]:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            full = PROVIDER_ALIASES.get(part.lower(), part)
            if full not in available:
                raise RunnerError(
                    "--provider %s: not available in this onnxruntime %s (available: %s); "
                    "install an onnxruntime build that has it, or pick one of these"
                    % (part, ort.__version__, ", ".join(available)))
            if full not in out:
                out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def make_session(ort, path, providers, args):
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[args.graph_opt])
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    options = []
    for p in providers:
        options.append({"intra_op_num_threads": str(args.threads)}
                       if p == "XnnpackExecutionProvider" else {})
    return ort.InferenceSession(path, sess_options=so, providers=providers,
                                provider_options=options)


def make_feed(np, sess):
    rng = np.random.default_rng(0)
    feed = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


# ---------------------------------------------------------------------- timing
def time_chunk(np, sessions, order, rounds, runs, warmup):
    """Interleaved timing: every model `runs` times per round, in turn, `rounds` rounds.
    Returns id -> (rounds, runs) array of milliseconds."""
    out = dict((k, np.empty((rounds, runs))) for k in order)
    clock = time.perf_counter
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for k in order:
            sess, feed = sessions[k]
            for _ in range(warmup):
                sess.run(None, feed)
        for r in range(rounds):
            for k in order:
                sess, feed = sessions[k]
                row = out[k][r]
                for i in range(runs):
                    t0 = clock()
                    sess.run(None, feed)
                    row[i] = clock() - t0
    finally:
        if gc_was:
            gc.enable()
    for k in order:
        out[k] *= 1e3
    return out


def summarize(np, a):
    flat = a.ravel()
    return {"p50_ms": round(float(np.median(a, axis=1).min()), 6),
            "mean_ms": round(float(flat.mean()), 6), "std_ms": round(float(flat.std()), 6),
            "n": int(flat.size)}


def interleave(ids, anchors):
    """Anchors first, in the middle and last: every model is timed between two of them."""
    if not anchors:
        return list(ids)
    gaps = max(len(anchors) - 1, 1)
    bounds = [int(round(i * len(ids) / gaps)) for i in range(gaps + 1)]
    order = [anchors[0]]
    for i in range(gaps):
        order += list(ids[bounds[i]:bounds[i + 1]])
        if i + 1 < len(anchors):
            order.append(anchors[i + 1])
    return order


def fmt_duration(s):
    s = int(round(max(s, 0)))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % (s // 60, s % 60)
    return "%dh%02dm" % (s // 3600, (s % 3600) // 60)


class Progress(object):
    def __init__(self, total, done):
        self.total, self.start_done, self.done = total, done, done
        self.t0 = self.last = time.time()

    def update(self, n, label, force=False):
        self.done += n
        now = time.time()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        el = now - self.t0
        rate = (self.done - self.start_done) / el if el > 0 else 0.0
        eta = fmt_duration((self.total - self.done) / rate) if rate > 0 else "?"
        log("%s: %d/%d models (%.0f%%), %.1f/s, elapsed %s, ETA %s"
            % (label, self.done, self.total, 100.0 * self.done / max(self.total, 1), rate,
               fmt_duration(el), eta))


def log(msg):
    sys.stderr.write("[run_bundle] %s\n" % msg)
    sys.stderr.flush()


# ---------------------------------------------------------------------- main
def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="Time the models of a gaze-nas device bundle.")
    p.add_argument("--out", help="results file to write (and resume), e.g. results.json")
    p.add_argument("--bundle", default=here, help="bundle folder (default: this script's)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--provider", action="append", default=[],
                   help="onnxruntime execution provider, in priority order; repeat or "
                        "comma-separate (cpu, xnnpack, nnapi, coreml or full names); the CPU "
                        "provider is always the fallback")
    p.add_argument("--rounds", type=int, default=None, help="rounds per chunk (bundle default)")
    p.add_argument("--runs-per-round", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None, help="models per chunk")
    p.add_argument("--graph-opt", choices=sorted(OPT_LEVELS), default="all")
    p.add_argument("--device", help="device name for the table (default: model or CPU + cores)")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the files")
    p.add_argument("--list-providers", action="store_true",
                   help="print the execution providers of this onnxruntime and exit")
    a = p.parse_args(argv)
    if not a.list_providers and not a.out:
        p.error("--out is required")
    for name in ("threads", "rounds", "runs_per_round", "chunk"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    if a.warmup is not None and a.warmup < 0:
        p.error("--warmup must be >= 0")
    return a


def settings_of(args, protocol, providers):
    return {"threads": args.threads, "providers": providers, "graph_opt": args.graph_opt,
            "rounds": args.rounds or protocol["rounds"],
            "runs_per_round": args.runs_per_round or protocol["runs_per_round"],
            "warmup": protocol["warmup"] if args.warmup is None else args.warmup,
            "chunk": args.chunk or protocol["chunk"]}


def open_results(path, manifest, manifest_sha, settings):
    """The results so far (resume) or a fresh record; refuses another bundle's results or
    results measured with other settings."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            old = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RunnerError("%s: cannot read it to resume (%s); choose another --out" % (path, exc))
    if not isinstance(old, dict) or old.get("format") != RESULTS_FORMAT:
        raise RunnerError("%s: format: not a results file of this runner; choose another --out"
                          % path)
    if old.get("bundle_id") != manifest["bundle_id"]:
        raise RunnerError("%s: bundle_id: results of another bundle; choose another --out"
                          % path)
    if old.get("settings") != settings:
        raise RunnerError("%s: settings: measured with %s, not %s; rerun with those options "
                          "or choose another --out"
                          % (path, json.dumps(old.get("settings"), sort_keys=True),
                             json.dumps(settings, sort_keys=True)))
    if old.get("digest") != results_digest(old):
        raise RunnerError("%s: digest: modified since this runner wrote it; choose another "
                          "--out" % path)
    return old


def run(args):
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        raise RunnerError("needs numpy and onnxruntime (%s): pip install numpy onnxruntime"
                          % exc)
    if args.list_providers:
        print("\n".join(ort.get_available_providers()))
        return 0
    bundle = os.path.abspath(args.bundle)
    manifest = load_manifest(bundle, verify=not args.no_verify)
    manifest_sha = sha256_file(os.path.join(bundle, "manifest.json"))
    providers = resolve_providers(args.provider, ort)
    settings = settings_of(args, manifest["protocol"], providers)
    models = dict((m["id"], m) for m in manifest["models"])
    anchors = [a for a in manifest.get("anchors", []) if a in models]

    results = open_results(args.out, manifest, manifest_sha, settings)
    if results is None:
        probe = make_session(ort, os.path.join(bundle, models[manifest["models"][0]["id"]]
                                               ["file"]), providers, args)
        results = {"format": RESULTS_FORMAT, "bundle_id": manifest["bundle_id"],
                   "manifest_sha256": manifest_sha, "space_hash": manifest["space"]["hash"],
                   "settings": settings,
                   "device": identity(args.device, ort, np, probe.get_providers(), args),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entries": {},
                   "chunks": [], "complete": False}
        del probe
    done = results["entries"]
    rng = random.Random(0)
    todo = {}
    for kind in ("key", "arch"):  # layers first, then whole subnets, each in a seeded order
        ids = [m["id"] for m in manifest["models"] if m["kind"] == kind and m["id"] not in done]
        rng.shuffle(ids)
        todo[kind] = ids
    total = len(models)
    log("bundle %s: %d models (%d done), %d anchors; providers %s, %d thread(s), %d rounds x "
        "%d runs" % (manifest["bundle_id"][:12], total, len(done), len(anchors),
                     ",".join(providers), args.threads, settings["rounds"],
                     settings["runs_per_round"]))

    sessions = {}

    def open_model(mid):
        if mid not in sessions:
            sess = make_session(ort, os.path.join(bundle, models[mid]["file"]), providers, args)
            sessions[mid] = (sess, make_feed(np, sess))
        return sessions[mid]

    for a in anchors:
        open_model(a)
    best_anchor = dict(results.get("anchor_best", {}))

    def time_part(part, label):
        order = interleave([m for m in part if m not in anchors], anchors)
        for m in order:
            open_model(m)
        runs = time_chunk(np, sessions, order, settings["rounds"], settings["runs_per_round"],
                          settings["warmup"])
        anchor_ms = dict((a, float(np.median(np.median(runs[a], axis=1)))) for a in anchors)
        for a, v in anchor_ms.items():
            best_anchor[a] = min(v, best_anchor.get(a, v))
        ratios = [anchor_ms[a] / best_anchor[a] for a in anchors if best_anchor.get(a)]
        slow = float(np.median(ratios)) if ratios else 1.0
        for m in part:
            new = summarize(np, runs[m])
            old = done.get(m)
            if old is None or new["p50_ms"] < old["p50_ms"]:
                done[m] = new
        for m in order:
            if m not in anchors:
                del sessions[m]
        results["chunks"].append({"kind": label, "models": list(part),
                                  "anchor_slowdown": round(slow, 4)})
        results["anchor_best"] = dict((a, round(v, 6)) for a, v in best_anchor.items())
        results["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results["digest"] = results_digest(results)
        atomic_write_json(args.out, results)

    prog = Progress(total, len(done))
    for kind, label, size in (("key", "layers", settings["chunk"]),
                              ("arch", "subnets", max(1, min(10, settings["chunk"])))):
        ids = todo[kind]
        for start in range(0, len(ids), size):
            part = ids[start:start + size]
            time_part(part, label)
            prog.update(len(part), label)
    # second pass: chunks whose anchors ran slowed are timed once more (best of both kept)
    slowed = [c for c in results["chunks"] if c["anchor_slowdown"] > 1 + TOLERANCE
              and not c.get("retimed")]
    if slowed:
        log("%d chunk(s) ran while the device was slowed (throttling or load); timing them "
            "again" % len(slowed))
        for c in slowed:
            c["retimed"] = True
            time_part(c["models"], c["kind"] + "-again")
    results["complete"] = all(m in done for m in models)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["digest"] = results_digest(results)
    atomic_write_json(args.out, results)
    prog.update(0, "done", force=True)
    log("results: %s (%d models; device %s, %s). Import with: gaze-nas lut import %s "
        "--bundle %s --out latency_tables/%s.yaml"
        % (args.out, len(done), results["device"]["device"], results["device"]["provider"],
           os.path.basename(args.out), os.path.basename(bundle), results["device"]["device"]))
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except RunnerError as exc:
        sys.stderr.write("run_bundle.py: error: %s\n" % exc)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("run_bundle.py: interrupted; finished chunks are saved, run the same "
                         "command to resume\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
