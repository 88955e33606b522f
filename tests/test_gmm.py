"""Eq. 6: EM on the float16-code histogram, selection tables and degenerate classes."""

from __future__ import annotations

import numpy as np
import pytest

from uncerda_core.pseudo.gmm import (MIN_STD, GMMFit, fit_gmm_1d, init_params, select_class, selection_intervals,
                                     selection_table, single_mode)
from uncerda_core.uncertainty.codes import N_CODES, class_code_histogram, code_values

VALUES = code_values()


def _mixture(n, w, m, s, seed=0):
    rng = np.random.default_rng(seed)
    comp = rng.random(n) < w[0]
    x = np.where(comp, rng.normal(m[0], s[0], n), rng.normal(m[1], s[1], n))
    return np.clip(x, 0.0, 1.0).astype(np.float16)


def _hist(x16):
    return class_code_histogram(np.zeros(x16.shape, np.uint8), x16, 1)[0]


def test_em_recovers_known_mixture():
    x = _mixture(200_000, (0.6, 0.4), (0.1, 0.6), (0.03, 0.1))
    fit = fit_gmm_1d(VALUES, _hist(x), tol=1e-10)
    assert fit.converged
    np.testing.assert_allclose(fit.means, [0.1, 0.6], atol=3e-3)
    np.testing.assert_allclose(fit.stds, [0.03, 0.1], atol=3e-3)
    np.testing.assert_allclose(fit.weights, [0.6, 0.4], atol=5e-3)


def _raw_em(x, w, m, var, tol, max_iter):
    """Textbook EM over individual samples (float64), the reference for the histogram EM."""
    prev = -np.inf
    for _ in range(max_iter):
        dens = np.stack([w[k] / np.sqrt(2 * np.pi * var[k]) * np.exp(-(x - m[k]) ** 2 / (2 * var[k]))
                         for k in range(2)])
        total = dens.sum(axis=0)
        ll = np.log(total).mean()
        if abs(ll - prev) < tol:
            break
        prev = ll
        r = dens / total
        nk = r.sum(axis=1)
        w = nk / len(x)
        m = (r * x).sum(axis=1) / nk
        var = np.maximum((r * (x[None] - m[:, None]) ** 2).sum(axis=1) / nk, MIN_STD ** 2)
    return w, m, var


def test_histogram_em_equals_raw_sample_em():
    x16 = _mixture(20_000, (0.5, 0.5), (0.2, 0.5), (0.05, 0.15), seed=1)
    x = np.sort(x16.astype(np.float64))
    # the same start computed from the raw samples: the lower and upper half of the sorted samples
    lo, hi = x[:10_000], x[10_000:]
    w0, m0, v0 = np.array([0.5, 0.5]), np.array([lo.mean(), hi.mean()]), np.array([lo.var(), hi.var()])
    hw, hm, hv = init_params(VALUES, _hist(x16))
    np.testing.assert_allclose(hm, m0, rtol=1e-12)
    np.testing.assert_allclose(hv, v0, rtol=1e-10)
    w, m, var = _raw_em(x, w0, m0, v0, tol=1e-10, max_iter=1000)
    fit = fit_gmm_1d(VALUES, _hist(x16), tol=1e-10, max_iter=1000)
    np.testing.assert_allclose(fit.means, m, atol=1e-7)
    np.testing.assert_allclose(fit.stds, np.sqrt(var), atol=1e-7)
    np.testing.assert_allclose(fit.weights, w, atol=1e-7)


def test_selection_single_threshold():
    fit = GMMFit(np.array([0.5, 0.5]), np.array([0.2, 0.6]), np.array([0.1, 0.1]), 0.0, 1, True)
    mask = selection_table(fit, VALUES)
    # equal weights and stds: the posterior crosses 0.5 at the midpoint 0.4
    assert selection_intervals(mask, VALUES) == [(0.0, float(VALUES[VALUES < 0.4][-1]))]


def test_selection_two_crossings():
    w, m, s = np.array([0.5, 0.5]), np.array([0.3, 0.5]), np.array([0.2, 0.02])
    fit = GMMFit(w, m, s, 0.0, 1, True)
    intervals = selection_intervals(selection_table(fit, VALUES, high_tail=True), VALUES)
    # crossings: roots of log N(x; .3, .2) = log N(x; .5, .02)
    a = 1 / (2 * s[1] ** 2) - 1 / (2 * s[0] ** 2)
    b = -m[1] / s[1] ** 2 + m[0] / s[0] ** 2
    c = m[1] ** 2 / (2 * s[1] ** 2) - m[0] ** 2 / (2 * s[0] ** 2) + np.log(s[1] / s[0])
    r1, r2 = sorted(np.roots([a, b, c]))
    assert len(intervals) == 2
    assert intervals[0][0] == 0.0 and intervals[1][1] == 1.0
    assert intervals[0][1] == pytest.approx(r1, abs=5e-4) and intervals[1][0] == pytest.approx(r2, abs=5e-4)
    assert intervals[0][1] < r1 < intervals[1][0] and intervals[1][0] > r2 - 5e-4


