"""The report's inputs: the workflow's files read into the data the figures draw.

Every reader checks that its file exists and has what the figure needs, and
raises :class:`UncerdaError` naming the file otherwise; ``load_examples`` runs
the stages' checkpoints on a few target val images, ``load_gmm_inputs`` reads a
maps file's histogram. ``model_name`` and ``round_label`` turn workflow paths into the labels the
figures show (a stage's label: :func:`uncerda_core.stages.stage_label`). The
checked ``read_csv``/``read_json`` come from :mod:`uncerda_core.artifacts`, a
pseudo-label folder's reader from :mod:`uncerda_core.pseudo.folder`. Nothing
here draws; :mod:`uncerda_core.report.figures` does.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from uncerda_core.artifacts import read_csv, read_json, read_provenance
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.pseudo.folder import read_pseudo_dir
from uncerda_core.stages import stage_label, tgaa_round
from uncerda_core.uncertainty.rank import RANK_COLUMNS
from uncerda_core.uncertainty.weights import WEIGHT_COLUMNS


@dataclass
class Example:
    """One target val image with its ground truth, the prediction of each stage and entropy maps."""

    name: str
    image: np.ndarray                       # (H, W, 3) uint8
    label: np.ndarray                       # (H, W) train ids, 255 ignored
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # stage -> (H, W) train ids
    entropy: dict[str, np.ndarray] = field(default_factory=dict)      # stage -> (H, W) in [0, 1]



# --- names of the stages ------------------------------------------------------------------------------

def model_name(path: str | os.PathLike) -> str:
    """The model a workflow file belongs to: ``eval/<model>.json``, ``rank/<model>.csv``,
    ``weights/<model>.csv``, ``maps/<model>.h5`` or ``models/<model>/checkpoint.pt``."""
    path = Path(path)
    return path.parent.name if path.name == "checkpoint.pt" else path.stem


def round_label(model: str) -> str:
    """``tgaa_r<r>`` -> ``round r (tgaa_r<r>)``; any other model is round 0 of the loop."""
    return f"round {tgaa_round(model) or 0} ({model})"


def weights_label(model: str) -> str:
    """The weights figure's label of a model: ``tgaa_r<r>`` -> ``round r``; any other its stage label."""
    r = tgaa_round(model)
    return f"round {r}" if r is not None else stage_label(model)


def stage_labels(stages: Sequence[str], paths: Mapping[str, str | os.PathLike], what: str) -> list[str]:
    """The labels (keys of ``paths``) of ``stages``, each given by its label or by its model's name."""
    models = {model_name(path): label for label, path in paths.items()}
    labels = []
    for stage in stages:
        label = stage if stage in paths else models.get(stage)
        if label is None:
            raise UncerdaError(f"{what} {stage}: no such stage among {list(paths)}")
        labels.append(label)
    return labels


# --- reading the workflow's files ---------------------------------------------------------------------

def require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UncerdaError(f"{where}: columns {missing} missing; expected {list(columns)}")
    return df


def read_sk_classes(rank_csv: str | os.PathLike) -> list[str]:
    """The names of the classes in a ranking's S_k (``rank.csv``: ``class``, ``in_sk``)."""
    rank = require_columns(read_csv(rank_csv, "ranking table"), ["class", "in_sk"], str(rank_csv))
    return list(rank.loc[rank["in_sk"].astype(str).str.lower() == "true", "class"])


def read_rank_table(path: str | os.PathLike) -> pd.DataFrame:
    """A ranking table (``rank.csv``) with every column of :data:`~uncerda_core.uncertainty.rank.RANK_COLUMNS`."""
    return require_columns(read_csv(path, "ranking table"), RANK_COLUMNS, path)


def read_round_notes(decisions: Sequence[str | os.PathLike], labels: Sequence[str], width: int = 22
                     ) -> dict[str, str]:
    """Each round decision's reason (``rounds/r<N>.json``), wrapped to ``width``, by the label of its round
    among ``labels`` (``round <N> (...)``, as :func:`round_label` words them)."""
    by_round = {int(m.group(1)): label for label in labels if (m := re.match(r"round (\d+) ", label))}
    notes = {}
    for path in decisions:
        decision = read_json(path, "round decision")
        r = decision.get("round")
        if r not in by_round:
            raise UncerdaError(f"{path}: decision of round {r}, but no ranking of round {r} is given")
        notes[by_round[r]] = "\n".join(textwrap.wrap(str(decision.get("reason", "")), width))
    return notes


