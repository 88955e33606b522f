"""The paper's uncertainty and sampling equations (Eqs. 1-5), as pure functions.

Every function takes arrays and returns arrays; nothing here reads or writes
files. docs/method.md explains the reading of each equation where the
paper leaves a choice open.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.codes import code_values


def _clip_unit(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] mapping -0.0 (and NaN) to +0.0, so a float16 cast never yields code 0x8000."""
    return np.where(x > 0, np.minimum(x, 1.0), 0.0)


def normalized_entropy(prob: np.ndarray, axis: int = 1) -> np.ndarray:
    """Eq. 2: pixel entropy ``I = -(1/log C) sum_c p_c log p_c``, in [0, 1].

    ``prob`` holds class probabilities along ``axis`` (C = its length, C >= 2);
    ``0 log 0`` is taken as 0. The result is clipped to [0, 1] (rounding can
    leave it a hair outside) with -0.0 turned into +0.0. Returned in float64.
    """
    p = np.asarray(prob, dtype=np.float64)
    num_classes = p.shape[axis]
    if num_classes < 2:
        raise UncerdaError(f"normalized_entropy: need at least 2 classes along axis {axis}, got {num_classes}")
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return _clip_unit(-plogp.sum(axis=axis) / np.log(num_classes))


def class_uncertainty(hist: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """Eq. 1: mean entropy of the pixels predicted as each class.

    ``hist`` is the (C, K) per-class histogram of entropy codes (see
    :mod:`uncerda_core.uncertainty.codes`); ``values`` the (K,) value of each
    code (default: the 15,361 float16 codes in [0, 1]). Because every stored
    entropy is one of those codes, the mean is exact (up to float64 summation).
    A class with no pixels gets NaN.
    """
    if values is None:
        values = code_values()
    hist = np.asarray(hist)
    if hist.ndim != 2 or hist.shape[1] != len(values):
        raise UncerdaError(f"class_uncertainty: histogram of shape (C, {len(values)}) expected, got {hist.shape}")
    counts = hist.sum(axis=1).astype(np.float64)
    sums = hist.astype(np.float64) @ np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)


def rank_order(class_unc: np.ndarray) -> list[int]:
    """All class ids ordered from most to least uncertain (Eq. 1 value descending).

    A class never predicted (NaN) ranks as *most* uncertain: no prediction at all
    is the extreme of "hard to transfer" (docs/method.md#class-ranking-eq-1). Ties, and NaNs
    among themselves, are broken by the smaller class id first.
    """
    unc = np.asarray(class_unc, dtype=np.float64)
    return sorted(range(len(unc)), key=lambda c: (0 if np.isnan(unc[c]) else 1,
                                                  0.0 if np.isnan(unc[c]) else -unc[c], c))


def top_k_uncertain(class_unc: np.ndarray, k: int) -> list[int]:
    """S_k: the ``k`` classes with the largest Eq. 1 value, most uncertain first.

    NaN (never predicted) ranks as most uncertain; ties are broken by class id.
    """
    n = len(class_unc)
    if not 1 <= k <= n:
        raise UncerdaError(f"top_k_uncertain: k must be in [1, {n}] (number of classes), got {k}")
    return rank_order(class_unc)[:k]


def balanced_power(pixel_counts: np.ndarray, balance: float) -> np.ndarray:
    """The shared term of Eqs. 3 and 4: ``N^(1-balance)`` for ``N > 0``, 0 where ``N = 0``.

    Eq. 3 applies it to the source pixels of each class, Eq. 4 (its ``w_c(x)``
    numerator) to the pixels of each class in one image.
    """
    n = np.asarray(pixel_counts, dtype=np.float64)
    present = n > 0
    return np.where(present, np.where(present, n, 1.0) ** (1.0 - balance), 0.0)


def class_draw_prob(class_pixels: np.ndarray, balance: float) -> np.ndarray:
    """Eq. 3 as the chance of drawing each class: ``q_c = N_c^(1-balance) / sum_c' N_c'^(1-balance)``.

    ``q_c = p_c N_c`` (:func:`class_sampling_prob` spreads it over the class's pixels). balance 0 draws
    classes in proportion to their pixels, 1 draws every present class equally often; ``q_c = 0`` for
    a class without pixels.
    """
    if not 0.0 <= balance <= 1.0:
        raise UncerdaError(f"class_draw_prob: balance must be in [0, 1], got {balance}")
    n = np.asarray(class_pixels, dtype=np.float64)
    if np.any(n < 0):
        raise UncerdaError("class_draw_prob: negative pixel counts")
    powered = balanced_power(n, balance)
    total = powered.sum()
    return powered / total if total > 0 else np.zeros_like(n)


