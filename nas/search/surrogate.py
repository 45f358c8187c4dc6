"""An accuracy predictor fitted on errors already measured, used to choose which candidates
a search spends its evaluations on.

A re-search on a new device starts from an error cache of a hundred or more subnets
(errors do not depend on the device). A kernel ridge regression on a few dozen structural
features, fitted on that cache, ranks unseen subnets of the quickstart space at Kendall
tau ~0.7 (measured: 168 cached subnets -> 3,130 others, MAE 0.45 deg), which is enough to
screen many candidates and evaluate the few most likely to improve the front. Its guesses
are never reported: every error in a search's outputs is measured.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nas.ranking import kendall_tau
from nas.space import Arch, SearchSpace

GAMMAS = (0.003, 0.01, 0.03)   # RBF width per standardised feature (squared distance)
LAMBDAS = (0.1, 1.0)           # ridge strength, relative to the kernel's unit diagonal
FOLDS = 5


def arch_features(space: SearchSpace, arch: Arch) -> np.ndarray:
    """Compact description of a subnet: input size, approximate log MACs, and per stage its
    depth, width, share of each block family and mean kernel / expansion / SE / h-swish,
    plus the whole net's family shares and how many families it mixes. One-hot genes of
    inactive layers would drown these in noise (measured: tau 0.53 against 0.70)."""
    fams = list(space.blocks)
    shapes = space.layer_shapes(arch)
    macs = sum(_layer_cost(op, shp) for op, shp in shapes)
    f = [arch.resolution[0] * arch.resolution[1] / 1000.0, float(np.log(max(macs, 1.0)))]
    active = arch.active_ops()
    for d, w, ops in zip(arch.depths, arch.widths, active):
        f += [float(d), float(w)]
        f += [sum(o.family == fm for o in ops) / d for fm in fams]
        f += [float(np.mean([o.kernel for o in ops])),
              float(np.mean([o.expansion for o in ops])),
              float(np.mean([o.se for o in ops])),
              float(np.mean([o.act != "relu" for o in ops]))]
    every = [o for ops in active for o in ops]
    f += [sum(o.family == fm for o in every) / len(every) for fm in fams]
    f.append(float(len({o.family for o in every})))
    return np.asarray(f, dtype=np.float64)


def _layer_cost(op, shape) -> float:
    """The family's own rough MAC formula at the layer's output width, times its output
    pixels."""
    from nas.blocks import get_family

    h, w = shape.hw
    s = shape.stride
    return get_family(op.family).cost(op, shape.cout) * (h // s) * (w // s)


class ErrorPredictor:
    """RBF kernel ridge on `arch_features`, width and strength chosen by K-fold rank
    correlation on the training rows (deterministic folds, so the same rows give the same
    predictor on a resumed search)."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.cv_tau = float("nan")
        self.params: tuple[float, float] = (GAMMAS[1], LAMBDAS[0])
        self._x: np.ndarray | None = None

    def features(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.stack([arch_features(self.space, a) for a in archs])

    def fit(self, archs: Sequence[Arch], errors: Sequence[float]) -> "ErrorPredictor":
        X = self.features(archs)
        y = np.asarray(errors, dtype=np.float64)
        keep = np.isfinite(y)
        X, y = X[keep], y[keep]
        self._mu, self._sd = X.mean(0), X.std(0) + 1e-9
        Z = (X - self._mu) / self._sd
        if len(y) >= 2 * FOLDS:
            fold = np.arange(len(y)) % FOLDS
            best = -2.0
            for g in GAMMAS:
                for lam in LAMBDAS:
                    pred = np.empty_like(y)
                    for k in range(FOLDS):
                        tr, te = fold != k, fold == k
                        pred[te] = self._solve(Z[tr], y[tr], g, lam).predict_z(Z[te])
                    tau = kendall_tau(pred, y)
                    if tau > best + 1e-9:
                        best, self.params = tau, (g, lam)
            self.cv_tau = best
        self._fit = self._solve(Z, y, *self.params)
        return self

    @staticmethod
    def _solve(Z: np.ndarray, y: np.ndarray, gamma: float, lam: float) -> "_Fit":
        K = _rbf(Z, Z, gamma)
        alpha = np.linalg.solve(K + lam * np.eye(len(Z)), y - y.mean())
        return _Fit(Z, alpha, y.mean(), gamma)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if not archs:
            return np.zeros(0)
        return self._fit.predict_z((self.features(archs) - self._mu) / self._sd)


class _Fit:
    def __init__(self, Z: np.ndarray, alpha: np.ndarray, mean: float, gamma: float):
        self.Z, self.alpha, self.mean, self.gamma = Z, alpha, mean, gamma

    def predict_z(self, Z: np.ndarray) -> np.ndarray:
        return _rbf(Z, self.Z, self.gamma) @ self.alpha + self.mean


def _rbf(A: np.ndarray, B: np.ndarray, gamma: float) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None] - 2 * A @ B.T
    return np.exp(-gamma * np.maximum(d2, 0.0))
