"""A pseudo-label folder as ``uncerda pseudo-labels`` writes it, read back: one checked reader.

The folder holds ``<name>.png`` per image, ``classes.csv`` (the per-class selection), ``provenance.json``
and, when it was made with ground truth, ``quality.csv`` (per class) and ``quality.json`` (overall).
Everything that reads a folder (CBST at another selection's coverage, the report's figures) reads it here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from uncerda_core.artifacts import read_csv, read_json
from uncerda_core.errors import UncerdaError

CLASSES_CSV = "classes.csv"
QUALITY_CSV = "quality.csv"
QUALITY_JSON = "quality.json"


def read_pseudo_dir(pseudo_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame | None, dict | None]:
    """``classes.csv`` and, when the folder has them, ``quality.csv`` and ``quality.json`` (else None)."""
    folder = Path(pseudo_dir)
    if not (folder / CLASSES_CSV).is_file():
        raise UncerdaError(f"{folder / CLASSES_CSV} does not exist: {folder} is no pseudo-label folder "
                           "(`uncerda pseudo-labels --out-dir` writes one)")
    classes = read_csv(folder / CLASSES_CSV, "pseudo-label class table")
    quality = read_csv(folder / QUALITY_CSV, "quality table") if (folder / QUALITY_CSV).is_file() else None
    overall = read_json(folder / QUALITY_JSON, "quality summary") if (folder / QUALITY_JSON).is_file() else None
    return classes, quality, overall
