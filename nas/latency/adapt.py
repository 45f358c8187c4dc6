"""Few-shot adaptation: a new device's table from a reference table plus K whole subnets
measured on the new device.

Every key k of the space has its reference latency r_k and structural features from one
traced forward pass of its module (`torch.utils._python_dispatch`), by operator category:
how many calls (the per-operator overhead an eager runtime or an unfused graph pays; for
depthwise convolutions also the number of groups and of weights, which a runtime without a
depthwise kernel loops over) and how much work (multiply-accumulates of dense, 1x1 and depthwise
convolutions and of linear layers; the im2col buffer of dense kxk convolutions; elements
written by batch norms, activations, element-wise ops, data movement; elements read by
pooling). Each feature is rescaled into "reference milliseconds" (summed
over the space's keys it equals the reference's total), so coefficients are comparable and
one penalty fits all of a group. A subnet's latency on the new device is modelled as

    T = s * R + sum_f d_f * G_f + b * parts + c

where R is the subnet's reference sum and G_f its rescaled feature sums. The prior is "the
new device is the reference scaled" (d = 0, b = 0): ridge penalties pull the deviations
towards it, one strength for the call counts (and parts), one for the amounts of work,
chosen by leave-one-out over the K subnets on relative error. With few measurements the
model stays close to a scaled reference; with more it learns where the device differs (an
eager runtime pays per operator call, an unfused graph per element written, threads speed
up large convolutions only). The fit is on relative errors, so a 16x range of latencies is
not fitted to its largest subnets.

The adapted table holds, per key, t_k = s * r_k + sum_f d_f * g_fk (never below 5 % of
s * r_k) and the correction (a=1, b, c), so `predict(arch)` is the model above. Its
`meta.adapted` records the reference, K, the coefficients and the leave-one-out figures
(also its `validation`). Its entries are predictions, not measurements: profiling refuses to
add measured entries to it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nas.errors import UserError
from nas.latency.fit import fidelity
from nas.latency.keys import all_keys as keys_of_space, arch_keys
from nas.latency.table import LatencyTable
from nas.space import Arch, SearchSpace

# call counts per operator category (with `parts`, one penalty group) ...
COUNTS = ("conv_n", "pwconv_n", "dwconv_n", "dwconv_groups", "fc_n", "bn_n", "act_n", "ew_n",
          "pool_n", "mem_n", "view_n")
# ... and the work they do (the other group)
SIZES = ("conv_macs", "conv_im2col", "pwconv_macs", "dwconv_macs", "dwconv_out", "dwconv_w",
         "fc_macs", "bn_out", "act_out", "ew_out", "pool_in", "mem_out")
FEATURES = COUNTS + SIZES
FEATURES_VERSION = 4
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, math.inf)
FLOOR = 0.05  # an adapted entry is never below this share of the scaled reference
METHOD = "adapt/2"

_ACTS = {"relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "hardtanh",
         "tanh", "leaky_relu", "clamp", "elu", "mish", "softmax", "_softmax"}
_ELEMENTWISE = {"add", "mul", "sub", "div", "where", "maximum", "minimum"}
_POOL = {"mean", "sum", "amax", "avg_pool2d", "max_pool2d", "adaptive_avg_pool2d",
         "adaptive_max_pool2d", "max_pool2d_with_indices"}
_MEM = {"cat", "clone", "copy", "copy_", "contiguous", "stack", "pad", "constant_pad_nd",
        "index_select", "gather", "_to_copy", "repeat"}


# ---------------------------------------------------------------------- key features
def _categorize(name: str, args: tuple, out: Any, add: Callable[[str, float], None]) -> None:
    """Add one aten call's features: its category's call count and its amount of work."""
    import torch

    base = name.rstrip("_") if name not in ("copy_",) else name
    numel = out.numel() if isinstance(out, torch.Tensor) else sum(
        t.numel() for t in out if isinstance(t, torch.Tensor)) \
        if isinstance(out, (tuple, list)) else 0
    if "conv" in base and len(args) > 1 and isinstance(args[1], torch.Tensor) \
            and args[1].dim() >= 3:
        w = args[1]
        # aten.conv2d ends with groups, aten.convolution too (after the bool `transposed`)
        groups = next((a for a in reversed(args) if isinstance(a, int)
                       and not isinstance(a, bool)), 1)
        macs = numel * int(np.prod(w.shape[1:]))
        cat = "dwconv" if groups > 1 else ("pwconv" if all(d == 1 for d in w.shape[2:])
                                           else "conv")
        add(cat + "_n", 1)
        add(cat + "_macs", macs)
        if cat == "dwconv":  # a runtime without a depthwise kernel loops over the groups
            add("dwconv_out", numel)
            add("dwconv_groups", groups)
            add("dwconv_w", int(w.numel()))
        elif cat == "conv":  # the im2col buffer of a kxk convolution run as a GEMM
            add("conv_im2col", macs // max(int(w.shape[0]), 1))
    elif base in ("addmm", "mm", "linear", "bmm", "matmul"):
        if base == "addmm" and isinstance(args[-1], torch.Tensor) and args[-1].dim() == 2:
            inner = args[-1].shape[0]
        else:
            inner = args[0].shape[-1] if isinstance(args[0], torch.Tensor) else 1
        add("fc_n", 1)
        add("fc_macs", numel * int(inner))
    elif "batch_norm" in base or "layer_norm" in base or "group_norm" in base:
        add("bn_n", 1)
        add("bn_out", numel)
    elif base in _ACTS:
        add("act_n", 1)
        add("act_out", numel)
    elif base in _ELEMENTWISE:
        add("ew_n", 1)
        add("ew_out", numel)
    elif base in _POOL:
        add("pool_n", 1)
        add("pool_in", args[0].numel() if isinstance(args[0], torch.Tensor) else numel)
    elif base in _MEM:
        add("mem_n", 1)
        add("mem_out", numel)
    else:  # views, reshapes, slices, dropout in eval: no work, still a call
        add("view_n", 1)


def _features_of(space: SearchSpace, kind: str, spec: Any) -> list[float]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from nas.latency.build import module_for_key

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.f: dict[str, float] = {}

        def add(self, k: str, v: float) -> None:
            self.f[k] = self.f.get(k, 0) + v

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            _categorize(func.overloadpacket.__name__, args, out, self.add)
            return out

    mod, shape = module_for_key(space, kind, spec)
    x = torch.zeros(shape)
    count = Count()
    with torch.inference_mode(), count:
        mod(x)
    return [float(count.f.get(n, 0)) for n in FEATURES]


def key_features(space: SearchSpace, keys: Sequence[str], cache: Path | None = None,
                 log: Callable[[str], None] = print) -> dict[str, tuple[float, ...]]:
    """The features (`FEATURES`, in order) of each key's module, one traced forward pass
    each (~7 ms a key); cached in the JSON file `cache` when given."""
    from nas.latency.progress import Progress

    known: dict[str, list[float]] = {}
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("version") == FEATURES_VERSION and data.get("features") == list(FEATURES):
                known = data["keys"]
        except (ValueError, AttributeError):
            known = {}
    every = keys_of_space(space)
    todo = [k for k in keys if k not in known]
    if todo:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        prog = Progress("key features", len(todo), log)
        try:
            for k in todo:
                known[k] = _features_of(space, *every[k])
                prog.update()
        finally:
            torch.set_num_threads(threads)
        prog.finish()
        if cache is not None:
            from nas.io import atomic_write_text

            atomic_write_text(cache, json.dumps({"version": FEATURES_VERSION,
                                                 "features": list(FEATURES), "keys": known},
                                                sort_keys=True))
    return {k: tuple(known[k]) for k in keys}


# ---------------------------------------------------------------------- the model
@dataclass
class AdaptModel:
    """Coefficients of the adaptation (see the module docstring)."""

    s: float
    d: dict[str, float]
    b: float
    c: float
    scale: dict[str, float]  # feature -> reference ms per unit
    lam: tuple[float, float] = (math.inf, math.inf)
    loo: list[float] = field(default_factory=list)  # leave-one-out prediction per subnet

    def key_ms(self, r: float, feats: Sequence[float]) -> float:
        v = self.s * r + sum(self.d[f] * self.scale[f] * x for f, x in zip(FEATURES, feats))
        return max(v, FLOOR * self.s * r)

    def to_dict(self) -> dict[str, Any]:
        lam = [None if math.isinf(x) else x for x in self.lam]
        return {"s": round(float(self.s), 6),
                "d": {k: float(f"{v:.6g}") for k, v in self.d.items() if v},
                "b_ms": round(float(self.b), 6), "c_ms": round(float(self.c), 6),
                "lambda_counts_sizes": lam,
                "feature_scale": {k: float(f"{v:.6g}") for k, v in self.scale.items() if v}}


class _Design:
    """Per-subnet sums of the model's columns, from the reference and the key features."""

    def __init__(self, ref: LatencyTable, feats: dict[str, tuple[float, ...]]):
        self.ref, self.feats = ref, feats
        keys = list(feats)
        r = np.array([ref.entries[k]["p50_ms"] for k in keys])
        tot = np.array([feats[k] for k in keys], dtype=np.float64).sum(axis=0)
        # feature f in reference milliseconds: summed over the keys, it equals the reference
        self.scale = {name: (float(r.sum() / tot[i]) if tot[i] > 0 else 0.0)
                      for i, name in enumerate(FEATURES)}

    def rows(self, space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
        """Columns: R, G_<feature>..., parts, 1."""
        sc = np.array([self.scale[f] for f in FEATURES])
        out = []
        for a in archs:
            ks = arch_keys(space, a)
            r = sum(self.ref.entries[k]["p50_ms"] for k in ks)
            g = np.sum([self.feats[k] for k in ks], axis=0) * sc
            out.append([r, *g, len(ks), 1.0])
        return np.array(out, dtype=np.float64)


# penalty group of each column: None = free (scale, c), 0 = call counts and parts, 1 = work
_GROUPS: list[int | None] = [None] + [0] * len(COUNTS) + [1] * len(SIZES) + [0, None]


def _solve(X: np.ndarray, y: np.ndarray, lam: tuple[float, float]) -> np.ndarray:
    """Ridge on relative errors, columns standardised; a group with an infinite penalty is
    left out; a negative c (a whole net's own fixed cost) is refitted as 0."""
    keep = [j for j, g in enumerate(_GROUPS) if g is None or not math.isinf(lam[g])]
    for _ in range(2):
        Xw = X[:, keep] / y[:, None]
        rms = np.sqrt((Xw ** 2).mean(axis=0))
        rms[rms == 0] = 1.0
        Z = Xw / rms
        pen = np.array([0.0 if _GROUPS[j] is None else lam[_GROUPS[j]] for j in keep])
        coef = np.linalg.lstsq(Z.T @ Z + len(y) * np.diag(pen), Z.sum(axis=0), rcond=None)[0]
        beta = np.zeros(X.shape[1])
        beta[keep] = coef / rms
        if beta[-1] >= 0:
            break
        keep = [j for j in keep if j != X.shape[1] - 1]
    return beta


def _loo(X: np.ndarray, y: np.ndarray, lam: tuple[float, float]) -> np.ndarray:
    out = np.empty_like(y)
    for i in range(len(y)):
        m = np.arange(len(y)) != i
        out[i] = X[i] @ _solve(X[m], y[m], lam)
    return out


def fit_adaptation(ref: LatencyTable, space: SearchSpace, archs: Sequence[Arch],
                   measured: Sequence[float], feats: dict[str, tuple[float, ...]]
                   ) -> AdaptModel:
    """Fit the model on K measured subnets, penalties chosen by leave-one-out MAPE."""
    design = _Design(ref, feats)
    X = design.rows(space, archs)
    y = np.asarray(measured, dtype=np.float64)
    if len(y) < 3:  # too few to choose anything: the scaled reference
        grid = [(math.inf, math.inf)]
    else:  # strong -> weak: on a tie the stronger penalty (the simpler model) stays
        strong = sorted(LAMBDAS, reverse=True)
        grid = [(a, b) for a in strong for b in strong]
    best: tuple[float, tuple[float, float], np.ndarray] | None = None
    for lam in grid:
        if _solve(X, y, lam)[0] <= 0:  # the device is a positive multiple of the reference
            continue
        if len(y) >= 3:
            loo = _loo(X, y, lam)
            if not np.all(np.isfinite(loo)) or np.any(loo <= 0):
                continue
            err = float(np.mean(np.abs(loo - y) / y))
        else:
            loo, err = np.full_like(y, np.nan), 0.0
        if best is None or err < best[0] - 1e-4:
            best = (err, lam, loo)
    if best is None:  # nothing fits sensibly: a pure scale, the median ratio
        beta = np.zeros(X.shape[1])
        beta[0] = float(np.median(y / X[:, 0]))
        return AdaptModel(s=float(beta[0]), d={f: 0.0 for f in FEATURES}, b=0.0, c=0.0,
                          scale=design.scale, lam=(math.inf, math.inf),
                          loo=[float(v) for v in X @ beta])
    _, lam, loo = best
    beta = _solve(X, y, lam)
    return AdaptModel(s=float(beta[0]),
                      d={f: float(beta[1 + i]) for i, f in enumerate(FEATURES)},
                      b=float(beta[-2]), c=float(beta[-1]), scale=design.scale, lam=lam,
                      loo=[float(v) for v in loo])


# ---------------------------------------------------------------------- the table
def adapt_table(ref: LatencyTable, space: SearchSpace, archs: Sequence[Arch],
                measured: Sequence[float], info: dict[str, Any], *,
                feats: dict[str, tuple[float, ...]], keys: Sequence[str] | None = None,
                source: dict[str, Any] | None = None) -> LatencyTable:
    """The adapted table for the device `info` describes: entries for `keys` (default every
    key of the space), correction and leave-one-out report from the K subnets."""
    from nas import __version__

    every = list(keys_of_space(space)) if keys is None else list(keys)
    miss = ref.missing(every)
    if miss:
        raise UserError(f"the reference lacks {len(miss)} key(s) of space {space.name!r}, e.g. "
                        f"{miss[0]}; profile it with `gaze-nas profile --space {space.source} "
                        f"--out {ref.path}`", source=str(ref.path or ref.device),
                        field="entries")
    model = fit_adaptation(ref, space, archs, measured, feats)
    entries = {}
    floored = 0
    for k in every:
        r = ref.entries[k]["p50_ms"]
        v = model.key_ms(r, feats[k])
        floored += v <= FLOOR * model.s * r + 1e-15
        entries[k] = {"p50_ms": float(f"{v:.6g}")}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    y = np.asarray(measured, dtype=np.float64)
    meta = dict(info)
    meta.update({"created": now, "tool_version": __version__, "complete": True,
                 "adapted": {"method": METHOD, "measured_subnets": len(archs),
                             "reference": {"path": str(ref.path) if ref.path else None,
                                           "device": ref.device,
                                           "backend": ref.meta.get("backend", "onnxruntime"),
                                           "runtime": ref.meta.get("runtime")},
                             **(source or {}), "model": model.to_dict(),
                             "floored_entries": int(floored)}})
    table = LatencyTable(meta=meta, entries=entries,
                         correction={"a": 1.0, "b": float(model.b), "c": float(model.c)})
    if keys is None or not table.missing(keys_of_space(space)):
        table.space_hashes.append(space.space_hash())
    fitted = np.array([table.predict(space, a) for a in archs])
    loo = np.array(model.loo) if len(y) >= 3 else fitted
    report = {**fidelity(loo, y),
              "method": ("leave-one-out over the K measured subnets: the adaptation refitted "
                         "without each (headline); in-sample below" if len(y) >= 3 else
                         "in-sample (fewer than 3 subnets: no leave-one-out)"),
              "created": now, "space": space.name, "space_hash": space.space_hash(),
              "adapted": True, "backend": info.get("backend"),
              "correction": {k: round(v, 6) for k, v in table.correction.items()},
              "in_sample": fidelity(fitted, y),
              "per_sample": [{"arch": a.to_string(), "measured_ms": round(float(m), 5),
                              "predicted_ms": round(float(p), 5),
                              "loo_ms": round(float(q), 5)}
                             for a, m, p, q in zip(archs, y, fitted, loo)]}
    from nas.latency.validate import _finite_or_none

    table.validation = _finite_or_none(report)
    table.meta["complete"] = not table.missing(keys_of_space(space))
    return table


# ---------------------------------------------------------------------- entry points
def _check_out(out: Path) -> None:
    """An adapted table may replace an earlier adapted table, never a measured one."""
    if out.is_dir():
        raise UserError("expected a table file, found a folder", source=str(out), field="--out")
    if out.exists():
        old = LatencyTable.load(out)
        if not old.meta.get("adapted"):
            raise UserError("holds a measured table; an adapted table never overwrites one: "
                            "choose another --out", source=str(out), field="--out")


def _features_cache(out: Path, space: SearchSpace) -> Path:
    from nas.latency.export import cache_dir

    return cache_dir(out) / f"key_features-{space.space_hash()}.json"


def adapt_with_backend(ref: LatencyTable, space: SearchSpace, out: str | Path, *,
                       backend: Any = None, measure: int = 20, seed: int = 0, rounds: int = 5,
                       device: str | None = None, workers: int = 2,
                       log: Callable[[str], None] = print, max_wait: float | None = None
                       ) -> LatencyTable:
    """Measure `measure` subnets of `space` on this machine with `backend`, adapt `ref` to
    them, save the adapted table at `out`."""
    from nas.latency.backends import get_backend
    from nas.latency.gate import WAIT_BUDGET_S
    from nas.latency.validate import measure_archs, sample_archs

    out = Path(out)
    be = get_backend(backend)
    be.refuse_remote()
    _check_out(out)
    ref.check_space(space, correction=False)
    info = be.info(device)
    archs = sample_archs(space, measure, seed)
    names = [a.to_string() for a in archs]
    log(f"adapt {ref.device} -> {info['device']} ({be.name}): {len(archs)} subnets of "
        f"{space.name} measured here, seed {seed}")
    feats = key_features(space, list(keys_of_space(space)), _features_cache(out, space), log)
    timed, gate, anchors = measure_archs(space, names, be, anchors_ref=None, rounds=rounds,
                                         max_wait=WAIT_BUDGET_S if max_wait is None else max_wait,
                                         log=log, workers=workers)
    table = adapt_table(ref, space, archs, [timed[n]["p50_ms"] for n in names], info,
                        feats=feats, source={"measured_with": be.name, "seed": seed,
                                             "rounds": rounds, "gate": gate})
    table.meta["anchors"] = {k: round(v, 6) for k, v in anchors.items()}
    table.save(out)
    _log_done(table, out, log)
    return table


def adapt_with_bundle(ref: LatencyTable, bundle: str | Path, results: str | Path,
                      out: str | Path, *, space_path: str | None = None,
                      device: str | None = None, log: Callable[[str], None] = print
                      ) -> LatencyTable:
    """Adapt `ref` to the whole subnets a bundle's runner measured on a remote device."""
    from nas.latency.bundle import (check_space_arg, measurements, read_bundle, read_results,
                                    results_info)

    out = Path(out)
    _check_out(out)
    manifest, space = read_bundle(bundle)
    check_space_arg(space, space_path)
    ref.check_space(space, correction=False)
    res = read_results(results, manifest)
    info = results_info(res, manifest, device)
    _, arch_ms = measurements(res, manifest)
    if not arch_ms:
        raise UserError("the bundle holds no whole subnets to adapt to; make one with "
                        "`gaze-nas lut bundle --samples K`", source=str(bundle), field="models")
    archs = [space.parse(a) for a in arch_ms]
    log(f"adapt {ref.device} -> {info['device']} (bundle {manifest['bundle_id'][:12]}): "
        f"{len(archs)} subnets measured there")
    feats = key_features(space, list(keys_of_space(space)), _features_cache(out, space), log)
    table = adapt_table(ref, space, archs, [arch_ms[a.to_string()] for a in archs], info,
                        feats=feats, source={"measured_with": "bundle",
                                             "bundle_id": manifest["bundle_id"]})
    table.save(out)
    _log_done(table, out, log)
    return table


def _log_done(table: LatencyTable, out: Path, log: Callable[[str], None]) -> None:
    v = table.validation or {}
    m = table.meta["adapted"]["model"]
    tau = v.get("kendall_tau")
    log(f"adapted table: {out} ({len(table.entries)} entries); on the {v.get('n')} measured "
        f"subnets (leave-one-out): MAPE {v.get('mape', float('nan')):.2f}%, within 10% "
        f"{v.get('within_10', float('nan')):.0%}, Kendall tau "
        f"{'n/a' if tau is None else f'{tau:.3f}'}; scale s={m['s']:.3f}")
