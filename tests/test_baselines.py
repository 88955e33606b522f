"""CBST, fixed threshold and argmax selection tables on hand-made histograms."""

from __future__ import annotations

import numpy as np
import pytest

from uncerda_core.artifacts import UncerdaError
from uncerda_core.pseudo.baselines import argmax_table, cbst_table, cbst_thresholds, threshold_table
from uncerda_core.uncertainty.codes import N_CODES, class_code_histogram, code_values


def _hist(per_class):
    argmax = np.concatenate([np.full(len(v), c, np.uint8) for c, v in enumerate(per_class)])
    values = np.concatenate([np.asarray(v, np.float16) for v in per_class]).astype(np.float16)
    return class_code_histogram(argmax, values, len(per_class))


def _code(x):
    return int(np.float16(x).view(np.uint16))


def test_cbst_keeps_top_portion_per_class():
    hist = _hist([[0.9, 0.8, 0.7, 0.6], [0.3, 0.2, 0.1], []])
    table, thresholds, reasons = cbst_table(hist, portion=0.5)
    # class 0: ceil(0.5 * 4) = 2 kept -> threshold 0.8; class 1: ceil(1.5) = 2 -> 0.2
    assert thresholds[0] == float(np.float16(0.8)) and thresholds[1] == float(np.float16(0.2))
    assert np.isnan(thresholds[2]) and reasons == ["", "", "never predicted"]
    assert table[0, _code(0.8)] and not table[0, _code(0.7)] and table[0, -1]
    assert table[1, _code(0.2)] and not table[1, _code(0.1)]
    assert not table[2].any()
    kept = [(hist[c] * table[c]).sum() for c in range(3)]
    assert kept == [2, 2, 0]


def test_cbst_ties_keep_all_at_threshold_and_small_portion_keeps_one():
    hist = _hist([[0.9, 0.8, 0.8, 0.6]])
    table, thresholds, _ = cbst_table(hist, portion=0.5)
    assert (hist[0] * table[0]).sum() == 3
    assert cbst_thresholds(hist, 0.01)[0] == _code(0.9)
    assert cbst_thresholds(hist, 1.0)[0] == _code(0.6)
    with pytest.raises(UncerdaError):
        cbst_thresholds(hist, 0.0)


def test_cbst_min_pixels():
    hist = _hist([[0.9, 0.8], [0.5] * 10])
    table, _, reasons = cbst_table(hist, 0.5, min_pixels=5)
    assert not table[0].any() and "too few pixels" in reasons[0] and table[1].any()


def test_fixed_threshold_and_argmax():
    table = threshold_table(2, 0.9)
    values = code_values()
    assert table.shape == (2, N_CODES)
    assert table[1, _code(0.9)] and table[0, -1] and not table[0, _code(0.899) - 1]
    assert table[0].sum() == np.count_nonzero(values >= float(np.float16(0.9)))
    assert argmax_table(3).all() and argmax_table(3).shape == (3, N_CODES)
