"""Walk a data set once, check every file, and write the index table.

The index (``*_index.csv``) has the columns of :data:`INDEX_COLUMNS`:
``name,image,label,width,height,label_width,label_height,label_resized,blank``.
Every image and label is decoded once (in a process pool), so a truncated or
corrupt file, a missing label, an id outside the data set's id set, or an
8-bit SYNTHIA label is found here, before any training starts. All problems
are collected and reported together in one :class:`UncerdaError`.

Not errors, but counted and reported: GTA5 pairs whose label size differs
from the image's (``label_resized``: readers resize the label to the image
with nearest neighbour) and blank frames (``blank``: the image is one colour
or every label pixel is void).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from tqdm import tqdm

from uncerda_core.artifacts import atomic_path, write_sidecar
from uncerda_core.data import labels
from uncerda_core.data.readers import (Sample, check_dataset, format_problems, label_lut, list_samples,
                                       native_label_histogram, open_decoded, translated_images)
from uncerda_core.errors import UncerdaError

INDEX_COLUMNS: tuple[str, ...] = ("name", "image", "label", "width", "height", "label_width",
                                  "label_height", "label_resized", "blank")
_INT_COLUMNS = ("width", "height", "label_width", "label_height")
# Data sets whose image/label pairs may legitimately differ in size (docs/method.md#data-sets).
RESIZE_ALLOWED = frozenset({"gta5"})

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, chunksize: int = 16,
                 progress: bool = True, desc: str | None = None) -> Iterator[R]:
    """``map(fn, items)`` over a process pool, yielding results in order as they arrive.

    Only ``fn``'s (small) results come back to this process, so memory stays
    bounded however many files there are. ``workers <= 1`` runs in-process.
    On an exception the pending chunks are cancelled.
    """
    items = list(items)
    with tqdm(total=len(items), desc=desc, unit="file", disable=not progress, file=sys.stderr) as bar:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        executor = ProcessPoolExecutor(max_workers=min(workers, len(items)))
        try:
            for result in executor.map(fn, items, chunksize=max(1, chunksize)):
                yield result
                bar.update()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def _is_one_colour(im) -> bool:
    extrema = im.getextrema()
    if not isinstance(extrema[0], tuple):
        extrema = (extrema,)
    return all(lo == hi for lo, hi in extrema)


def check_sample(dataset: str, require_images: bool, sample: Sample) -> tuple[dict[str, Any], list[str]]:
    """Decode one sample's image and label; its index row and the problems found (messages)."""
    row: dict[str, Any] = {"name": sample.name, "image": sample.image, "label": sample.label,
                           "width": None, "height": None, "label_width": None, "label_height": None,
                           "label_resized": False, "blank": False}
    problems: list[str] = []
    if require_images or os.path.exists(sample.image):
        try:
            im = open_decoded(sample.image)
            row["width"], row["height"] = im.size
            row["blank"] = _is_one_colour(im)
            del im
        except UncerdaError as exc:
            problems.append(str(exc))
    if sample.label is not None:
        try:
            counts, (lw, lh) = native_label_histogram(dataset, sample.label)
            row["label_width"], row["label_height"] = lw, lh
            evaluated = label_lut(dataset)[:len(counts)] != labels.IGNORE
            if not counts[evaluated].any():
                row["blank"] = True
        except UncerdaError as exc:
            problems.append(str(exc))
    if row["width"] is not None and row["label_width"] is not None and \
            (row["width"], row["height"]) != (row["label_width"], row["label_height"]):
        if dataset in RESIZE_ALLOWED:
            row["label_resized"] = True
        else:
            problems.append(f"{sample.label}: label is {row['label_width']}x{row['label_height']} but its image "
                            f"{sample.image} is {row['width']}x{row['height']}; expected equal sizes")
    return row, problems


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    for col in _INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    df["label_resized"] = df["label_resized"].astype(bool)
    df["blank"] = df["blank"].astype(bool)
    df["label"] = df["label"].astype(object).where(df["label"].notna(), None)
    return df


