"""Class names and label-id mappings of the data sets (docs/method.md#data-sets).

Every reader maps its native label ids to the 19 Cityscapes *train ids*
(0..18) with :data:`IGNORE` (255) for everything that is not evaluated.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255
NUM_CLASSES = 19

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
    "train", "motorcycle", "bicycle",
)

# Cityscapes label id -> train id. GTA5 palette labels use the same ids.
CITYSCAPES_ID_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# Ids that may legally appear in a Cityscapes / GTA5 label file: 0..33 plus -1
# (license plate, stored as 255 in some exports). Anything else is corrupt data.
CITYSCAPES_VALID_IDS: frozenset[int] = frozenset(range(34)) | {255}

# SYNTHIA-RAND-CITYSCAPES class id (R channel of the 16-bit label) -> train id.
SYNTHIA_ID_TO_TRAIN: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11,
    17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}
SYNTHIA_VALID_IDS: frozenset[int] = frozenset(range(23))

# Evaluation subsets for SYNTHIA -> Cityscapes (Table 2): 16 classes (no
# terrain, truck, train) and 13 classes (additionally no wall, fence, pole).
SYNTHIA16_TRAIN_IDS: tuple[int, ...] = tuple(sorted(SYNTHIA_ID_TO_TRAIN.values()))
SYNTHIA13_TRAIN_IDS: tuple[int, ...] = tuple(c for c in SYNTHIA16_TRAIN_IDS if c not in (3, 4, 5))
ALL19_TRAIN_IDS: tuple[int, ...] = tuple(range(NUM_CLASSES))


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A uint8 table ``lut`` with ``lut[native_id] = train_id`` and 255 elsewhere."""
    lut = np.full(size, IGNORE, dtype=np.uint8)
    for native, train in mapping.items():
        lut[native] = train
    return lut


CITYSCAPES_LUT = lookup_table(CITYSCAPES_ID_TO_TRAIN)
SYNTHIA_LUT = lookup_table(SYNTHIA_ID_TO_TRAIN, size=65536)

# Cityscapes' official colours per train id, for visualisations.
TRAIN_ID_COLORS: np.ndarray = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# Train id -> the Cityscapes label id used to write labels in native layouts.
TRAIN_TO_CITYSCAPES_ID: dict[int, int] = {t: i for i, t in CITYSCAPES_ID_TO_TRAIN.items()}


def eval_class_ids(source_dataset: str) -> dict[str, tuple[int, ...]]:
    """The class subsets mIoU is reported over for a source data set.

    GTA5 -> Cityscapes: ``{"miou": 19 classes}``. SYNTHIA -> Cityscapes:
    ``{"miou": 16 classes, "miou13": 13 classes}`` (Table 2's mIoU and mIoU*).
    """
    if source_dataset == "synthia":
        return {"miou": SYNTHIA16_TRAIN_IDS, "miou13": SYNTHIA13_TRAIN_IDS}
    return {"miou": ALL19_TRAIN_IDS}


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Train-id map (H, W) -> RGB image (H, W, 3); ignored pixels are black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_CLASSES] = TRAIN_ID_COLORS
    return palette[train_ids]
