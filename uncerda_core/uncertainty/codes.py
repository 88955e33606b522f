"""Float16 codes of values in [0, 1] and per-class counts of them: pure array functions, no files.

A float16 in [0, 1] is one of 15,361 bit patterns (codes 0x0000..0x3C00,
ascending in value). Entropy and max probability are stored as float16, so a
(C, 15361) table of counts per (predicted class, code) holds *all* the
information Eq. 1 and Eq. 6 need, exactly, in one ``np.bincount`` per image
(docs/method.md#exact-float16-histograms). The maps writer counts with these
while it writes (``maps.py``); ``histogram.py`` counts a whole maps file.
"""

from __future__ import annotations

import numpy as np

from uncerda_core.errors import UncerdaError

N_CODES = 15361
ONE_CODE = 0x3C00  # float16 1.0


def code_values() -> np.ndarray:
    """(15361,) float64: the value of each float16 code 0x0000..0x3C00 (ascending)."""
    return np.arange(N_CODES, dtype=np.uint16).view(np.float16).astype(np.float64)


def to_codes(values_f16: np.ndarray, what: str = "values") -> np.ndarray:
    """The uint16 codes of float16 values, checked to lie in [0, 1] (and not be -0.0)."""
    values_f16 = np.asarray(values_f16)
    if values_f16.dtype != np.float16:
        raise UncerdaError(f"{what}: float16 values expected, got {values_f16.dtype}")
    codes = values_f16.view(np.uint16)
    if codes.size and codes.max() > ONE_CODE:
        raise UncerdaError(f"{what}: float16 value outside [0, 1] (or -0.0 / NaN); "
                           "clip to [0, 1] (mapping -0.0 to 0) before the float16 cast")
    return codes


def check_argmax(argmax: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    argmax = np.asarray(argmax)
    if argmax.dtype.kind not in "ui":
        raise UncerdaError(f"{what}: integer class ids expected, got {argmax.dtype}")
    if argmax.size and (argmax.max() >= num_classes or argmax.min() < 0):
        raise UncerdaError(f"{what}: class id {int(argmax.max())} outside [0, {num_classes})")
    return argmax


def pixel_keys(argmax: np.ndarray, codes: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``argmax * N_CODES + codes`` as intp into ``out`` (one buffer, reused across images)."""
    np.copyto(out, argmax.ravel())
    np.multiply(out, N_CODES, out=out)
    np.add(out, codes.ravel(), out=out)
    return out


def add_pixel_counts(hist_flat: np.ndarray, argmax: np.ndarray, codes: np.ndarray, keys: np.ndarray) -> None:
    """Add one image's (class, code) pixel counts to a flat (C * 15361,) int64 table, in place.

    ``keys`` is a reusable intp buffer of the image's size (see :func:`pixel_keys`).
    """
    hist_flat += np.bincount(pixel_keys(argmax, codes, keys), minlength=hist_flat.size)


def class_code_histogram(argmax: np.ndarray, values_f16: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, 15361) int64 counts of pixels per (predicted class, float16 code).

    ``argmax`` and ``values_f16`` have the same shape (any). A value outside
    [0, 1], NaN or -0.0 raises :class:`UncerdaError`.
    """
    if np.shape(argmax) != np.shape(values_f16):
        raise UncerdaError(f"class_code_histogram: argmax {np.shape(argmax)} and values "
                           f"{np.shape(values_f16)} differ in shape")
    argmax = check_argmax(argmax, num_classes, "class_code_histogram")
    codes = to_codes(values_f16, "class_code_histogram")
    keys = pixel_keys(argmax, codes, np.empty(argmax.size, dtype=np.intp))
    return np.bincount(keys, minlength=num_classes * N_CODES).reshape(num_classes, N_CODES)


def image_class_means(argmax: np.ndarray, values_f16: np.ndarray,
                      num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image statistics for ``gmm_unit: image``: (C,) pixel counts and (C,) mean values.

    The mean of a class absent from the image is NaN.
    """
    argmax = check_argmax(argmax, num_classes, "image_class_means").ravel()
    to_codes(values_f16, "image_class_means")
    counts = np.bincount(argmax, minlength=num_classes)
    sums = np.bincount(argmax, weights=np.asarray(values_f16, dtype=np.float64).ravel(), minlength=num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return counts, means


def mean_codes(means: np.ndarray) -> np.ndarray:
    """Per-image class means rounded to float16 codes (NaN -> 0; callers mask absent classes).

    Rounding a mean to float16 (relative error <= 2^-11) lets the image-level
    GMM reuse the same code histogram and selection table as the pixel-level one.
    """
    m = np.where(np.isnan(means), 0.0, np.clip(means, 0.0, 1.0))
    return (m + 0.0).astype(np.float16).view(np.uint16)


def image_unit_histogram(argmax: np.ndarray, values_f16: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, 15361) counts of *images*: one count per class present, at the code of its mean value."""
    counts, means = image_class_means(argmax, values_f16, num_classes)
    hist = np.zeros((num_classes, N_CODES), dtype=np.int64)
    present = np.flatnonzero(counts)
    hist[present, mean_codes(means[present])] = 1
    return hist


FIELDS = ("entropy", "maxprob")   # also the pixel histograms a maps file carries (``hist_<field>``, maps.py)