def index_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for the report: images, labelled, labels resized, blank frames (with names)."""
    return {
        "images": int(len(df)),
        "labelled": int(df["label"].notna().sum()),
        "label_resized": int(df["label_resized"].sum()),
        "blank": int(df["blank"].sum()),
        "blank_names": df.loc[df["blank"], "name"].tolist()[:50],
        "label_resized_names": df.loc[df["label_resized"], "name"].tolist()[:50],
    }


def build_index(dataset: str, root: str | Path, split: str, require_labels: bool = True, workers: int = 2,
                progress: bool = True, require_images: bool = True, chunksize: int = 8) -> pd.DataFrame:
    """List ``split`` of ``dataset`` at ``root``, decode and check every file, return the index.

    Raises one :class:`UncerdaError` listing every problem (first 20 and a
    count): missing root, empty split, unreadable or truncated image or
    label, image without label (when ``require_labels``), label id outside
    the data set's id set, 8-bit SYNTHIA label, and (except GTA5) label size
    differing from the image's. ``require_images=False`` indexes a split from
    its labels (images checked only where present). Prints a short summary.
    """
    check_dataset(dataset)
    samples = list_samples(dataset, root, split, require_labels=False, require_images=require_images)
    problems: list[str] = []
    if require_labels:
        problems += [f"{s.image}: no label file (expected {_expected_label(dataset, root, split, s)})"
                     for s in samples if s.label is None]
    rows = []
    check = partial(check_sample, dataset, require_images)
    for row, found in parallel_map(check, samples, workers=workers, chunksize=chunksize, progress=progress,
                                   desc=f"index {dataset}/{split}"):
        rows.append(row)
        problems += found
    if problems:
        raise UncerdaError(format_problems(
            f"{dataset} at {root}, split '{split}': {len(problems)} problem(s) in {len(samples)} samples "
            "(fix or remove these files, or list a subset in a split file):", problems))
    df = _frame(rows)
    s = index_summary(df)
    blank = f" ({', '.join(s['blank_names'][:10])})" if s["blank"] else ""
    print(f"index {dataset}/{split}: {s['images']} images, {s['labelled']} labelled, "
          f"{s['label_resized']} labels resized to their image, {s['blank']} blank{blank}")
    return df


def _expected_label(dataset: str, root: str | Path, split: str, sample: Sample) -> str:
    root = Path(root)
    if dataset == "gta5":
        return str(root / "labels" / f"{sample.name}.png")
    if dataset == "synthia":
        return str(root / "GT" / "LABELS" / f"{sample.name}.png")
    city = Path(sample.image).parent.name
    return str(root / "gtFine" / split / city / f"{sample.name}_gtFine_labelIds.png")


def _check_columns(df: pd.DataFrame, where: str) -> None:
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise UncerdaError(f"{where}: not an index table, missing column(s) {', '.join(missing)}; "
                           f"expected {','.join(INDEX_COLUMNS)}")


def write_index(df: pd.DataFrame, path: str | Path, record: dict[str, Any]) -> None:
    """Write the index CSV atomically, with a provenance sidecar (``record`` plus the summary)."""
    _check_columns(df, str(path))
    with atomic_path(path) as tmp:
        df.loc[:, list(INDEX_COLUMNS)].to_csv(tmp, index=False)
    write_sidecar(path, {**record, "index_summary": index_summary(df)})


def read_index(path: str | Path) -> pd.DataFrame:
    """An index CSV written by :func:`write_index`; labels absent in the table are None."""
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: index table not found (run the index stage first)")
    try:
        df = pd.read_csv(path, dtype={"name": str, "image": str, "label": str}, keep_default_na=False,
                         na_values={c: [""] for c in ("label", *_INT_COLUMNS)})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UncerdaError(f"{path}: not a readable index CSV ({exc})") from exc
    _check_columns(df, str(path))
    try:
        for col in ("label_resized", "blank"):
            if df[col].dtype != bool:
                df[col] = df[col].map({"True": True, "False": False, True: True, False: False})
                if df[col].isna().any():
                    raise ValueError(f"column {col} must hold True/False")
                df[col] = df[col].astype(bool)
        return _frame(df.to_dict("records"))
    except (ValueError, TypeError) as exc:
        raise UncerdaError(f"{path}: malformed index table ({exc}); rebuild it with the index stage") from exc


def with_translated_images(table: pd.DataFrame, translated_root: str | Path) -> pd.DataFrame:
    """``table`` (a source index) reading each image from ``translated_root`` instead; labels unchanged.

    See :func:`readers.translated_images`: every image must have its
    translated file of the same name, checked before anything is read.
    """
    return table.assign(image=translated_images(list(table["image"]), translated_root))


def split_holdout(table: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(adapt, holdout): the target train ``table`` split for checkpoint selection.

    ``round(fraction * n)`` images (half up, at least 1, at most ``n - 1``) are drawn
    without replacement with ``seed`` and held out; the rest is adapted on. The draw is
    made on the rows sorted by image name, so it depends only on the set of names, not
    on the order the index lists them in. Both tables come back sorted by name, disjoint
    and together covering ``table``.
    """
    if not 0 < fraction <= 0.5:
        raise UncerdaError(f"selection.holdout_fraction must be in (0, 0.5], got {fraction}")
    names = table["name"].astype(str)
    duplicated = sorted(set(names[names.duplicated()]))
    if duplicated:
        raise UncerdaError(f"the target train index lists {len(duplicated)} image name(s) twice, e.g. "
                           f"{duplicated[0]}; rebuild it with the index stage")
    n = len(table)
    if n < 2:
        raise UncerdaError(f"checkpoint selection needs at least 2 target train images (one to adapt on, one "
                           f"to hold out); the index has {n}: set selection.enabled to false")
    held = min(n - 1, max(1, int(np.floor(fraction * n + 0.5))))
    ordered = table.assign(name=names).sort_values("name", kind="stable").reset_index(drop=True)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[:held]] = True
    return ordered[~chosen].reset_index(drop=True), ordered[chosen].reset_index(drop=True)


