"""Pareto arithmetic on objective matrices (numpy only, every objective minimised).

`F` is an (n, m) array: one row per point, one column per objective. Inputs must not
contain NaN (a NaN compares false with everything, so it would silently become
"non-dominated"); use +inf for a value that should lose, or filter infeasible points first.
"""

from __future__ import annotations

from typing import Hashable, Iterable

import numpy as np

_CHUNK = 256  # rows per block when building pairwise comparisons (bounds memory)


def _as_matrix(F: np.ndarray) -> np.ndarray:
    F = np.asarray(F, dtype=float)
    if F.ndim == 1:
        F = F.reshape(-1, 1)
    if F.ndim != 2:
        raise ValueError(f"expected an (n, m) objective matrix, got shape {F.shape}")
    if np.isnan(F).any():
        raise ValueError("objective matrix contains NaN; filter or replace it with +inf")
    return F


def _dominates_block(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """D[i, j] = A[i] dominates B[j] (no worse everywhere, strictly better somewhere)."""
    le = np.ones((A.shape[0], B.shape[0]), dtype=bool)
    lt = np.zeros_like(le)
    for k in range(A.shape[1]):  # one objective at a time: no slow reduction over a short axis
        a, b = A[:, k, None], B[None, :, k]
        le &= a <= b
        lt |= a < b
    return le & lt


def non_dominated_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the Pareto-optimal rows of `F`.

    Duplicates: identical points do not dominate each other, but a front that lists the
    same point twice is useless to a reader, so only the first occurrence (lowest index)
    of a set of identical non-dominated points is kept. A dominated point is never kept.
    """
    F = _as_matrix(F)
    n, m = F.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if m == 1:
        mask = np.zeros(n, dtype=bool)
        mask[int(np.argmin(F[:, 0]))] = True  # argmin returns the first minimum
        return mask
    if m == 2:
        # Sort by (f0, f1, index); a point survives iff its f1 beats every earlier one.
        order = np.lexsort((np.arange(n), F[:, 1], F[:, 0]))
        f1 = F[order, 1]
        prev_min = np.minimum.accumulate(np.concatenate(([np.inf], f1[:-1])))
        keep = f1 < prev_min
        keep[0] = True  # the lexicographic minimum always survives, even with f1 = inf
        mask = np.zeros(n, dtype=bool)
        mask[order] = keep
        return mask
    mask = np.ones(n, dtype=bool)
    idx = np.arange(n)
    for s in range(0, n, _CHUNK):
        B = F[s:s + _CHUNK]
        dominated = _dominates_block(F, B).any(axis=0)
        same = np.ones((n, B.shape[0]), dtype=bool)
        for k in range(m):
            same &= F[:, k, None] == B[None, :, k]
        earlier_dup = (same & (idx[:, None] < idx[None, s:s + _CHUNK])).any(axis=0)
        mask[s:s + _CHUNK] = ~dominated & ~earlier_dup
    return mask


def nondominated_sort(F: np.ndarray) -> list[np.ndarray]:
    """Fronts of row indices, best first (NSGA-II ranking).

    Unlike `non_dominated_mask`, identical points share a front here: ranking must place
    every point, and a copy is not dominated by its twin. O(n^2) time and n^2 bits of
    memory: about 0.1 s for 2000 points.
    """
    F = _as_matrix(F)
    n = F.shape[0]
    if n == 0:
        return []
    D = np.zeros((n, n), dtype=bool)
    for s in range(0, n, _CHUNK):
        D[s:s + _CHUNK] = _dominates_block(F[s:s + _CHUNK], F)
    n_dominators = D.sum(axis=0).astype(np.int64)
    assigned = np.zeros(n, dtype=bool)
    fronts: list[np.ndarray] = []
    while not assigned.all():
        front = np.flatnonzero((n_dominators == 0) & ~assigned)
        fronts.append(front)
        assigned[front] = True
        n_dominators -= D[front].sum(axis=0)
    return fronts


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within the set `F` (normally one front).

    Boundary points of every objective get +inf so the extremes of a front always survive;
    objectives with zero spread add nothing.
    """
    F = _as_matrix(F)
    n, m = F.shape
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for k in range(m):
        order = np.argsort(F[:, k], kind="stable")
        v = F[order, k]
        dist[order[0]] = dist[order[-1]] = np.inf
        span = v[-1] - v[0]
        if not np.isfinite(span) or span <= 0:
            continue
        dist[order[1:-1]] += (v[2:] - v[:-2]) / span
    return dist


def hypervolume_2d(F: np.ndarray, ref: Iterable[float]) -> float:
    """Area dominated by the points of `F` (n, 2) and bounded by the reference point `ref`.

    Points that are not strictly better than `ref` in both objectives add nothing.
    """
    F = _as_matrix(F)
    r = np.asarray(list(ref), dtype=float)
    if F.shape[0] == 0:
        return 0.0
    if F.shape[1] != 2 or r.shape != (2,):
        raise ValueError("hypervolume_2d needs (n, 2) points and a 2-element reference point")
    F = F[(F[:, 0] < r[0]) & (F[:, 1] < r[1])]
    if F.shape[0] == 0:
        return 0.0
    P = F[non_dominated_mask(F)]
    P = P[np.argsort(P[:, 0], kind="stable")]  # f0 ascending => f1 descending on a front
    right = np.append(P[1:, 0], r[0])
    return float(np.sum((right - P[:, 0]) * (r[1] - P[:, 1])))


def hypervolume(F: np.ndarray, ref: Iterable[float]) -> float:
    """Volume dominated by the points of `F` (n, m) and bounded by `ref`, for any m (a
    search over several devices has one latency axis per device). m = 2 is
    `hypervolume_2d`.

    Exact, by WFG's exclusive volumes (While, Bradstreet, Barone 2012): with the points
    sorted by the last objective, worst first, each point adds the slab below it times its
    (m-1)-dimensional volume not already covered by the points after it (their "limit
    set", which is small once reduced to its non-dominated part). Milliseconds for the
    fronts of a search with a few devices.
    """
    F = _as_matrix(F)
    r = np.asarray(list(ref), dtype=float)
    if r.ndim != 1 or (F.shape[0] and F.shape[1] != r.size):
        raise ValueError(f"hypervolume needs (n, {r.size}) points for a {r.size}-element "
                         f"reference point, got shape {F.shape}")
    F = F[(F < r).all(axis=1)] if F.shape[0] else F
    if F.shape[0] == 0:
        return 0.0
    if r.size == 1:
        return float(r[0] - F[:, 0].min())
    return _wfg(F[non_dominated_mask(F)], r)


def _wfg(P: np.ndarray, r: np.ndarray) -> float:
    """Hypervolume of non-dominated points P, all strictly better than r."""
    if P.shape[1] == 2:
        return hypervolume_2d(P, r)
    P = P[np.argsort(-P[:, -1], kind="stable")]
    total = 0.0
    for k in range(len(P)):
        head = P[k, :-1]
        excl = float(np.prod(r[:-1] - head))
        if k + 1 < len(P):
            limit = np.maximum(head, P[k + 1:, :-1])
            excl -= _wfg(limit[non_dominated_mask(limit)], r[:-1])
        total += (r[-1] - P[k, -1]) * excl
    return total


def best_under_budget(F_err: np.ndarray, F_lat: np.ndarray,
                      budgets: Iterable[Hashable]) -> dict:
    """For each latency budget, the index of the lowest-error point with latency <= budget.

    Ties on error go to the lower latency, then the lower index (the same representative
    `non_dominated_mask` keeps). `None` where nothing fits the budget.
    """
    err = np.asarray(F_err, dtype=float).ravel()
    lat = np.asarray(F_lat, dtype=float).ravel()
    if err.shape != lat.shape:
        raise ValueError(f"F_err and F_lat differ in length ({err.size} vs {lat.size})")
    ok = ~(np.isnan(err) | np.isnan(lat))
    order = np.lexsort((np.arange(err.size), lat, err))  # by error, latency, index
    order = order[ok[order]]
    out: dict = {}
    for b in budgets:
        fits = order[lat[order] <= float(b)]
        out[b] = int(fits[0]) if fits.size else None
    return out
