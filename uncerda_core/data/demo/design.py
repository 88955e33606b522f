"""The demo's fixed design: the codes it draws, its scene types and limits, and its target statistics.

Everything here is a constant that the other parts read: the train ids (0..18) and
the void codes the scenes are drawn in, with the table that writes them as
Cityscapes label ids; the scene types that decide where the rare classes occur;
the nearest depth and thinnest pole the network can still resolve; and
:data:`DESIGN_TARGETS`, the class statistics the generator is built to produce
(the design table of docs/results.md, "How the demo is built, and why", checked by tests/test_demo.py).
"""

from __future__ import annotations

import numpy as np

from uncerda_core.data import labels as L

# Internal void codes in the drawn label map (never train ids 0..18).
VOID_STATIC = 250   # small street furniture that is not evaluated (Cityscapes "static", id 4)
VOID_EGO = 251      # the ego vehicle's bonnet in the target (Cityscapes "ego vehicle", id 1)
VOID_NONE = 255     # nothing drawn (never left after a full scene; Cityscapes "unlabeled", id 0)

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, \
    PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(19)

# No object stands nearer the horizon than this depth (0 = horizon, 1 = bottom row): farther
# away, at 128x64, people and poles would be one or two pixels, below what an output stride
# of 4 can resolve, and the demo would measure resolution instead of adaptation.
NEAREST_OBJECT_DEPTH = 0.12
# Thinnest pole, in pixels (thinner poles vanish at the network's output stride).
MIN_POLE_PX = 2.0


def _label_id_lut() -> np.ndarray:
    """Drawn code -> Cityscapes label id (uint8 LUT over 0..255)."""
    lut = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in L.TRAIN_TO_CITYSCAPES_ID.items():
        lut[train_id] = label_id
    lut[VOID_STATIC] = 4
    lut[VOID_EGO] = 1
    return lut


LABEL_ID_LUT = _label_id_lut()


# Scene types: which of the rare classes a street can hold. Most street frames contain no
# train, bus, truck or rider; drawing them only in some scene types gives the rare classes the
# per-image presence of street data instead of putting one of them in almost every image.
SCENE_TYPES = ("residential", "arterial", "cycle", "tram")


# The class statistics the generator is designed to produce, in both domains (docs/results.md's
# design table; tests/test_demo.py checks a generated set against them): per class, the share
# of labelled pixels and the share of images that contain the class, as (low, high) bands.
# The shape mirrors street data: a few stuff classes cover most pixels and occur everywhere,
# thin and small things are under 5 % of the pixels but in most images, and the rare vehicles
# and riders are in a minority of the images (scene types), each under 1.5 % of the pixels.
DESIGN_TARGETS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    #              pixel share        images containing it
    "road":       ((0.10, 0.40),     (0.95, 1.0)),
    "sidewalk":   ((0.03, 0.12),     (0.95, 1.0)),
    "building":   ((0.15, 0.35),     (0.95, 1.0)),
    "wall":       ((0.002, 0.02),    (0.10, 0.45)),
    "fence":      ((0.002, 0.02),    (0.15, 0.55)),
    "pole":       ((0.01, 0.05),     (0.80, 1.0)),
    "light":      ((0.001, 0.01),    (0.40, 0.85)),
    "sign":       ((0.0005, 0.01),   (0.40, 0.85)),
    "vegetation": ((0.08, 0.25),     (0.95, 1.0)),
    "terrain":    ((0.02, 0.10),     (0.80, 1.0)),
    "sky":        ((0.08, 0.25),     (0.95, 1.0)),
    "person":     ((0.005, 0.03),    (0.70, 1.0)),
    "rider":      ((0.0005, 0.005),  (0.10, 0.40)),
    "car":        ((0.03, 0.12),     (0.90, 1.0)),
    "truck":      ((0.001, 0.015),   (0.02, 0.25)),
    "bus":        ((0.001, 0.01),    (0.02, 0.20)),
    "train":      ((0.001, 0.012),   (0.03, 0.20)),
    "motorcycle": ((0.0003, 0.005),  (0.03, 0.25)),
    "bicycle":    ((0.0005, 0.008),  (0.08, 0.45)),
}
