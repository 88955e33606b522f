"""Checkpoint selection on held-out target train images (``uncerda select``).

A stage trained with ``--keep-snapshots`` leaves ``snapshots/iter_<NNNNNN>.pt`` beside its
checkpoint. Each snapshot is evaluated on the held-out part of the labelled target train
split (images adaptation never read; see :func:`uncerda_core.data.index.split_holdout`) with
the same metrics and protocol as the reported evaluation
(:func:`~uncerda_core.evaluate.evaluate.checkpoint_metrics`); the best by mIoU (ties: the
earliest) is copied to the output folder as ``checkpoint.pt``, and every snapshot's score to
``selection.json``. The reported val split is never read here.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

from uncerda_core import artifacts
from uncerda_core.data.index import read_index
from uncerda_core.errors import UncerdaError
from uncerda_core.evaluate.evaluate import checkpoint_metrics
from uncerda_core.evaluate.metrics import best_candidate
from uncerda_core.runtime import load_checkpoint, snapshot_dir

SNAPSHOT_NAME = re.compile(r"iter_(\d+)\.pt")
SELECTED_CHECKPOINT = "checkpoint.pt"
SELECTION_JSON = "selection.json"


def list_snapshots(folder: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every ``iter_<N>.pt`` in ``folder``, by iteration (temporaries skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UncerdaError(f"{folder}: snapshot folder not found; the stage was trained without "
                           "--keep-snapshots (retrain it with selection.enabled: true)")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := SNAPSHOT_NAME.fullmatch(p.name)))
    if not found:
        raise UncerdaError(f"{folder}: no snapshots (iter_<N>.pt) to select from; retrain the stage with "
                           "selection.enabled: true")
    return found


def _check_snapshots_match(snapshots: list[tuple[int, Path]], checkpoint: str | Path) -> None:
    """The snapshots must come from the run that wrote ``checkpoint``: its last iteration is the last snapshot."""
    final_iteration = load_checkpoint(checkpoint).get("iteration")
    last = snapshots[-1][0]
    if final_iteration != last:
        raise UncerdaError(f"{snapshots[-1][1].parent}: the last snapshot is from iteration {last} but "
                           f"{checkpoint} from iteration {final_iteration}: the snapshots belong to another "
                           "run of the stage; retrain it")


def select_checkpoint(config: dict, checkpoint: str | Path, holdout_index: str | Path, out_dir: str | Path,
                      progress: bool = True) -> dict[str, Any]:
    """Evaluate every snapshot the stage that wrote ``checkpoint`` kept (``snapshots/`` beside it) on
    ``holdout_index``; write the best as ``<out_dir>/checkpoint.pt`` and the scores as ``selection.json``.

    The snapshots must come from the run that wrote ``checkpoint`` (its last iteration is the last
    snapshot). Everything is checked before the first evaluation; both outputs are written
    atomically, ``selection.json`` last.
    """
    snapshots = snapshot_dir(checkpoint)
    found = list_snapshots(snapshots)
    _check_snapshots_match(found, checkpoint)
    table = read_index(holdout_index)
    unlabelled = table.loc[table["label"].isna(), "image"].tolist()
    if unlabelled or not len(table):
        raise UncerdaError(f"{holdout_index}: selection needs labelled held-out images; "
                           + (f"{len(unlabelled)} have no label, e.g. {unlabelled[0]}" if unlabelled
                              else "the table is empty") + " (rebuild it with `uncerda holdout-split`)")
    candidates, protocol = [], None
    for iteration, path in found:
        metrics, _ = checkpoint_metrics(config, path, holdout_index, progress=progress)
        protocol = metrics["protocol"]
        scores = {k: v for k, v in metrics.items() if k.startswith("miou")}
        candidates.append({"snapshot": path.name, "iteration": iteration, **scores})
        print(f"select: {path.name}: held-out mIoU {100 * metrics['miou']:.2f}", file=sys.stderr)
    best = candidates[best_candidate([c["miou"] for c in candidates])]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen_path = snapshots / best["snapshot"]
    with artifacts.atomic_path(out_dir / SELECTED_CHECKPOINT, size_hint=chosen_path.stat().st_size) as tmp:
        shutil.copyfile(chosen_path, tmp)
    result = {
        "chosen": best,
        "metric": "miou",
        "candidates": candidates,
        "holdout_fraction": config["selection"]["holdout_fraction"],
        "holdout_images": int(len(table)),
        "protocol": protocol,
        "ties": "the earliest snapshot",
        "provenance": artifacts.provenance("select", config=config, inputs={
            "snapshots": snapshots, "holdout_index": holdout_index, "checkpoint": checkpoint}),
    }
    artifacts.write_json(out_dir / SELECTION_JSON, result)
    print(f"select: chose {best['snapshot']} (iteration {best['iteration']}) of {len(candidates)} on "
          f"{len(table)} held-out target train images -> {out_dir / SELECTED_CHECKPOINT}", file=sys.stderr)
    return result
