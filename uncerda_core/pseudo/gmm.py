"""Eq. 6: a two-component 1-D Gaussian mixture per class, fitted by EM on a histogram.

The entropies of the pixels predicted as class c are float16 codes, so the
(C, 15361) code histogram holds them exactly: EM on (code value, count) pairs
is EM on the pixels (same sums, another order), at a cost independent of the
number of pixels. The component with the lower mean is "positive" (correct);
a pixel is a pseudo label when its posterior for it exceeds 0.5. Evaluated at
every code, that posterior gives an exact per-class selection table, which
also handles the two crossings two 1-D Gaussians can have.

Degenerate classes (decided here, reported in ``reason``):

- predicted nowhere: no pseudo labels ("never predicted");
- fewer than ``min_pixels`` pixels: no pseudo labels ("too few pixels");
- a single distinct value, or a fit whose two components coincide (means
  within ``COINCIDE_TOL``) or whose smaller component holds less than
  ``MIN_WEIGHT`` of the mass: the data give no evidence of two populations, so
  the GMM cannot separate correct from wrong and every pixel of the class is
  kept, as plain argmax self-training would ("single mode");
- a component whose standard deviation reaches the floor ``min_std``: the fit
  is kept and used (the floor bounds the likelihood), the reason notes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from uncerda_core.errors import UncerdaError

MIN_STD = 1e-4       # about the float16 spacing in [0.25, 1): narrower is fitting quantisation
COINCIDE_TOL = 1e-6  # |mean difference| below which the two components are one
MIN_WEIGHT = 1e-6    # a component holding less of the mass than this is no second mode


@dataclass(frozen=True)
class GMMFit:
    """A fitted mixture; index 0 is the positive (lower-mean) component."""

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    log_likelihood: float   # total over all samples (natural log)
    n_iter: int
    converged: bool


@dataclass
class ClassSelection:
    """The selection of one class: a boolean per code, the fit, why when degenerate, and fit notes."""

    mask: np.ndarray
    fit: GMMFit | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def _as_weighted(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64).ravel()
    counts = np.asarray(counts, dtype=np.float64).ravel()
    if values.shape != counts.shape:
        raise UncerdaError(f"GMM: {values.size} values but {counts.size} counts")
    if np.any(counts < 0) or not np.all(np.isfinite(values)):
        raise UncerdaError("GMM: counts must be >= 0 and values finite")
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    order = np.argsort(values, kind="stable")
    return values[order], counts[order]


def init_params(values: np.ndarray, counts: np.ndarray,
                min_std: float = MIN_STD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic start: equal weights; means and variances of the lower and upper half of the mass.

    The mass is split exactly at half the total count (a bin straddling the
    median is shared between the halves), which gives two distinct means
    whenever there are two distinct values, even when most of the mass sits
    on one value (where 25th/75th percentiles would coincide).
    Returns (weights, means, variances).
    """
    v, n = _as_weighted(values, counts)
    if v.size == 0:
        raise UncerdaError("GMM: no samples to initialise from")
    half = n.sum() / 2.0
    before = np.cumsum(n) - n
    lower = np.clip(half - before, 0.0, n)
    upper = n - lower
    means, variances = np.empty(2), np.empty(2)
    for k, part in enumerate((lower, upper)):
        mass = part.sum()
        means[k] = (part * v).sum() / mass
        variances[k] = (part * (v - means[k]) ** 2).sum() / mass
    return np.array([0.5, 0.5]), means, np.maximum(variances, min_std ** 2)


