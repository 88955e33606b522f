"""Per-source-image sampling weights from S_k (Eqs. 3-5), and what their draws do to the class mix."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from uncerda_core.artifacts import atomic_path, write_sidecar
from uncerda_core.data.class_stats import read_class_stats
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.equations import sampling_weights

WEIGHT_COLUMNS = ["name", "p_i", "p_norm", "weight", "probability"]


def read_class_counts(class_stats_csv: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """The source image names and their (M, C) class pixel counts from the class statistics table."""
    stats = read_class_stats(class_stats_csv)
    return stats["name"].tolist(), stats[list(CLASS_NAMES)].to_numpy(dtype=np.int64)


def compute_sampling_weights(class_stats_csv: str | os.PathLike, sk: list[int] | None, balance: float,
                             alpha: float, mu: float, reading: str = "class_draw") -> pd.DataFrame:
    """One row per source image: ``name,p_i,p_norm,weight,probability`` (Eqs. 3-5 under ``reading``).

    ``sk=None`` uses every class (the +SR ablation: resampling with no target signal).
    """
    return weights_table(*read_class_counts(class_stats_csv), sk, balance, alpha, mu, reading)


def weights_table(names: list[str], counts: np.ndarray, sk: list[int] | None, balance: float, alpha: float,
                  mu: float, reading: str = "class_draw") -> pd.DataFrame:
    """:func:`compute_sampling_weights` on class counts already read (:func:`read_class_counts`)."""
    classes = list(range(counts.shape[1])) if sk is None else list(sk)
    if not classes or min(classes) < 0 or max(classes) >= counts.shape[1]:
        raise UncerdaError(f"sampling weights: S_k {sk} must list class ids in [0, {counts.shape[1]})")
    out = sampling_weights(counts, classes, balance, alpha, mu, reading)
    return pd.DataFrame({"name": names, **out})[WEIGHT_COLUMNS]


def uniform_weights(names: list[str]) -> pd.DataFrame:
    """Every source image of ``names`` alike (``p_i = 1 / M``, weight 1): Table 4's no-balance round, drawn by
    the same code as the weighted rounds."""
    share = np.full(len(names), 1.0 / len(names)) if names else np.zeros(0)
    return pd.DataFrame({"name": names, "p_i": share, "p_norm": np.ones(len(names)), "weight": np.ones(len(names)),
                         "probability": share})[WEIGHT_COLUMNS]


def write_weights(df: pd.DataFrame, path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write ``weights.csv`` atomically plus its provenance sidecar."""
    with atomic_path(path) as tmp:
        df[WEIGHT_COLUMNS].to_csv(tmp, index=False, float_format="%.12g")
    write_sidecar(path, record)


# Below this share of moved draws a round's source draws are nearly uniform: the weights send fewer than
# 1 in 20 draws to another image than uniform sampling would.
NEARLY_UNIFORM_MOVED_SHARE = 0.05
# The classes held by the fewest source images: how far the draws go towards class balance is read on them
# (on the demo: bus, train, motorcycle, truck, bicycle, rider).
RAREST_CLASSES = 6