def read_weight_tables(paths: Mapping[str, str | os.PathLike]
                       ) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]], dict[str, dict]]:
    """Each round's sampling weights (``weights.csv``) by label; the names of the S_k classes that drove
    it; and its provenance record's ``reading`` and ``draws`` (how far its draws move the class mix,
    ``uncertainty.weights.DrawSummary``). A round without a provenance record has no entry in the last two."""
    tables, sk, records = {}, {}, {}
    for label, path in paths.items():
        tables[label] = require_columns(read_csv(path, "weights table"), WEIGHT_COLUMNS, path)
        try:   # the S_k that drove the round, from the table's provenance record
            record = read_provenance(path)
        except UncerdaError:
            continue
        ids = record.get("sk")
        if ids:
            sk[label] = [CLASS_NAMES[i] if 0 <= int(i) < len(CLASS_NAMES) else str(i) for i in ids]
        records[label] = {key: record[key] for key in ("reading", "draws") if key in record}
    return tables, sk, records


def load_gmm_inputs(maps_path: str | os.PathLike, pseudo_dir: str | os.PathLike
                    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(histogram, bin values, classes.csv) for :func:`gmm_figure`: the maps file's histogram (the
    stored one, or one streaming pass) of the statistic and unit the pseudo labels were made with."""
    from uncerda_core.uncertainty.codes import code_values
    from uncerda_core.uncertainty.histogram import maps_histogram

    classes, _, _ = read_pseudo_dir(pseudo_dir)
    statistic = str(classes["statistic"].iloc[0]) if "statistic" in classes else "entropy"
    unit = str(classes["unit"].iloc[0]) if "unit" in classes else "pixel"
    hist = maps_histogram(maps_path, statistic, unit=unit, expected_classes=len(classes))
    return hist, code_values(), classes


def pick_indices(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (first and last included)."""
    if n_total <= 0:
        return []
    n = max(1, min(n, n_total))
    return sorted({int(round(i)) for i in np.linspace(0, n_total - 1, n)})


def load_examples(config: dict, checkpoints: Mapping[str, str | os.PathLike], val_index: str | os.PathLike,
                  n_images: int = 4, entropy_of: Sequence[str] = ()) -> list[Example]:
    """Run each stage's checkpoint on ``n_images`` target val images spread over the index.

    Images and labels at the network input size (``target.resize``), the
    config's normalisation and ``dump.fuse_aux``; entropy (Eq. 2,
    normalised) of the stages named in ``entropy_of``.
    """
    import torch

    from uncerda_core.data.datasets import ImageSettings, SegmentationDataset
    from uncerda_core.data.index import read_index
    from uncerda_core.inference import load_model, predict_probabilities
    from uncerda_core.runtime import resolve_device
    from uncerda_core.uncertainty.maps import maps_from_logits

    unknown = [s for s in entropy_of if s not in checkpoints]
    if unknown:
        raise UncerdaError(f"examples: entropy of {unknown} asked for, but no checkpoint given for them")
    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    table = read_index(val_index)
    if "blank" in table:
        table = table[~table["blank"]]
    picked = pick_indices(len(table), n_images)
    if not picked:
        raise UncerdaError(f"{val_index}: the target val index lists no images")
    table = table.iloc[picked].reset_index(drop=True)
    settings = ImageSettings.from_config(config["target"], train=False, flip=False)
    dataset = SegmentationDataset(config["target"]["dataset"], table, settings)
    items = [dataset[i] for i in range(len(dataset))]
    examples = [Example(name=dataset.names[i], image=items[i]["image"].permute(1, 2, 0).numpy().clip(0, 255)
                        .astype(np.uint8), label=items[i]["label"].numpy().astype(np.uint8))
                for i in range(len(items))]
    fuse_aux = config["dump"]["fuse_aux"]
    for stage, ckpt in checkpoints.items():
        model = load_model(ckpt, device, config["model"])
        for ex, item in zip(examples, items):
            prob = predict_probabilities(model, item["image"][None], config["train"]["normalize"],
                                         fuse_aux=fuse_aux)
            argmax, entropy, _ = maps_from_logits(prob, is_prob=True)
            ex.predictions[stage] = argmax[0]
            if stage in entropy_of:
                ex.entropy[stage] = entropy[0].astype(np.float32)
        del model
    for ex in examples:   # keep the requested order of the entropy columns
        ex.entropy = {s: ex.entropy[s] for s in entropy_of}
    return examples
