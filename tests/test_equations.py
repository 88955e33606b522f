"""Eqs. 1-5 and the float16-code histogram on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uncerda_core.artifacts import UncerdaError
from uncerda_core.uncertainty import equations as eq
from uncerda_core.uncertainty.codes import (N_CODES, class_code_histogram, code_values, image_class_means,
                                            image_unit_histogram, mean_codes)


# --- Eq. 2 -------------------------------------------------------------------

def test_entropy_uniform_is_one_and_onehot_is_zero():
    prob = np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    ent = eq.normalized_entropy(prob, axis=1)
    assert ent[0] == pytest.approx(1.0)
    assert ent[1] == 0.0 and not np.signbit(ent[1])


def test_entropy_hand_value():
    # p = (0.5, 0.5, 0): -(2 * 0.5 log 0.5) / log 3 = log 2 / log 3
    ent = eq.normalized_entropy(np.array([[0.5], [0.5], [0.0]]), axis=0)
    assert ent[0] == pytest.approx(math.log(2) / math.log(3), rel=1e-12)


def test_entropy_float16_cast_has_no_negative_zero():
    prob = np.array([[1.0, 0.0], [1.0 - 1e-17, 1e-17]])
    codes = eq.normalized_entropy(prob, axis=1).astype(np.float16).view(np.uint16)
    assert codes.max() <= 0x3C00


# --- histogram / Eq. 1 ----------------------------------------------------------

def test_code_values():
    v = code_values()
    assert len(v) == N_CODES == 15361
    assert v[0] == 0.0 and v[-1] == 1.0
    assert np.all(np.diff(v) > 0)
    assert v[0x3800] == 0.5


def test_class_code_histogram_counts_and_errors():
    argmax = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    values = np.array([[0.5, 0.0], [1.0, 0.0]], dtype=np.float16)
    hist = class_code_histogram(argmax, values, 3)
    assert hist.shape == (3, N_CODES) and hist.dtype == np.int64
    assert hist[0, 0x3800] == 1 and hist[1, 0] == 2 and hist[1, 0x3C00] == 1 and hist.sum() == 4
    with pytest.raises(UncerdaError, match="outside"):
        class_code_histogram(argmax, np.array([[-0.0, 0], [0, 0]], dtype=np.float16), 3)
    with pytest.raises(UncerdaError, match="outside"):
        class_code_histogram(argmax, np.array([[1.5, 0], [0, 0]], dtype=np.float16), 3)
    with pytest.raises(UncerdaError, match="float16"):
        class_code_histogram(argmax, values.astype(np.float32), 3)
    with pytest.raises(UncerdaError, match="class id"):
        class_code_histogram(argmax, values, 1)


def test_class_uncertainty_matches_direct_mean():
    rng = np.random.default_rng(0)
    argmax = rng.integers(0, 3, size=(40, 50)).astype(np.uint8)
    values = rng.random((40, 50)).astype(np.float16)
    unc = eq.class_uncertainty(class_code_histogram(argmax, values, 4))
    for c in range(3):
        direct = values[argmax == c].astype(np.float64).mean()
        assert unc[c] == pytest.approx(direct, rel=1e-12)
    assert np.isnan(unc[3])  # class 3 never predicted


def test_class_uncertainty_hand_example():
    hist = np.zeros((2, N_CODES), dtype=np.int64)
    hist[0, 0x3800] = 3   # three pixels at 0.5
    hist[0, 0x3C00] = 1   # one at 1.0
    assert eq.class_uncertainty(hist)[0] == pytest.approx(0.625)


def test_image_unit_statistics():
    argmax = np.array([0, 0, 1, 1, 1], dtype=np.uint8)
    values = np.array([0.25, 0.75, 0.0, 0.5, 1.0], dtype=np.float16)
    counts, means = image_class_means(argmax, values, 3)
    assert counts.tolist() == [2, 3, 0]
    assert means[0] == 0.5 and means[1] == 0.5 and np.isnan(means[2])
    hist = image_unit_histogram(argmax, values, 3)
    assert hist.sum() == 2 and hist[0, 0x3800] == 1 and hist[1, 0x3800] == 1
    assert mean_codes(np.array([np.nan, 0.5])).tolist() == [0, 0x3800]


# --- ranking -------------------------------------------------------------------------

def test_top_k_nan_ranks_first_and_ties_by_id():
    unc = np.array([0.2, np.nan, 0.5, 0.5, 0.1, np.nan])
    assert eq.rank_order(unc) == [1, 5, 2, 3, 0, 4]
    assert eq.top_k_uncertain(unc, 3) == [1, 5, 2]
    with pytest.raises(UncerdaError):
        eq.top_k_uncertain(unc, 7)


# --- Eq. 3 ----------------------------------------------------------------------------

def test_balanced_power_hand_values():
    n = np.array([[4.0, 0.0, 9.0], [1.0, 16.0, 0.0]])
    np.testing.assert_allclose(eq.balanced_power(n, 0.5), [[2.0, 0.0, 3.0], [1.0, 4.0, 0.0]])
    np.testing.assert_allclose(eq.balanced_power(n, 1.0), [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(eq.balanced_power(n, 0.0), n)


def test_class_prob_no_balance_every_pixel_equal():
    n = np.array([100.0, 10.0, 0.0, 890.0])
    p = eq.class_sampling_prob(n, balance=0.0)
    np.testing.assert_allclose(p, [1 / 1000, 1 / 1000, 0.0, 1 / 1000])


def test_class_prob_full_balance_every_class_equal():
    n = np.array([100.0, 10.0, 0.0, 890.0])
    p = eq.class_sampling_prob(n, balance=1.0)
    np.testing.assert_allclose(p * n, [1 / 3, 1 / 3, 0.0, 1 / 3])


def test_class_prob_half_balance_hand_value():
    n = np.array([4.0, 16.0])
    p = eq.class_sampling_prob(n, balance=0.5)   # sqrt: 2, 4 -> shares 1/3, 2/3
    np.testing.assert_allclose(p, [1 / 3 / 4, 2 / 3 / 16])


# --- Eq. 4 ---------------------------------------------------------------------------

def test_image_prob_hand_example():
    x = np.array([[10, 0, 30],      # S_k = {0, 2}: w = (1/4, 3/4) at balance 0
                  [0, 50, 0],       # no S_k class -> 0
                  [0, 5, 8]])       # only class 2 -> w = 1
    p_c = np.array([0.1, 0.2, 0.3])
    p = eq.image_sampling_prob(x, p_c, [0, 2], balance=0.0)
    np.testing.assert_allclose(p, [0.25 * 0.1 + 0.75 * 0.3, 0.0, 0.3])
    p1 = eq.image_sampling_prob(x, p_c, [0, 2], balance=1.0)   # equal weights of present classes
    np.testing.assert_allclose(p1, [0.2, 0.0, 0.3])


# --- Eq. 5 ---------------------------------------------------------------------------

def test_smoothing_limits():
    w = eq.smooth_probability(np.array([0.0, 2.0, 4.0]), alpha=80, mu=0.02)
    assert w[0] == pytest.approx(0.1 + 1 / (1 + math.exp(1.6)))       # ~0.268
    assert w[0] == pytest.approx(0.268, abs=1e-3)
    assert w[2] == pytest.approx(0.1 + 1 / (1 + math.exp(-80 * 0.98)))  # ~1.1 after normalisation
    assert w[1] == pytest.approx(0.1 + 1 / (1 + math.exp(-80 * 0.48)))


def test_smoothing_all_zero_gives_equal_weights():
    w = eq.smooth_probability(np.zeros(4), alpha=80, mu=0.02)
    assert np.all(w == w[0])


def test_sampling_weights_composition():
    x = np.array([[10, 0, 30], [0, 50, 0], [0, 5, 8]])
    out = eq.sampling_weights(x, [0, 2], balance=0.0, alpha=80, mu=0.02, reading="weighted_mean")
    # balance 0: p_c = 1/103 for every class, so p_i = 1/103 where an S_k class is present
    np.testing.assert_allclose(out["p_i"], [1 / 103, 0.0, 1 / 103])
    np.testing.assert_allclose(out["p_norm"], [1.0, 0.0, 1.0])
    assert out["probability"].sum() == pytest.approx(1.0)
    assert out["weight"][1] == pytest.approx(0.1 + 1 / (1 + math.exp(1.6)))


# --- Eqs. 3-5, class-draw reading (the default) ---------------------------------------------

def test_class_draw_prob_by_hand():
    n = np.array([10.0, 0.0, 5.0, 85.0])
    np.testing.assert_allclose(eq.class_draw_prob(n, 0.0), [0.1, 0.0, 0.05, 0.85])        # by pixels
    np.testing.assert_allclose(eq.class_draw_prob(n, 1.0), [1 / 3, 0.0, 1 / 3, 1 / 3])    # every class alike
    roots = np.sqrt([10.0, 5.0, 85.0])
    np.testing.assert_allclose(eq.class_draw_prob(n, 0.5), np.insert(roots / roots.sum(), 1, 0.0))
    # Eq. 3's per-pixel p_c is q_c spread over the class's pixels.
    np.testing.assert_allclose(eq.class_sampling_prob(n, 0.5) * n, eq.class_draw_prob(n, 0.5))
    with pytest.raises(UncerdaError, match="balance"):
        eq.class_draw_prob(n, 1.5)


def test_image_reach_prob_by_hand():
    # 3 images x 3 classes; N = [4, 4, 2].
    x = np.array([[2.0, 0.0, 1.0], [0.0, 4.0, 1.0], [2.0, 0.0, 0.0]])
    q = np.full(3, 1 / 3)
    # Image 1: class 0 drawn (1/3) then one of its 4 pixels, 2 of them there; class 2: 1 of its 2 pixels.
    np.testing.assert_allclose(eq.image_reach_prob(x, q, [0, 1, 2]), [(2 / 4 + 1 / 2) / 3, (4 / 4 + 1 / 2) / 3,
                                                                     (2 / 4) / 3])
    assert eq.image_reach_prob(x, q, [0, 1, 2]).sum() == pytest.approx(1.0)   # a distribution over images
    np.testing.assert_allclose(eq.image_reach_prob(x, q, [1]), [0.0, 1 / 3, 0.0])   # S_k = {1}: only image 2
    with pytest.raises(UncerdaError, match="class ids"):
        eq.image_reach_prob(x, q, [3])


def test_gated_weight_by_hand():
    low = 0.1 + 1 / (1 + math.exp(1.6))                       # Eq. 5 at 0: 0.268
    w = eq.gated_weight(np.array([0.0, 0.02, 1.0]), alpha=80, mu=0.02)
    np.testing.assert_allclose(w, [0.02 * low, 0.04 * 0.6, 1.02 * (0.1 + 1 / (1 + math.exp(-80 * 0.98)))])
    # An image no S_k class reaches stays drawable, 0.27 mu against about 1.12 at the top.
    assert w[0] > 0 and w[2] / w[0] == pytest.approx(1.02 * 1.1 / (0.02 * low), rel=1e-6)
    np.testing.assert_allclose(eq.reading_weight(np.array([0.5]), 80, 0.02, "weighted_mean"),
                               eq.logistic_weight(np.array([0.5]), 80, 0.02))
    with pytest.raises(UncerdaError, match="reading"):
        eq.reading_weight(np.array([0.5]), 80, 0.02, "printed")


def test_class_draw_balance_zero_draws_uniformly_and_one_towards_the_rare_class():
    # Every image holds 100 labelled pixels; class 2 is rare (two images, 5 pixels each).
    x = np.array([[60, 40, 0], [50, 45, 5], [55, 40, 5], [70, 30, 0]], dtype=float)
    flat = eq.sampling_weights(x, [0, 1, 2], balance=0.0, alpha=80, mu=0.02)
    np.testing.assert_allclose(flat["probability"], np.full(4, 0.25))   # every pixel alike: uniform
    balanced = eq.sampling_weights(x, [0, 1, 2], balance=1.0, alpha=80, mu=0.02)
    # q = 1/3 each; p_i = (x0/235 + x1/155 + x2/10) / 3: the two images with the rare class lead.
    p_i = (x[:, 0] / 235 + x[:, 1] / 155 + x[:, 2] / 10) / 3
    np.testing.assert_allclose(balanced["p_i"], p_i)
    np.testing.assert_allclose(balanced["p_norm"], p_i / p_i.max())
    drawn = balanced["probability"]
    assert drawn[1] > drawn[0] and drawn[2] > drawn[3]
    # They sit on Eq. 5's flat top: the draw weight is their reach (p_norm + mu) times 1.1.
    top = 0.1 + 1 / (1 + np.exp(-80 * (p_i / p_i.max() - 0.02)))
    np.testing.assert_allclose(balanced["weight"], (p_i / p_i.max() + 0.02) * top)
    with pytest.raises(UncerdaError, match="reading"):
        eq.sampling_weights(x, [0], 0.5, 80, 0.02, reading="flat")