def log_components(v: np.ndarray, weights: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """(2, K) log(w_k N(v; m_k, var_k))."""
    return (np.log(weights)[:, None] - 0.5 * np.log(2.0 * np.pi * variances)[:, None]
            - (v[None, :] - means[:, None]) ** 2 / (2.0 * variances[:, None]))


def fit_gmm_1d(values: np.ndarray, counts: np.ndarray, tol: float = 1e-10, max_iter: int = 1000,
               min_std: float = MIN_STD,
               init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> GMMFit:
    """Eq. 6: EM for a 2-component 1-D Gaussian mixture on a weighted histogram, in float64.

    ``values`` are bin values, ``counts`` their (integer or real) weights.
    Start: :func:`init_params`. Iterate until the mean log-likelihood per
    sample changes by less than ``tol`` (the criterion of scikit-learn, whose
    default 1e-3 is far looser) or ``max_iter`` iterations. Variances are
    floored at ``min_std**2``. Components are returned sorted by mean, the
    positive (lower-mean) one first. A single distinct value returns both
    components at that value with ``n_iter = 0``. ``init`` = (weights, means,
    variances) overrides the start (to compare with another fitter's optimum).
    """
    v, n = _as_weighted(values, counts)
    total = n.sum()
    if total <= 0:
        raise UncerdaError("GMM: no samples to fit")
    if init is None:
        weights, means, variances = init_params(v, n, min_std)
    else:
        weights, means, variances = (np.asarray(a, dtype=np.float64).copy() for a in init)
        variances = np.maximum(variances, min_std ** 2)
    if v.size == 1:
        lc = log_components(v, weights, means, variances)
        ll = float((n * np.logaddexp(lc[0], lc[1])).sum())
        return GMMFit(weights, means, np.sqrt(variances), ll, 0, True)
    prev = -np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        lc = log_components(v, weights, means, variances)
        lse = np.logaddexp(lc[0], lc[1])
        mean_ll = float((n * lse).sum() / total)
        if abs(mean_ll - prev) < tol:
            converged = True
            break
        prev = mean_ll
        resp = np.exp(lc - lse[None, :]) * n[None, :]          # (2, K) weighted responsibilities
        nk = resp.sum(axis=1)
        nk = np.maximum(nk, np.finfo(np.float64).tiny)
        weights = nk / total
        means = (resp * v[None, :]).sum(axis=1) / nk
        variances = np.maximum((resp * (v[None, :] - means[:, None]) ** 2).sum(axis=1) / nk, min_std ** 2)
    lc = log_components(v, weights, means, variances)
    ll = float((n * np.logaddexp(lc[0], lc[1])).sum())
    order = np.argsort(means, kind="stable")
    return GMMFit(weights[order], means[order], np.sqrt(variances[order]), ll, it, converged)


def single_mode(fit: GMMFit) -> bool:
    """True when the fit gives no evidence of two populations (coinciding means or a negligible component)."""
    return bool(abs(fit.means[1] - fit.means[0]) <= COINCIDE_TOL or fit.weights.min() < MIN_WEIGHT)


def selection_table(fit: GMMFit, values: np.ndarray, high_tail: bool = False) -> np.ndarray:
    """Boolean per value: posterior of the positive component > 0.5 (exact at each code).

    The two Gaussians can cross twice. When the positive (low-mean) component
    is the wider one, its posterior exceeds 0.5 again far above the negative
    mean; when it is the narrower one, the negative component wins again near
    0. Both tails contradict Eq. 6's reading (lower entropy, more likely
    correct), so by default (``high_tail=False``) the selection is one
    interval from 0 up to the last selected value below the negative mean: a
    pixel more certain than a selected pixel is selected too.
    ``high_tail=True`` keeps the plain posterior rule.
    """
    v = np.asarray(values, dtype=np.float64)
    lc = log_components(v, fit.weights, fit.means, fit.stds ** 2)
    selected = lc[0] > lc[1]
    if high_tail:
        return selected
    below = np.flatnonzero(selected & (v <= fit.means[1]))
    return v <= v[below[-1]] if len(below) else np.zeros(len(v), dtype=bool)


def selection_intervals(mask: np.ndarray, values: np.ndarray) -> list[tuple[float, float]]:
    """The runs of selected codes as closed value intervals ``(lo, hi)``, ascending."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2] - 1
    v = np.asarray(values, dtype=np.float64)
    return [(float(v[s]), float(v[e])) for s, e in zip(starts, ends)]


def select_class(counts: np.ndarray, values: np.ndarray, min_pixels: int, tol: float = 1e-10,
                 max_iter: int = 1000, n_pixels: int | None = None, min_std: float = MIN_STD,
                 high_tail: bool = False) -> ClassSelection:
    """The GMM selection of one class from its histogram row, with the degenerate rules of this module.

    ``counts`` (K,) are the histogram counts over ``values`` (K,) (pixels, or
    images for ``gmm_unit: image``); ``n_pixels`` the class's predicted pixels
    for the ``min_pixels`` rule (default ``counts.sum()``).
    """
    counts = np.asarray(counts)
    total = int(counts.sum())
    pixels = total if n_pixels is None else int(n_pixels)
    none = np.zeros(len(values), dtype=bool)
    if total == 0 or pixels == 0:
        return ClassSelection(none, reason="never predicted")
    if pixels < min_pixels:
        return ClassSelection(none, reason=f"too few pixels ({pixels} < min_pixels={min_pixels})")
    if np.count_nonzero(counts) == 1:
        return ClassSelection(np.ones(len(values), dtype=bool),
                              reason="single mode: one distinct value, all pixels selected")
    fit = fit_gmm_1d(values, counts, tol=tol, max_iter=max_iter, min_std=min_std)
    notes = []
    if not fit.converged:
        notes.append(f"EM not converged after {fit.n_iter} iterations")
    if single_mode(fit):
        return ClassSelection(np.ones(len(values), dtype=bool), fit,
                              reason="single mode: components coincide, all pixels selected", notes=notes)
    collapsed = [k for k in range(2) if fit.stds[k] <= min_std * (1 + 1e-12)]
    if collapsed:
        notes.append("variance floor reached by the " + " and ".join(
            ("positive", "negative")[k] for k in collapsed) + " component")
    return ClassSelection(selection_table(fit, values, high_tail), fit, reason="", notes=notes)
