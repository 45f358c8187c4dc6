"""The LUT correction fit and the fidelity metrics that judge it.

Two forms of correction, told apart by their keys; a fit picks the one with the lower
leave-one-out MAPE on its samples (`best_form`):
- **power**: `measured ~ scale * sum ** exponent * exp(per_part * parts)`,
  a least-squares line in log space. Its errors are relative, as the headline figures are,
  so the fastest subnets weigh as much as the slowest: on this machine's tables it cut the
  leave-one-out MAPE from 9.9-11.4 % to 7.6-8.3 % and predicted the fastest subnet at
  0.96-1.18x its measured time where the linear form gave 0.27-0.77x (README).
- **linear** (older tables, adapted tables, and the fallback): `measured ~ a * sum + b *
  parts + c`: `a` rescales the per-layer sum (a whole graph is not timed in the warm,
  isolated state its layers were), `b` takes back the fixed cost of one `sess.run` that
  every separately timed part carried, `c` is the whole net's own fixed cost.
Leave-one-out predictions are what the headline figures use, so a fit that merely memorises
its samples cannot look good.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

IDENTITY = {"a": 1.0, "b": 0.0, "c": 0.0}
POWER_KEYS = ("scale", "exponent", "per_part")
FORMS = ("power", "linear")
MIN_SAMPLES_FULL_FIT = 4


def correction_form(corr: dict[str, float]) -> str:
    """`power` or `linear`, by the correction's keys."""
    return "power" if "exponent" in corr else "linear"


def _fit_power(s: np.ndarray, p: np.ndarray, y: np.ndarray) -> dict[str, float] | None:
    """Least squares of log(measured) on (log sum, parts, 1); None where it cannot be fitted
    (too few samples, a non-positive time, a rank-deficient design, a non-positive exponent)."""
    if len(y) < MIN_SAMPLES_FULL_FIT or (s <= 0).any() or (y <= 0).any():
        return None
    X = np.column_stack([np.log(s), p, np.ones_like(s)])
    if np.linalg.matrix_rank(X) < 3:
        return None
    (e, q, r), *_ = np.linalg.lstsq(X, np.log(y), rcond=None)
    fit = {"scale": float(np.exp(r)), "exponent": float(e), "per_part": float(q)}
    ok = fit["exponent"] > 0 and fit["scale"] > 0
    return fit if ok and all(math.isfinite(v) for v in fit.values()) else None


