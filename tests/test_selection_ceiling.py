"""benchmarks/selection_ceiling.py: the best per-class prefix selection, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_helpers import load_benchmark


def _module():
    return load_benchmark("selection_ceiling")


def test_hull_drops_the_points_below_a_chord():
    ceiling = _module()
    # (0,0) (1,0) (3,2): (1,0) lies below the chord to (3,2) -> one segment of slope 2/3
    assert ceiling.upper_hull_segments(np.array([1, 3]), np.array([0, 2])) == [(3.0, pytest.approx(2 / 3))]
    # (0,0) (2,2) (4,2): slope 1 then 0; a repeated x keeps the higher point
    assert ceiling.upper_hull_segments(np.array([2, 2, 4]), np.array([1, 2, 2])) == [(2.0, 1.0), (2.0, 0.0)]


def test_best_correct_takes_the_steepest_segments_of_all_classes_first():
    ceiling = _module()
    a = (np.array([2, 4]), np.array([2, 2]))   # 2 right, then 2 wrong
    b = (np.array([1, 3]), np.array([0, 2]))   # 1 wrong, then 2 right: hull slope 2/3 over 3
    curves = [a, b]
    assert ceiling.best_correct(curves, 2) == pytest.approx(2.0)              # class a's first two
    assert ceiling.best_correct(curves, 4) == pytest.approx(2 + 2 * 2 / 3)    # then 2 of b's hull (a bound)
    assert ceiling.best_correct(curves, 5) == pytest.approx(4.0)              # a vertex: 2 + 2, reached
    assert ceiling.best_correct(curves, 7) == pytest.approx(4.0)              # a's wrong pixels add nothing
    # every combination of one prefix per class lies on or below the envelope
    sizes_a, right_a, sizes_b, right_b = [0, 2, 4], [0, 2, 2], [0, 1, 3], [0, 0, 2]
    for i in range(3):
        for j in range(3):
            assert right_a[i] + right_b[j] <= ceiling.best_correct(curves, sizes_a[i] + sizes_b[j]) + 1e-9
