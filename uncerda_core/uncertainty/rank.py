"""Class-uncertainty ranking (Eq. 1) and S_k from a maps file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uncerda_core.artifacts import atomic_path, write_sidecar
from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.equations import class_uncertainty, rank_order
from uncerda_core.uncertainty.histogram import maps_histogram

RANK_COLUMNS = ["class_id", "class", "mean_entropy", "pixels", "rank", "in_sk"]


def rank_table(hist: np.ndarray, k: int, class_names: Sequence[str]) -> pd.DataFrame:
    """Eq. 1 per class from a (C, 15361) entropy histogram, ranked (1 = most uncertain).

    ``mean_entropy`` is NaN (an empty CSV cell) for a class predicted nowhere;
    such a class ranks as most uncertain. ``in_sk`` marks the top ``k``.
    """
    if len(class_names) != hist.shape[0]:
        raise UncerdaError(f"rank: {len(class_names)} class names for a {hist.shape[0]}-class histogram")
    if not 1 <= k <= hist.shape[0]:
        raise UncerdaError(f"rank: k must be in [1, {hist.shape[0]}], got {k}")
    unc = class_uncertainty(hist)
    order = rank_order(unc)
    rank = np.empty(len(unc), dtype=np.int64)
    rank[order] = np.arange(1, len(unc) + 1)
    return pd.DataFrame({
        "class_id": np.arange(len(unc)), "class": list(class_names), "mean_entropy": unc,
        "pixels": hist.sum(axis=1), "rank": rank, "in_sk": rank <= k,
    })


def rank_classes(maps_path: str | os.PathLike, k: int, class_names: Sequence[str],
                 workers: int = 2, stored: bool = True) -> pd.DataFrame:
    """The ranking table (``RANK_COLUMNS``) of a maps file.

    From the entropy histogram stored in the file, or (``stored=False``, or none
    stored) one streaming pass over it on ``workers`` processes.
    """
    hist = maps_histogram(maps_path, "entropy", expected_classes=len(class_names), workers=workers, stored=stored)
    return rank_table(hist, k, class_names)


def write_rank(df: pd.DataFrame, path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write ``rank.csv`` atomically plus its provenance sidecar."""
    with atomic_path(path) as tmp:
        df[RANK_COLUMNS].to_csv(tmp, index=False, float_format="%.10g")
    write_sidecar(path, record)


def sk_flags(df: pd.DataFrame) -> np.ndarray:
    """The ``in_sk`` column of a ranking table read back from CSV, as booleans (``True``/``1``)."""
    return df["in_sk"].astype(str).str.lower().isin(["true", "1"]).to_numpy()


def read_sk(rank_csv: str | os.PathLike, k: int | None = None) -> list[int]:
    """The class ids of S_k from a ranking CSV, most uncertain first: the classes marked ``in_sk``, or with
    ``k`` the ``k`` classes ranked first (Fig. 8(b)'s sweep over k, from one ranking)."""
    path = Path(rank_csv)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise UncerdaError(f"{path}: cannot read the ranking table ({err}); re-run the rank stage") from None
    missing = [c for c in ("class_id", "rank", "in_sk") if c not in df.columns]
    if missing:
        raise UncerdaError(f"{path}: ranking table lacks columns {missing}; expected {RANK_COLUMNS}")
    if k is not None and not 1 <= k <= len(df):
        raise UncerdaError(f"{path}: k must be in [1, {len(df)}] (classes ranked), got {k}")
    sk = df.sort_values("rank").head(k) if k is not None else df[sk_flags(df)].sort_values("rank")
    if sk.empty:
        raise UncerdaError(f"{path}: no class marked in_sk; re-run the rank stage")
    return [int(c) for c in sk["class_id"]]