def _scale_only(sums: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    den = float(sums @ sums)
    a = float(sums @ measured) / den if den > 0 else 1.0
    return {"a": a if a > 0 and math.isfinite(a) else 1.0, "b": 0.0, "c": 0.0}


def best_form(sums: Sequence[float], parts: Sequence[float],
              measured: Sequence[float]) -> str:
    """The form whose leave-one-out MAPE on these samples is lower (power on a tie): on
    this machine power wins on onnxruntime tables and linear on the torch backend's."""
    y = np.asarray(measured, dtype=np.float64)
    if len(y) <= MIN_SAMPLES_FULL_FIT:
        return "power"
    mape = {f: float(np.mean(np.abs(loo_predictions(sums, parts, y, f) - y) / y))
            for f in FORMS}
    return "power" if mape["power"] <= mape["linear"] else "linear"


def fit_correction(sums: Sequence[float], parts: Sequence[float],
                   measured: Sequence[float], form: str = "auto") -> dict[str, float]:
    """The correction in `form` (`auto`: the one `best_form` picks). The `power` form where
    it can be fitted; else (or with `form="linear"`) least-squares (a, b, c) with a > 0 and
    c >= 0, which with fewer than 4 samples, a rank-deficient design or a fit outside those
    bounds falls back to fewer terms ((a, c), then (a, b)) and finally to a pure scale."""
    if form == "auto":
        form = best_form(sums, parts, measured)
    if form not in FORMS:
        raise ValueError(f"unknown correction form {form!r}; expected auto or one of {FORMS}")
    s = np.asarray(sums, dtype=np.float64)
    p = np.asarray(parts, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    if not (len(s) == len(p) == len(y)):
        raise ValueError("sums, parts and measured must have the same length")
    if len(y) == 0:
        return dict(IDENTITY)
    if form == "power":
        fit = _fit_power(s, p, y)
        if fit is not None:
            return fit
    if len(y) < MIN_SAMPLES_FULL_FIT:
        return _scale_only(s, y)
    for cols in (("a", "b", "c"), ("a", "c"), ("a", "b")):
        X = np.column_stack([{"a": s, "b": p, "c": np.ones_like(s)}[n] for n in cols])
        if np.linalg.matrix_rank(X) < len(cols):
            continue
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        fit = dict(IDENTITY, b=0.0, c=0.0)
        fit.update({n: float(v) for n, v in zip(cols, coef)})
        # c is the whole net's own fixed cost: a negative one only fits the sampled range
        # and predicts absurdly small (or negative) times for the fastest subnets
        if fit["a"] > 0 and fit["c"] >= 0 and all(math.isfinite(v) for v in fit.values()):
            return fit
    return _scale_only(s, y)


def apply_correction(corr: dict[str, float], sums: Sequence[float] | float,
                     parts: Sequence[float] | float) -> np.ndarray:
    """The corrected latency, elementwise, in the correction's own form."""
    s = np.asarray(sums, dtype=np.float64)
    p = np.asarray(parts, dtype=np.float64)
    if correction_form(corr) == "power":
        with np.errstate(divide="ignore", invalid="ignore"):
            return corr["scale"] * np.power(s, corr["exponent"]) * np.exp(corr["per_part"] * p)
    return corr["a"] * s + corr["b"] * p + corr["c"]


def describe_correction(corr: dict[str, float]) -> str:
    """One line for messages: the form with its fitted numbers."""
    if correction_form(corr) == "power":
        return (f"{corr['scale']:.4g} * sum^{corr['exponent']:.4g} * "
                f"exp({corr['per_part']:.4g} * parts)")
    return f"a={corr['a']:.4g}, b={corr['b']:.4g}, c={corr['c']:.4g}"


def loo_predictions(sums: Sequence[float], parts: Sequence[float],
                    measured: Sequence[float], form: str = "auto") -> np.ndarray:
    """Prediction of each sample by the correction fitted on all the others (with `auto`,
    the form is chosen on those others too, so the choice is cross-validated as well)."""
    s, p, y = (np.asarray(v, dtype=np.float64) for v in (sums, parts, measured))
    out = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        corr = fit_correction(s[keep], p[keep], y[keep], form)
        out[i] = apply_correction(corr, s[i], p[i])
    return out


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either ranking handled), O(n^2): plenty for K ~ 40."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    conc = disc = tie_x = tie_y = 0
    for i in range(n - 1):
        dx = np.sign(x[i + 1:] - x[i])
        dy = np.sign(y[i + 1:] - y[i])
        prod = dx * dy
        conc += int((prod > 0).sum())
        disc += int((prod < 0).sum())
        tie_x += int(((dx == 0) & (dy != 0)).sum())
        tie_y += int(((dy == 0) & (dx != 0)).sum())
    den = math.sqrt((conc + disc + tie_x) * (conc + disc + tie_y))
    return (conc - disc) / den if den > 0 else float("nan")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """scipy's tau-b where scipy is installed, else our own."""
    try:
        from scipy.stats import kendalltau
    except ImportError:
        return kendall_tau_b(x, y)
    return float(kendalltau(x, y).statistic)


def fidelity(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%), share within 5 % / 10 %, rank agreement, max error (%), count."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if len(m) == 0:
        return {"mape": float("nan"), "within_5": float("nan"), "within_10": float("nan"),
                "kendall_tau": float("nan"), "max_err": float("nan"), "n": 0}
    rel = np.abs(p - m) / m
    tau = kendall_tau(p, m) if len(m) > 1 else float("nan")
    return {"mape": float(rel.mean() * 100), "within_5": float((rel <= 0.05).mean()),
            "within_10": float((rel <= 0.10).mean()), "kendall_tau": float(tau),
            "max_err": float(rel.max() * 100), "n": int(len(m))}