def class_sampling_prob(class_pixels: np.ndarray, balance: float) -> np.ndarray:
    """Eq. 3: per-pixel sampling probability of each class over the source set.

    ``p_c = N_c^(1-balance) / sum_c' N_c'^(1-balance) / N_c``, with N_c the
    source pixels of class c; ``p_c = 0`` when ``N_c = 0``.

    The paper's prose calls lambda = 1 "no balance" while Table 4 reports 1.0
    as class balance (best 0.9). We expose ``balance`` in [0, 1] read the way
    Table 4 does: 0 = no balance (every source pixel equally likely,
    ``p_c = 1 / sum N``), 1 = full class balance (every present class equally
    likely, ``p_c N_c = 1 / #classes``).
    """
    q = class_draw_prob(class_pixels, balance)
    n = np.asarray(class_pixels, dtype=np.float64)
    present = n > 0
    return np.where(present, q / np.where(present, n, 1.0), 0.0)


def image_sampling_prob(image_class_pixels: np.ndarray, p_c: np.ndarray, classes: Sequence[int],
                        balance: float) -> np.ndarray:
    """Eq. 4: sampling probability of each source image from its S_k classes.

    ``p_i(x) = sum_{c in S_k present in x} w_c(x) p_c`` with
    ``w_c(x) = N_c(x)^(1-balance) / sum_{c' in S_k present in x} N_c'(x)^(1-balance)``
    (the exponent convention of :func:`class_sampling_prob`).
    ``image_class_pixels`` is (M, C); ``classes`` the ids of S_k. Images with
    no pixel of any S_k class get ``p_i = 0``.
    """
    x = np.asarray(image_class_pixels, dtype=np.float64)
    idx = np.asarray(list(classes), dtype=np.intp)
    if x.ndim != 2 or len(idx) == 0 or idx.min() < 0 or idx.max() >= x.shape[1]:
        raise UncerdaError(f"image_sampling_prob: need an (M, C) count array and class ids in [0, C); "
                           f"got shape {x.shape} and classes {list(classes)}")
    powered = balanced_power(x[:, idx], balance)
    denom = powered.sum(axis=1)
    numer = (powered * np.asarray(p_c, dtype=np.float64)[idx]).sum(axis=1)
    return np.where(denom > 0, numer / np.where(denom > 0, denom, 1.0), 0.0)


def normalize_by_max(p_i: np.ndarray) -> np.ndarray:
    """``p_i / max p_i``; all zeros stay zeros."""
    p = np.asarray(p_i, dtype=np.float64)
    top = p.max() if p.size else 0.0
    return p / top if top > 0 else np.zeros_like(p)


def logistic_weight(p_norm: np.ndarray, alpha: float, mu: float) -> np.ndarray:
    """Eq. 5 on normalised probabilities: ``0.1 + 1 / (1 + exp(-alpha (p_norm - mu)))``."""
    z = alpha * (np.asarray(p_norm, dtype=np.float64) - mu)
    # 0.5 (1 + tanh(z/2)) is the logistic function without overflow for large |z|.
    return 0.1 + 0.5 * (1.0 + np.tanh(0.5 * z))


def smooth_probability(p_i: np.ndarray, alpha: float, mu: float) -> np.ndarray:
    """Eq. 5: ``p_hat = 0.1 + 1 / (1 + exp(-alpha (p - mu)))`` with ``p = p_i / max p_i``.

    The weighted-mean reading (docs/method.md, "The weighted-mean reading"); the normalisation is ours:
    alpha = 80 and mu = 0.02
    only make sense for p in [0, 1] with most mass near 0, whereas the raw
    Eq. 4 values are of order 1 / (source pixels). With it, images with no
    S_k class weigh about 0.27 and the richest about 1.1. If every p_i is 0,
    every image gets the same weight.
    """
    return logistic_weight(normalize_by_max(p_i), alpha, mu)


