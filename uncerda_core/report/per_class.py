"""Tables 1 and 2 in the paper's layout: per-class IoU of the final adversarial-adaptation (AA) and
self-training (ST) models, mean over seeds, each followed by the paper's published UncerDA row.

The columns are the classes the source data set's evaluation reports (:func:`eval_class_ids`: 19 for
GTA5 -> Cityscapes, 16 for SYNTHIA -> Cityscapes, which also reports mIoU* over 13), so our rows and the
paper's line up cell by cell.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from uncerda_core.artifacts import read_json
from uncerda_core.data.labels import CLASS_NAMES, eval_class_ids
from uncerda_core.errors import UncerdaError
from uncerda_core.report.tables import add_protocol, seed_columns, write_table

AA_ROW, ST_ROW = "UncerDA (AA)", "UncerDA (ST)"
PAPER_SOURCE = "paper"
# The subset keys a metrics JSON may hold (mIoU over all evaluated classes; SYNTHIA's mIoU* over 13).
SUBSET_KEYS = ("miou", "miou13")
# How far a metrics file's recorded mIoU may lie from the mean of its per-class IoUs over the classes the
# source data set's evaluation reports (rounding only: the two are computed from the same numbers).
MIOU_TOLERANCE = 1e-6


def _paper_row(source_dataset: str, percents: str, **mious: float) -> dict[str, float]:
    """One published row: the per-class IoUs (percent, in the evaluated classes' order) and the mIoU
    subsets, as fractions keyed by our class names and subset keys."""
    names = [CLASS_NAMES[c] for c in _class_ids(source_dataset)]
    values = [float(v) for v in percents.split()]
    assert len(values) == len(names), (source_dataset, len(values))
    return {**{n: round(v / 100, 4) for n, v in zip(names, values)},
            **{k: round(v / 100, 4) for k, v in mious.items()}}


def _class_ids(source_dataset: str) -> list[int]:
    """The train ids a source data set's evaluation reports, in train-id order (the paper's column order)."""
    return sorted(set().union(*eval_class_ids(source_dataset).values()))


# The paper's published UncerDA rows of Tables 1 (GTA5 -> Cityscapes) and 2 (SYNTHIA -> Cityscapes), as
# fractions: source data set -> row label -> {class name or subset key: IoU}.
PAPER_PER_CLASS: dict[str, dict[str, dict[str, float]]] = {
    "gta5": {
        AA_ROW: _paper_row("gta5", "88.7 31.2 83.7 34.1 24.1 37.6 42.9 33.0 85.8 38.9 80.3 63.7 34.2 85.9 41.2 "
                                   "42.5 3.4 33.8 42.5", miou=48.8),
        ST_ROW: _paper_row("gta5", "90.5 38.7 86.5 41.1 32.9 40.5 48.2 42.1 86.5 36.8 84.2 64.5 38.1 87.2 34.8 "
                                   "50.4 0.2 41.8 54.6", miou=52.6),
    },
    "synthia": {
        AA_ROW: _paper_row("synthia", "81.2 35.6 81.5 9.9 0.8 35.9 29.6 19.9 78.9 78.1 62.8 27.1 83.7 27.9 16.8 "
                                      "53.1", miou=45.2, miou13=52.0),
        ST_ROW: _paper_row("synthia", "79.4 34.6 83.5 19.3 2.8 35.3 32.1 26.9 78.8 79.6 66.6 30.3 86.1 36.6 19.5 "
                                      "56.9", miou=48.0, miou13=54.6),
    },
}


def check_eval_classes(metrics: dict, path: str | Path, source_dataset: str) -> None:
    """Refuse a metrics file not evaluated over ``source_dataset``'s classes: its mIoU subsets (``miou13``
    only for SYNTHIA) and each subset's value, which must be the mean of its per-class IoUs over exactly
    those classes (a GTA5 evaluation averages 19, a SYNTHIA one 16), else the table would mix protocols."""
    subsets = eval_class_ids(source_dataset)
    fix = (f"pass the --source-dataset its model was trained from, or evaluate it again (uncerda evaluate) with "
           f"source.dataset: {source_dataset}")
    per_class = metrics.get("per_class_iou")
    missing = [CLASS_NAMES[c] for c in _class_ids(source_dataset)
               if not isinstance(per_class, dict) or CLASS_NAMES[c] not in per_class]
    if missing or "miou" not in metrics:
        raise UncerdaError(f"{path}: not a metrics file of `uncerda evaluate` (no miou, or no per-class IoU of "
                           f"{', '.join(missing) or 'its classes'})")
    recorded = [k for k in SUBSET_KEYS if k in metrics]
    if recorded != [k for k in SUBSET_KEYS if k in subsets]:
        raise UncerdaError(f"{path}: reports {' and '.join(recorded)}, but a {source_dataset} -> target "
                           f"evaluation reports {' and '.join(subsets)}; {fix}")
    for key, ids in subsets.items():
        values = [per_class[CLASS_NAMES[c]] for c in ids if per_class[CLASS_NAMES[c]] is not None]
        expected = sum(values) / len(values) if values else math.nan
        value = metrics[key] if metrics[key] is not None else math.nan
        if not (math.isnan(expected) and math.isnan(value)) and not abs(value - expected) <= MIOU_TOLERANCE:
            raise UncerdaError(f"{path}: its {key} ({value:.4f}) is not the mean IoU over the {len(ids)} classes a "
                               f"{source_dataset} -> target evaluation reports ({expected:.4f}): it was evaluated "
                               f"over other classes; {fix}")


def per_class_table(items: list[tuple[str, int, str | Path]], source_dataset: str) -> pd.DataFrame:
    """Tables 1/2: per row label, the mean over seeds of each evaluated class's IoU and of the mIoU (and
    mIoU*, ``miou13``, for SYNTHIA), the number of seeds, the mIoU's spread and each seed's mIoU, followed by
    the paper's row of the same label.

    ``items`` holds ``(row_label, seed, metrics_json)``; rows keep the order their labels first appear in.
    A class a seed's evaluation has no IoU for (``None``: absent from its ground truth and predictions) is
    left out of that class's mean, NaN when no seed has one. ``source`` tells our rows from the paper's; a
    source data set or label without a published row gets ours only, and its ``source`` says so.
    """
    names = [CLASS_NAMES[c] for c in _class_ids(source_dataset)]
    subsets = list(eval_class_ids(source_dataset))
    paper = PAPER_PER_CLASS.get(source_dataset, {})
    seeds: dict[str, dict[int, dict]] = {}
    protocols: dict[str, list[str]] = {}
    for label, seed, path in items:
        metrics = read_json(path, "metrics file")
        check_eval_classes(metrics, path, source_dataset)
        if seed in seeds.setdefault(label, {}):
            raise UncerdaError(f"{path}: row {label!r} has seed {seed} twice; give each seed's evaluation once")
        seeds[label][seed] = metrics
        add_protocol(protocols.setdefault(label, []), metrics)
    rows = []
    for label, per_seed in seeds.items():
        per_class = pd.DataFrame([{n: m["per_class_iou"][n] for n in names} for m in per_seed.values()],
                                 columns=names, dtype=float)
        spread = seed_columns({s: float("nan") if m["miou"] is None else m["miou"] for s, m in per_seed.items()})
        note = ("" if label in paper else f"; no paper row for {label!r}" if paper
                else f"; the paper has no rows for source {source_dataset!r}")
        row = {"model": label, "source": f"ours ({len(per_seed)} seed{'s' * (len(per_seed) > 1)}){note}",
               **per_class.mean().to_dict(), "miou": spread["miou_mean"]}
        for key in subsets[1:]:
            row[key] = float(pd.Series([m[key] for m in per_seed.values()], dtype=float).mean())
        row.update(n_seeds=spread["n_seeds"], miou_std=spread["miou_std"], miou_seeds=spread["miou_seeds"],
                   protocol="; ".join(protocols[label]))
        rows.append(row)
        if label in paper:
            rows.append({"model": label, "source": PAPER_SOURCE, **paper[label], "n_seeds": "",
                         "miou_std": float("nan"), "miou_seeds": "", "protocol": ""})
    columns = ["model", "source", *names, *subsets, "n_seeds", "miou_std", "miou_seeds", "protocol"]
    return pd.DataFrame(rows, columns=columns)


def write_per_class_table(items: list[tuple[str, int, str | Path]], source_dataset: str, out_dir: str | Path,
                          record: dict) -> str:
    """:func:`per_class_table` written to ``out_dir`` as ``per_class.csv`` (with the provenance ``record``
    beside it) and ``per_class.md`` (fractions as percentages); returns the markdown."""
    return write_table(per_class_table(items, source_dataset), out_dir, "per_class", record)
