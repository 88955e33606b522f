"""Baseline pseudo-label selections over the float16 codes of the max probability.

Each returns a per-class boolean table over the 15,361 codes, like the GMM,
so one code path applies any method: ``label = argmax if table[argmax, code]
else 255``.

- ``cbst``: class-balanced self-training thresholds (Zou et al., ECCV 2018):
  per class, the confidence of the ``ceil(portion * N_c)``-th most confident
  of its N_c predicted pixels, found exactly from the code histogram; pixels
  at or above it are kept (ties at the threshold are all kept, so slightly
  more than the portion can be selected).
- ``threshold``: one fixed confidence for every class (``maxprob >= t``).
- ``argmax``: every pixel kept (no selection).
"""

from __future__ import annotations

import math

import numpy as np

from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.codes import N_CODES, code_values


def cbst_thresholds(hist: np.ndarray, portion: float) -> np.ndarray:
    """(C,) threshold code per class (-1 for a class with no pixels); ``hist`` is (C, 15361)."""
    if not 0.0 < portion <= 1.0:
        raise UncerdaError(f"cbst: portion must be in (0, 1], got {portion}")
    hist = np.asarray(hist)
    out = np.full(hist.shape[0], -1, dtype=np.int64)
    from_top = np.cumsum(hist[:, ::-1], axis=1)           # pixels at or above code K-1-j
    for c in range(hist.shape[0]):
        total = int(from_top[c, -1])
        if total == 0:
            continue
        keep = max(1, math.ceil(portion * total))
        j = int(np.searchsorted(from_top[c], keep))         # first j with >= keep pixels at or above
        out[c] = hist.shape[1] - 1 - j
    return out


def cbst_table(hist: np.ndarray, portion: float, min_pixels: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CBST selection: (table (C, 15361), threshold values (C,) NaN where none, reasons)."""
    hist = np.asarray(hist)
    codes = cbst_thresholds(hist, portion)
    values = code_values()
    table = np.zeros(hist.shape, dtype=bool)
    thresholds = np.full(hist.shape[0], np.nan)
    reasons = []
    for c, code in enumerate(codes):
        pixels = int(hist[c].sum())
        if pixels == 0:
            reasons.append("never predicted")
        elif pixels < min_pixels:
            reasons.append(f"too few pixels ({pixels} < min_pixels={min_pixels})")
        else:
            table[c, code:] = True
            thresholds[c] = values[code]
            reasons.append("")
    return table, thresholds, reasons


def threshold_table(num_classes: int, threshold: float) -> np.ndarray:
    """Fixed confidence: ``table[c, code] = value(code) >= float16(threshold)`` for every class.

    The threshold is rounded to float16 like the stored values, so a pixel whose
    confidence was ``threshold`` before the cast stays selected (float16(0.9) < 0.9).
    """
    if not 0.0 <= threshold <= 1.0:
        raise UncerdaError(f"threshold: must be in [0, 1], got {threshold}")
    t16 = float(np.float16(threshold))
    return np.broadcast_to(code_values() >= t16, (num_classes, N_CODES)).copy()


def argmax_table(num_classes: int) -> np.ndarray:
    """No selection: every pixel keeps its argmax."""
    return np.ones((num_classes, N_CODES), dtype=bool)
