"""Per-image, per-class pixel counts of the source labels.

The target-guided sampling weights need, for every source image, how many
pixels of each of the 19 classes it holds. The counts come from the label PNG
alone (never the RGB image): for 8-bit label-id PNGs ``Image.histogram()`` on
the palette indices, then a sum of native ids into train ids (the histogram
is faster than ``np.bincount`` on the decoded array: docs/method.md#design-measurements);
SYNTHIA through OpenCV's 16-bit reader. Counts are at the label's
native size (a GTA5 label whose size differs from its image is not resized).

The table (``source_class_stats.csv``): ``name`` then one int64 column per
name of ``labels.CLASS_NAMES``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uncerda_core.artifacts import atomic_path, write_sidecar
from uncerda_core.data import labels
from uncerda_core.data.index import parallel_map
from uncerda_core.data.readers import check_dataset, format_problems, label_lut, native_label_histogram
from uncerda_core.errors import UncerdaError

STATS_COLUMNS: tuple[str, ...] = ("name", *labels.CLASS_NAMES)


def native_to_train_counts(dataset: str, native_counts: np.ndarray) -> np.ndarray:
    """Pixels per native id -> pixels per train id, shape (19,) int64 (ignored ids dropped)."""
    native_counts = np.asarray(native_counts, dtype=np.int64)
    lut = label_lut(dataset)[:len(native_counts)]
    keep = lut != labels.IGNORE
    out = np.zeros(labels.NUM_CLASSES, dtype=np.int64)
    np.add.at(out, lut[keep], native_counts[keep])
    return out


def count_label_classes(dataset: str, label_path: str | Path) -> np.ndarray:
    """Pixels per train id (19,) int64 of one label file; invalid ids raise UncerdaError."""
    counts, _ = native_label_histogram(dataset, label_path)
    return native_to_train_counts(dataset, counts)


def compute_class_stats(index_df: pd.DataFrame, dataset: str, workers: int = 2, chunksize: int = 32,
                        progress: bool = True) -> pd.DataFrame:
    """The class-statistics table of every row of an index (``name`` and ``label`` columns used).

    Streams over a process pool (only 19 counts per image come back), with a
    progress bar. Every row must have a label.
    """
    check_dataset(dataset)
    for col in ("name", "label"):
        if col not in index_df.columns:
            raise UncerdaError(f"index table has no '{col}' column; expected an index from build_index()")
    unlabelled = [str(n) for n, lab in zip(index_df["name"], index_df["label"]) if lab is None or pd.isna(lab)]
    if unlabelled:
        raise UncerdaError(format_problems(
            f"class statistics need a label for every image; {len(unlabelled)} index row(s) have none:",
            unlabelled))
    paths = [str(p) for p in index_df["label"]]
    counts = np.zeros((len(paths), labels.NUM_CLASSES), dtype=np.int64)
    for i, row in enumerate(parallel_map(partial(count_label_classes, dataset), paths, workers=workers,
                                         chunksize=chunksize, progress=progress, desc=f"class stats {dataset}")):
        counts[i] = row
    df = pd.DataFrame(counts, columns=list(labels.CLASS_NAMES))
    df.insert(0, "name", [str(n) for n in index_df["name"]])
    return df


def _check_stats(df: pd.DataFrame, where: str) -> None:
    if list(df.columns) != list(STATS_COLUMNS):
        raise UncerdaError(f"{where}: class-statistics columns must be {','.join(STATS_COLUMNS)}; "
                           f"got {','.join(map(str, df.columns))}")
    values = df.loc[:, list(labels.CLASS_NAMES)]
    if not all(pd.api.types.is_integer_dtype(t) for t in values.dtypes) or (values.to_numpy() < 0).any():
        raise UncerdaError(f"{where}: class counts must be non-negative integers")


def write_class_stats(df: pd.DataFrame, path: str | Path, record: dict[str, Any]) -> None:
    """Write the table as CSV atomically, with a provenance sidecar."""
    _check_stats(df, str(path))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    write_sidecar(path, record)


def read_class_stats(path: str | Path) -> pd.DataFrame:
    """A class-statistics CSV, checked: ``name`` (str) and 19 non-negative int64 columns, at least one row.

    The one reader of the table: the sampling weights (Eqs. 3-5) and crop-level sampling take
    ``df["name"]`` and ``df[list(labels.CLASS_NAMES)]`` from it.
    """
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: class statistics not found (run the class-statistics stage first)")
    try:
        df = pd.read_csv(path, dtype={"name": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UncerdaError(f"{path}: not a readable class-statistics CSV ({exc})") from exc
    if df.empty:
        raise UncerdaError(f"{path}: class statistics table has no rows")
    _check_stats(df, str(path))
    return df.astype({c: np.int64 for c in labels.CLASS_NAMES})