def image_reach_prob(image_class_pixels: np.ndarray, q: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Eq. 4, class-draw reading: the chance that one draw lands on each source image.

    ``p_i(x) = sum_{c in S_k} q_c N_c(x) / N_c``: a class c of S_k is drawn with Eq. 3's ``q_c``, then
    one of its source pixels uniformly (per pixel ``p_c = q_c / N_c``, Eq. 3's own form); the image is
    reached once for each of its S_k classes ("repeatedly sampled by each category it contains").
    Summed over the images it gives ``sum_{c in S_k} q_c`` (1 when S_k is every class present).
    ``image_class_pixels`` is (M, C); an image with no S_k pixel gets 0.
    """
    x = np.asarray(image_class_pixels, dtype=np.float64)
    idx = np.asarray(list(classes), dtype=np.intp)
    if x.ndim != 2 or len(idx) == 0 or idx.min() < 0 or idx.max() >= x.shape[1]:
        raise UncerdaError(f"image_reach_prob: need an (M, C) count array and class ids in [0, C); "
                           f"got shape {x.shape} and classes {list(classes)}")
    totals = x[:, idx].sum(axis=0)
    share = np.where(totals > 0, x[:, idx] / np.where(totals > 0, totals, 1.0), 0.0)   # N_c(x) / N_c
    return share @ np.asarray(q, dtype=np.float64)[idx]


def gated_weight(p_norm: np.ndarray, alpha: float, mu: float) -> np.ndarray:
    """Eq. 5, class-draw reading: ``(p_norm + mu) * (0.1 + 1 / (1 + exp(-alpha (p_norm - mu))))``.

    The draw weight keeps the reach ``p_norm = p_i / max p_i`` and Eq. 5's curve acts where it rises:
    an image reached less than a few ``mu`` of the most reached one is damped (to 0.27 of its reach at
    the bottom, for alpha 80, mu 0.02), above that the curve is flat (1.1) and the reach passes
    through; ``+ mu`` keeps an image that no S_k class reaches drawable (weight ``0.27 mu``), the
    paper's reason for smoothing ("sometimes goes towards zero"). docs/method.md, "The class-draw reading".
    """
    z = np.asarray(p_norm, dtype=np.float64)
    return (z + mu) * logistic_weight(z, alpha, mu)


SAMPLING_READINGS = ("class_draw", "weighted_mean")


def reading_weight(p_norm: np.ndarray, alpha: float, mu: float, reading: str) -> np.ndarray:
    """Eq. 5 under ``reading``: the draw weight of an image from ``p_norm = p_i / max p_i``.

    ``class_draw``: :func:`gated_weight`; ``weighted_mean``: :func:`logistic_weight`.
    """
    if reading not in SAMPLING_READINGS:
        raise UncerdaError(f"sampling weights: reading must be one of {', '.join(SAMPLING_READINGS)}, got {reading!r}")
    return gated_weight(p_norm, alpha, mu) if reading == "class_draw" else logistic_weight(p_norm, alpha, mu)


def sampling_weights(image_class_pixels: np.ndarray, classes: Sequence[int], balance: float,
                     alpha: float, mu: float, reading: str = "class_draw") -> dict[str, np.ndarray]:
    """Eqs. 3-5 composed: per source image ``p_i``, ``p_norm``, ``weight`` and ``probability``.

    ``reading`` (docs/method.md#source-sampling-eqs-3-5):

    - ``class_draw``: ``p_i`` the chance that a class draw (Eq. 3) and then one of its pixels reaches
      the image (:func:`image_reach_prob`), weight :func:`gated_weight`;
    - ``weighted_mean``: Eq. 4 as printed, a weighted mean of Eq. 3's per-pixel probabilities over the
      image's S_k classes (:func:`image_sampling_prob`), weight Eq. 5 on ``p_i / max p_i``
      (:func:`smooth_probability`). Nearly flat wherever most images hold some S_k class.

    N_c of Eq. 3 is the column sum of ``image_class_pixels`` (M, C); ``p_norm = p_i / max p_i``.
    ``probability = weight / sum(weight)`` is what images are drawn with (with replacement).
    """
    x = np.asarray(image_class_pixels, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise UncerdaError(f"sampling_weights: need a non-empty (M, C) count array, got shape {x.shape}")
    if reading == "class_draw":
        p_i = image_reach_prob(x, class_draw_prob(x.sum(axis=0), balance), classes)
    else:
        p_i = image_sampling_prob(x, class_sampling_prob(x.sum(axis=0), balance), classes, balance)
    p_norm = normalize_by_max(p_i)
    weight = reading_weight(p_norm, alpha, mu, reading)
    return {"p_i": p_i, "p_norm": p_norm, "weight": weight,
            "probability": weight / weight.sum()}
