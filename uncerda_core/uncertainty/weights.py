"""Per-source-image sampling weights from S_k (Eqs. 3-5)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from uncerda_core.artifacts import atomic_path, write_sidecar
from uncerda_core.data.class_stats import read_class_stats
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.equations import sampling_weights

WEIGHT_COLUMNS = ["name", "p_i", "p_norm", "weight", "probability"]


def compute_sampling_weights(class_stats_csv: str | os.PathLike, sk: list[int] | None, balance: float,
                             alpha: float, mu: float) -> pd.DataFrame:
    """One row per source image: ``name,p_i,p_norm,weight,probability`` (Eqs. 3-5).

    ``sk=None`` uses every class (the +SR ablation: resampling with no target signal).
    """
    stats = read_class_stats(class_stats_csv)
    names, counts = stats["name"].tolist(), stats[list(CLASS_NAMES)].to_numpy(dtype=np.int64)
    classes = list(range(counts.shape[1])) if sk is None else list(sk)
    if not classes or min(classes) < 0 or max(classes) >= counts.shape[1]:
        raise UncerdaError(f"sampling weights: S_k {sk} must list class ids in [0, {counts.shape[1]})")
    out = sampling_weights(counts, classes, balance, alpha, mu)
    return pd.DataFrame({"name": names, **out})[WEIGHT_COLUMNS]


def write_weights(df: pd.DataFrame, path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write ``weights.csv`` atomically plus its provenance sidecar."""
    with atomic_path(path) as tmp:
        df[WEIGHT_COLUMNS].to_csv(tmp, index=False, float_format="%.12g")
    write_sidecar(path, record)
