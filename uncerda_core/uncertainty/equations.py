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
    if not 0.0 <= balance <= 1.0:
        raise UncerdaError(f"class_sampling_prob: balance must be in [0, 1], got {balance}")
    n = np.asarray(class_pixels, dtype=np.float64)
    if np.any(n < 0):
        raise UncerdaError("class_sampling_prob: negative pixel counts")
    present = n > 0
    powered = balanced_power(n, balance)
    total = powered.sum()
    if total == 0:
        return np.zeros_like(n)
    return np.where(present, powered / total / np.where(present, n, 1.0), 0.0)


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

    The normalisation is ours (docs/method.md#normalising-before-eq-5): alpha = 80 and mu = 0.02
    only make sense for p in [0, 1] with most mass near 0, whereas the raw
    Eq. 4 values are of order 1 / (source pixels). With it, images with no
    S_k class weigh about 0.27 and the richest about 1.1. If every p_i is 0,
    every image gets the same weight.
    """
    return logistic_weight(normalize_by_max(p_i), alpha, mu)


def sampling_weights(image_class_pixels: np.ndarray, classes: Sequence[int], balance: float,
                     alpha: float, mu: float) -> dict[str, np.ndarray]:
    """Eqs. 3-5 composed: per source image ``p_i``, ``p_norm``, ``weight`` and ``probability``.

    N_c of Eq. 3 is the column sum of ``image_class_pixels`` (M, C).
    ``probability = weight / sum(weight)`` is what images are drawn with
    (with replacement).
    """
    x = np.asarray(image_class_pixels, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise UncerdaError(f"sampling_weights: need a non-empty (M, C) count array, got shape {x.shape}")
    p_c = class_sampling_prob(x.sum(axis=0), balance)
    p_i = image_sampling_prob(x, p_c, classes, balance)
    p_norm = normalize_by_max(p_i)
    weight = smooth_probability(p_i, alpha, mu)   # Eq. 5 on p_norm
    return {"p_i": p_i, "p_norm": p_norm, "weight": weight,
            "probability": weight / weight.sum()}
