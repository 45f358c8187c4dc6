"""The LUT correction fit and the fidelity metrics that judge it.

`measured ~ a * sum + b * parts + c`: `a` rescales the per-layer sum (a whole graph is not
timed in the warm, isolated state its layers were), `b` takes back the fixed cost of one
`sess.run` that every separately timed part carried, `c` is the whole net's own fixed cost.
Leave-one-out predictions are what the headline figures use, so a fit that merely memorises
its samples cannot look good.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

IDENTITY = {"a": 1.0, "b": 0.0, "c": 0.0}
MIN_SAMPLES_FULL_FIT = 4


def _scale_only(sums: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    den = float(sums @ sums)
    a = float(sums @ measured) / den if den > 0 else 1.0
    return {"a": a if a > 0 and math.isfinite(a) else 1.0, "b": 0.0, "c": 0.0}


def fit_correction(sums: Sequence[float], parts: Sequence[float],
                   measured: Sequence[float]) -> dict[str, float]:
    """Least-squares (a, b, c) with a > 0 and c >= 0; with fewer than 4 samples, a
    rank-deficient design or a fit outside those bounds it falls back to fewer terms
    ((a, c), then (a, b)) and finally to a pure scale."""
    s = np.asarray(sums, dtype=np.float64)
    p = np.asarray(parts, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    if not (len(s) == len(p) == len(y)):
        raise ValueError("sums, parts and measured must have the same length")
    if len(y) == 0:
        return dict(IDENTITY)
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
    """a * sum + b * parts + c, elementwise."""
    return (corr["a"] * np.asarray(sums, dtype=np.float64)
            + corr["b"] * np.asarray(parts, dtype=np.float64) + corr["c"])


def loo_predictions(sums: Sequence[float], parts: Sequence[float],
                    measured: Sequence[float]) -> np.ndarray:
    """Prediction of each sample by the correction fitted on all the others."""
    s, p, y = (np.asarray(v, dtype=np.float64) for v in (sums, parts, measured))
    out = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        corr = fit_correction(s[keep], p[keep], y[keep])
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