def drawn_pixel_share(probability: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The expected class mix of the pixels drawn: each class's share of the labelled pixels of images
    drawn with ``probability`` (M,) from the (M, C) pixel ``counts``. Uniform probabilities give the source
    set's own class mix. NaN for every class when no drawn image holds a labelled pixel."""
    p = np.asarray(probability, dtype=np.float64)
    pixels = p @ np.asarray(counts, dtype=np.float64)
    total = pixels.sum()
    return pixels / total if total > 0 else np.full(pixels.shape, np.nan)


def rarest_classes(counts: np.ndarray, n: int = RAREST_CLASSES) -> list[int]:
    """The ``n`` classes present in the fewest images of ``counts`` (M, C), ties by fewer pixels; classes
    absent from every image are left out (no sampler can draw them)."""
    x = np.asarray(counts)
    images, pixels = (x > 0).sum(axis=0), x.sum(axis=0)
    present = [c for c in range(x.shape[1]) if images[c] > 0]
    return sorted(present, key=lambda c: (images[c], pixels[c], c))[:n]


@dataclass(frozen=True)
class DrawSummary:
    """How far a weights table's draws are from uniform sampling over the same images."""
    images: int
    without_sk: int        # images with p_i = 0 (no S_k pixel)
    max_over_min: float    # the largest draw probability over the smallest
    moved_share: float     # total variation distance to uniform draws: the share of draws sent elsewhere
    # The expected pixel share of each class in the drawn images over its share under uniform draws
    # (class name -> multiplier; with the class statistics only).
    class_multipliers: dict[str, float] = field(default_factory=dict)
    sk: list[str] = field(default_factory=list)
    sk_multiplier: float | None = None           # S_k's pixel share, drawn / uniform
    rarest: list[str] = field(default_factory=list)
    rarest_multiplier: float | None = None       # the rarest classes' pixel share, drawn / uniform

    @property
    def nearly_uniform(self) -> bool:
        return self.moved_share < NEARLY_UNIFORM_MOVED_SHARE

    def describe(self) -> str:
        text = (f"{self.images} images, {self.without_sk} without an S_k pixel; draw probabilities "
                f"max/min {self.max_over_min:.3g}; {100 * self.moved_share:.1f} % of the draws go to other "
                "images than uniform sampling would send them to")
        if self.sk_multiplier is not None:
            text += (f"; the drawn pixels hold x{self.sk_multiplier:.2f} the share of S_k ({', '.join(self.sk)}) "
                     f"that uniform draws hold")
        if self.rarest_multiplier is not None:
            text += (f", x{self.rarest_multiplier:.2f} that of the {len(self.rarest)} rarest classes "
                     f"({', '.join(self.rarest)})")
        if self.nearly_uniform:
            text += (f" (under {100 * NEARLY_UNIFORM_MOVED_SHARE:.0f} % moved: this round draws almost as uniform "
                     "sampling does, so it can change little beyond one more round of training)")
        return text


def _share_multiplier(drawn: np.ndarray, uniform: np.ndarray, classes: Sequence[int]) -> float | None:
    base = float(uniform[list(classes)].sum()) if classes else 0.0
    return float(drawn[list(classes)].sum()) / base if base > 0 else None


def draw_summary(table: pd.DataFrame, counts: np.ndarray | None = None,
                 sk: Sequence[int] | None = None) -> DrawSummary:
    """:class:`DrawSummary` of a weights table (``p_i`` and ``probability`` columns).

    ``moved_share`` is the total variation distance between the draw probabilities p and uniform draws,
    ``0.5 * sum_i |p_i - 1/M|``: the share of draws that the weights send to another image than uniform
    sampling would. 0 for uniform weights; ``1 - 1/M`` when one image gets every draw.

    With the (M, C) class pixel ``counts`` of the same images (in the table's order) it also gives the
    expected class mix of the drawn pixels against uniform draws (:func:`drawn_pixel_share`): per class,
    over the S_k classes ``sk`` (None for the +SR control's every class: no S_k multiplier) and over the
    :func:`rarest_classes`.
    """
    p = table["probability"].to_numpy(dtype=np.float64)
    if p.size == 0 or not np.all(p >= 0) or p.sum() <= 0:
        raise UncerdaError("draw summary: need one non-negative probability per image, not all zero")
    p = p / p.sum()
    smallest = p.min()
    summary = dict(images=int(p.size), without_sk=int((table["p_i"].to_numpy() == 0).sum()),
                   max_over_min=float(p.max() / smallest) if smallest > 0 else float("inf"),
                   moved_share=float(0.5 * np.abs(p - 1.0 / p.size).sum()))
    if counts is None:
        return DrawSummary(**summary)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] != p.size:
        raise UncerdaError(f"draw summary: class counts of shape {counts.shape} do not match {p.size} images")
    names = list(CLASS_NAMES) if counts.shape[1] == len(CLASS_NAMES) else [str(c) for c in range(counts.shape[1])]
    drawn, uniform = drawn_pixel_share(p, counts), drawn_pixel_share(np.full(p.size, 1.0 / p.size), counts)
    rarest = rarest_classes(counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(uniform > 0, drawn / np.where(uniform > 0, uniform, 1.0), np.nan)
    # Every class together always holds the whole mix: the +SR control (sk None) has no S_k multiplier.
    return DrawSummary(**summary,
                       class_multipliers={names[c]: float(ratio[c]) for c in range(len(names)) if uniform[c] > 0},
                       sk=[] if sk is None else [names[c] for c in sk],
                       sk_multiplier=None if sk is None else _share_multiplier(drawn, uniform, list(sk)),
                       rarest=[names[c] for c in rarest], rarest_multiplier=_share_multiplier(drawn, uniform, rarest))


# An image is on Eq. 5's rise when the curve gives it less than this share of its top (0.1 + 1): the curve
# acts on it. On the flat top the curve changes nothing between images.
ON_RISE = 0.95


def eq5_grid_draws(counts: np.ndarray, sk: Sequence[int], balance: float, reading: str,
                   alphas: Sequence[float], mus: Sequence[float]) -> pd.DataFrame:
    """Fig. 8(a)'s grid as draw statistics: for each ``(alpha, mu)`` the weights of S_k ``sk`` over the
    (M, C) ``counts`` and what their draws do (:func:`draw_summary`), with ``on_rise``, the share of images
    whose Eq. 5 value is below :data:`ON_RISE` of its top (the images the curve acts on)."""
    from uncerda_core.uncertainty.equations import logistic_weight
    rows = []
    for alpha in alphas:
        for mu in mus:
            out = sampling_weights(counts, list(sk), balance, alpha, mu, reading)
            summary = draw_summary(pd.DataFrame(out), counts, sk)
            curve = logistic_weight(out["p_norm"], alpha, mu)
            rows.append({"alpha": alpha, "mu": mu, "on_rise": float(np.mean(curve < ON_RISE * 1.1)),
                         "moved_share": summary.moved_share, "max_over_min": summary.max_over_min,
                         "without_sk": summary.without_sk, "sk_multiplier": summary.sk_multiplier,
                         "rarest_multiplier": summary.rarest_multiplier})
    return pd.DataFrame(rows)
