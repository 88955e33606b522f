"""Finding the prediction PNGs others write, and reading them as train ids.

A prediction folder may hold city sub-folders, and its files may be named
``<stem>.png``, ``<stem>_leftImg8bit.png``, ``<stem>_trainIds.png`` or
``<stem>_labelIds.png``. As cityscapesscripts' evaluator does, a file belongs to
the image whose key (``<city>_<seq>_<frame>`` for Cityscapes: the image stem)
its name carries, wherever it lies in the folder. What the values are:

- ``train``: train ids 0..18, 255 for no prediction (what ``uncerda evaluate``
  and ``uncerda predict`` write as ``*_trainIds.png``);
- ``label``: Cityscapes label ids 0..33 (the benchmark's format); ids of classes
  that are not evaluated become "no prediction";
- ``auto`` (default): by name; ``*_labelIds.png`` are label ids, every other
  name train ids.

``_color`` and ``_entropy`` files (written by ``uncerda predict`` beside the
ids) are not predictions and are skipped. When one image has both a
``_trainIds`` and a ``_labelIds`` file, ``auto`` reads the train ids; two files
of the same kind for one image are an error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uncerda_core.data.labels import CITYSCAPES_LUT, IGNORE, NUM_CLASSES
from uncerda_core.data.readers import format_problems, valid_mask
from uncerda_core.errors import UncerdaError

ID_TYPES: tuple[str, ...] = ("auto", "train", "label")
# Name tag -> the id type the name says (None: the name says nothing).
NAME_TAGS: dict[str, str | None] = {"_trainIds": "train", "_labelIds": "label", "_leftImg8bit": None}
SKIPPED_TAGS: tuple[str, ...] = ("_color", "_entropy")
_VALID_LABEL_IDS = valid_mask("cityscapes", 256)


@dataclass(frozen=True)
class PredictionFile:
    """One image's prediction: its file and what its values are (``train`` or ``label`` ids)."""

    path: Path
    id_type: str


def split_name(path: str | Path) -> tuple[str, str | None] | None:
    """(key, tag) of a prediction file name: ``a_b_c_labelIds.png`` -> (``a_b_c``, ``_labelIds``);
    ``a_b_c.png`` -> (``a_b_c``, None); None for a file that is not a prediction."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        return None
    stem = path.stem
    if stem.endswith(SKIPPED_TAGS):
        return None
    for tag in NAME_TAGS:
        if stem.endswith(tag) and len(stem) > len(tag):
            return stem[: -len(tag)], tag
    return stem, None


def _id_type(tag: str | None, id_type: str) -> str | None:
    """The id type of a file with ``tag`` under the requested ``id_type``; None: not a candidate."""
    said = NAME_TAGS.get(tag) if tag else None
    if id_type == "auto":
        return said or "train"
    return None if said not in (None, id_type) else id_type


def find_predictions(pred_dir: str | Path, names: list[str], id_type: str = "auto") -> dict[str, PredictionFile]:
    """The prediction file of every image in ``names``, searched recursively in ``pred_dir``.

    Raises :class:`UncerdaError`, before any file is read, for a missing
    folder, images without a prediction, and images with two candidates of the
    same kind.
    """
    if id_type not in ID_TYPES:
        raise UncerdaError(f"--id-type {id_type!r}: expected one of {', '.join(ID_TYPES)}")
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UncerdaError(f"{pred_dir}: prediction folder not found")
    wanted = set(names)
    # Per image: (rank, file, id type); a name tag that matches beats an untagged name.
    candidates: dict[str, list[tuple[int, Path, str]]] = {}
    unmatched = 0
    for path in sorted(pred_dir.rglob("*.png")):
        parsed = split_name(path)
        if parsed is None or not path.is_file():
            continue
        key, tag = parsed
        kind = _id_type(tag, id_type)
        if key not in wanted or kind is None:
            unmatched += key not in wanted
            continue
        rank = ("_trainIds", "_labelIds").index(tag) if tag in ("_trainIds", "_labelIds") else 2
        candidates.setdefault(key, []).append((rank, path, kind))
    found: dict[str, PredictionFile] = {}
    clashes = []
    for key, options in candidates.items():
        options.sort(key=lambda o: o[0])
        best = [o for o in options if o[0] == options[0][0]]
        if len(best) > 1:
            clashes.append(" and ".join(str(o[1]) for o in best))
        found[key] = PredictionFile(options[0][1], options[0][2])
    if clashes:
        raise UncerdaError(format_problems(
            f"{pred_dir}: {len(clashes)} image(s) with more than one prediction file of the same kind "
            "(remove the extra ones):", clashes))
    missing = [n for n in names if n not in found]
    if missing:
        kinds = {"auto": "", "train": " of train ids", "label": " of label ids"}[id_type]
        hint = (f"; {unmatched} PNG(s) there carry no image key of this split" if unmatched else "")
        raise UncerdaError(
            f"{pred_dir}: no prediction{kinds} for {len(missing)} of {len(names)} images, e.g. {missing[0]} "
            f"(expected {missing[0]}.png, {missing[0]}_leftImg8bit.png, {missing[0]}_trainIds.png or "
            f"{missing[0]}_labelIds.png, in any sub-folder){hint}")
    return found


def to_train_ids(pred: np.ndarray, prediction: PredictionFile) -> np.ndarray:
    """A prediction's values as train ids (255 = no prediction), checked against its id type."""
    if prediction.id_type == "label":
        bad = ~_VALID_LABEL_IDS[pred]
        if bad.any():
            raise UncerdaError(f"{prediction.path}: Cityscapes label ids must be 0..33 or 255, "
                               f"found {int(pred[bad][0])}")
        return CITYSCAPES_LUT[pred]
    bad = (pred >= NUM_CLASSES) & (pred != IGNORE)
    if bad.any():
        raise UncerdaError(f"{prediction.path}: prediction values must be train ids 0..{NUM_CLASSES - 1} or "
                           f"{IGNORE}, found {int(pred[bad][0])} (Cityscapes label ids? name the files "
                           "*_labelIds.png or pass --id-type label)")
    return pred