def write_holdout_split(index: str | Path, labelled_index: str | Path, fraction: float, seed: int,
                        adapt_out: str | Path, holdout_out: str | Path, labelled_adapt_out: str | Path,
                        record: dict[str, Any]) -> tuple[int, int]:
    """Split the target train split for checkpoint selection (:func:`split_holdout`) and write it.

    ``index``: target train without labels (what adaptation reads); ``labelled_index``: the
    same images with their labels. Writes the adapt part without labels (``adapt_out``), the
    held-out part with labels (``holdout_out``: selection evaluates on it) and the adapt part
    with labels (``labelled_adapt_out``: the target oracle's training set, so that it is never
    selected on images it trained on). Returns (adapt images, held-out images).
    """
    unlabelled, labelled = read_index(index), read_index(labelled_index)
    if set(unlabelled["name"]) != set(labelled["name"]):
        only = sorted(set(unlabelled["name"]) ^ set(labelled["name"]))
        raise UncerdaError(f"{index} and {labelled_index} list different images ({len(only)} differ, e.g. "
                           f"{only[0]}); rebuild both with the index stage")
    missing = labelled.loc[labelled["label"].isna(), "image"].tolist()
    if missing:
        raise UncerdaError(format_problems(
            f"{labelled_index}: checkpoint selection needs the labels of the target train split, "
            f"{len(missing)} image(s) have none (add the label files or set selection.enabled to false):",
            [f"{m}: no label" for m in missing]))
    adapt, holdout = split_holdout(labelled, fraction, seed)
    adapt_names = set(adapt["name"])
    extra = {"holdout_fraction": fraction, "seed": seed, "adapt_images": len(adapt), "holdout_images": len(holdout)}
    write_index(unlabelled[unlabelled["name"].isin(adapt_names)].sort_values("name", kind="stable"), adapt_out,
                {**record, **extra, "part": "adapt"})
    write_index(adapt, labelled_adapt_out, {**record, **extra, "part": "adapt, labelled"})
    write_index(holdout, holdout_out, {**record, **extra, "part": "holdout"})
    return len(adapt), len(holdout)
