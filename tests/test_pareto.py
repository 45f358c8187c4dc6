"""Pareto arithmetic against brute force on random point sets with ties and duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from nas.search.pareto import (best_under_budget, crowding_distance, hypervolume_2d,
                               non_dominated_mask, nondominated_sort)


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def brute_mask(F: np.ndarray) -> np.ndarray:
    n = len(F)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if dominates(F[j], F[i]) or (j < i and np.array_equal(F[j], F[i])):
                keep[i] = False
                break
    return keep


def point_sets():
    rng = np.random.default_rng(123)
    for m in (1, 2, 3):
        for n in (0, 1, 2, 7, 40, 120):
            yield rng.random((n, m))                                # continuous
            yield rng.integers(0, 4, size=(n, m)).astype(float)     # many ties, duplicates
    yield np.ones((5, 2))                                           # all identical
    yield np.array([[1, 2], [1, 2], [2, 1], [2, 1], [1, 3], [3, 1], [0.5, np.inf]])


_SETS = list(point_sets())


@pytest.mark.parametrize("k", range(len(_SETS)))
def test_mask_matches_brute_force(k):
    F = _SETS[k]
    np.testing.assert_array_equal(non_dominated_mask(F), brute_mask(F))


def test_mask_keeps_first_of_identical_points():
    F = np.array([[2.0, 2.0], [1.0, 3.0], [2.0, 2.0], [3.0, 3.0]])
    assert non_dominated_mask(F).tolist() == [True, True, False, False]


def test_mask_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        non_dominated_mask(np.array([[1.0, np.nan]]))


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_nondominated_sort_fronts(m, ties):
    rng = np.random.default_rng(7 + m)
    F = rng.integers(0, 6, size=(150, m)).astype(float) if ties else rng.random((150, m))
    fronts = nondominated_sort(F)
    allidx = np.concatenate(fronts)
    assert sorted(allidx.tolist()) == list(range(len(F)))          # a partition
    for front in fronts:                                             # each non-dominated
        for i in front:
            assert not any(dominates(F[j], F[i]) for j in front)
    for k in range(1, len(fronts)):                                  # each one earned its rank
        better = np.concatenate(fronts[:k])
        for i in fronts[k]:
            assert any(dominates(F[j], F[i]) for j in better)
    mask = non_dominated_mask(F)                                     # front 0 = mask + twins
    assert set(np.flatnonzero(mask)) <= set(fronts[0].tolist())
    reps = {tuple(F[i]) for i in np.flatnonzero(mask)}
    assert {tuple(F[i]) for i in fronts[0]} == reps


def test_nondominated_sort_2000_points():
    F = np.random.default_rng(0).random((2000, 2))
    fronts = nondominated_sort(F)
    assert sum(len(f) for f in fronts) == 2000
    np.testing.assert_array_equal(np.sort(fronts[0]), np.flatnonzero(non_dominated_mask(F)))


def test_crowding_distance():
    F = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
    cd = crowding_distance(F)
    assert np.isinf(cd[0]) and np.isinf(cd[3])
    np.testing.assert_allclose(cd[1:3], [3 / 4 + 3 / 4, 3 / 4 + 3 / 4])
    assert np.isinf(crowding_distance(F[:2])).all()
    flat = crowding_distance(np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]))
    assert flat[1] == pytest.approx(1.0)  # zero-spread objective adds nothing


def test_hypervolume_known_configurations():
    assert hypervolume_2d(np.array([[1.0, 1.0]]), (3, 3)) == pytest.approx(4.0)
    two = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert hypervolume_2d(two, (3, 3)) == pytest.approx(3.0)
    more = np.vstack([two, [[2.5, 2.5], [2.0, 1.0], [5.0, 0.0], [0.0, 3.0]]])
    assert hypervolume_2d(more, (3, 3)) == pytest.approx(3.0)  # dominated/outside add 0
    assert hypervolume_2d(np.zeros((0, 2)), (1, 1)) == 0.0


def test_hypervolume_matches_grid_count():
    rng = np.random.default_rng(5)
    for _ in range(20):
        P = rng.integers(0, 10, size=(rng.integers(1, 15), 2)).astype(float)
        # unit cells [x, x+1] x [y, y+1] inside the reference box dominated by some point
        cells = sum(any(p[0] <= x and p[1] <= y for p in P)
                    for x in range(10) for y in range(10))
        assert hypervolume_2d(P, (10, 10)) == pytest.approx(cells)


def test_best_under_budget():
    err = np.array([5.0, 3.0, 3.0, 1.0, 2.0, 3.0])
    lat = np.array([1.0, 2.0, 1.5, 9.0, 4.0, 1.5])
    best = best_under_budget(err, lat, [0.5, 1.0, 1.5, 3.0, 4.0, 100.0])
    # tie on error 3.0 at 1.5 ms between rows 2 and 5: the lower index wins
    assert best == {0.5: None, 1.0: 0, 1.5: 2, 3.0: 2, 4.0: 4, 100.0: 3}
    rng = np.random.default_rng(1)
    e, l = rng.integers(0, 5, 60).astype(float), rng.integers(0, 5, 60).astype(float)
    for b, i in best_under_budget(e, l, [0, 1, 2, 3, 4]).items():
        fits = np.flatnonzero(l <= b)
        assert i is not None and l[i] <= b and e[i] == e[fits].min()