def test_high_tail_is_cut_at_the_negative_mean_by_default():
    w, m, s = np.array([0.5, 0.5]), np.array([0.3, 0.5]), np.array([0.2, 0.02])
    fit = GMMFit(w, m, s, 0.0, 1, True)
    full = selection_intervals(selection_table(fit, VALUES, high_tail=True), VALUES)
    default = selection_intervals(selection_table(fit, VALUES), VALUES)
    # Only the low-entropy interval survives; nothing above the negative mean 0.5 is selected.
    assert default == full[:1]
    assert max(hi for _, hi in default) < 0.5


def test_selection_reaches_down_to_zero_when_the_positive_component_is_narrower():
    # Positive N(0.4, 0.02) is narrow; the wide negative N(0.6, 0.2) wins again below ~0.34.
    fit = GMMFit(np.array([0.5, 0.5]), np.array([0.4, 0.6]), np.array([0.02, 0.2]), 0.0, 1, True)
    plain = selection_intervals(selection_table(fit, VALUES, high_tail=True), VALUES)
    assert len(plain) == 1 and plain[0][0] > 0.3  # the posterior rule alone drops the most certain pixels
    default = selection_intervals(selection_table(fit, VALUES), VALUES)
    assert default == [(0.0, plain[0][1])]


def test_selection_intervals_runs():
    mask = np.array([False, True, True, False, True])
    assert selection_intervals(mask, np.array([0.0, 0.1, 0.2, 0.3, 0.4])) == [(0.1, 0.2), (0.4, 0.4)]
    assert selection_intervals(np.zeros(3, bool), np.arange(3.0)) == []


def test_degenerate_classes():
    zero = np.zeros(N_CODES, np.int64)
    sel = select_class(zero, VALUES, min_pixels=50)
    assert sel.reason == "never predicted" and not sel.mask.any()
    few = zero.copy()
    few[100] = 10
    few[5000] = 10
    sel = select_class(few, VALUES, min_pixels=50)
    assert "too few pixels" in sel.reason and not sel.mask.any()
    one = zero.copy()
    one[0x3800] = 1000
    sel = select_class(one, VALUES, min_pixels=50)
    assert sel.reason.startswith("single mode") and sel.mask.all()


def test_single_mode_rule():
    same = GMMFit(np.array([0.5, 0.5]), np.array([0.3, 0.3]), np.array([0.1, 0.1]), 0.0, 3, True)
    tiny = GMMFit(np.array([1e-8, 1 - 1e-8]), np.array([0.1, 0.3]), np.array([0.1, 0.1]), 0.0, 3, True)
    two = GMMFit(np.array([0.5, 0.5]), np.array([0.1, 0.3]), np.array([0.1, 0.1]), 0.0, 3, True)
    assert single_mode(same) and single_mode(tiny) and not single_mode(two)


def test_variance_collapse_keeps_fit_and_notes_it():
    spikes = np.zeros(N_CODES, np.int64)
    spikes[np.searchsorted(VALUES, 0.1)] = 500
    spikes[np.searchsorted(VALUES, 0.8)] = 500
    sel = select_class(spikes, VALUES, min_pixels=50)
    assert sel.reason == "" and any("variance floor" in n for n in sel.notes)
    np.testing.assert_allclose(sel.fit.stds, [MIN_STD, MIN_STD])
    np.testing.assert_allclose(sel.fit.means, [VALUES[np.searchsorted(VALUES, 0.1)],
                                               VALUES[np.searchsorted(VALUES, 0.8)]])
    assert sel.mask[VALUES < 0.4].all() and not sel.mask[VALUES > 0.5].any()


def test_explicit_init_starts_from_given_parameters():
    x = _mixture(50_000, (0.5, 0.5), (0.2, 0.7), (0.05, 0.05), seed=2)
    fit = fit_gmm_1d(VALUES, _hist(x))
    again = fit_gmm_1d(VALUES, _hist(x), init=(fit.weights, fit.means, fit.stds ** 2))
    assert again.n_iter <= 3
    np.testing.assert_allclose(again.means, fit.means, atol=1e-9)
