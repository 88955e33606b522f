"""Every native id of every label mapping, against the tables of docs/method.md#data-sets written out here."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures_data import write_gray_label, write_palette_label, write_synthia_label
from uncerda_core.artifacts import UncerdaError
from uncerda_core.data import labels
from uncerda_core.data.readers import label_lut, read_label

# Cityscapes label id -> train id (also GTA5's palette indices). 255 = ignore.
CITYSCAPES_TABLE = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,
    7: 0,     # road
    8: 1,     # sidewalk
    9: 255, 10: 255,
    11: 2,    # building
    12: 3,    # wall
    13: 4,    # fence
    14: 255, 15: 255, 16: 255,
    17: 5,    # pole
    18: 255,
    19: 6,    # light
    20: 7,    # sign
    21: 8,    # vegetation
    22: 9,    # terrain
    23: 10,   # sky
    24: 11,   # person
    25: 12,   # rider
    26: 13,   # car
    27: 14,   # truck
    28: 15,   # bus
    29: 255, 30: 255,
    31: 16,   # train
    32: 17,   # motorcycle
    33: 18,   # bicycle
    255: 255,  # license plate (-1) as stored in some exports
}

# SYNTHIA-RAND-CITYSCAPES class id (R channel) -> train id.
SYNTHIA_TABLE = {
    0: 255,
    1: 10,    # sky
    2: 2,     # building
    3: 0,     # road
    4: 1,     # sidewalk
    5: 4,     # fence
    6: 8,     # vegetation
    7: 5,     # pole
    8: 13,    # car
    9: 7,     # sign
    10: 11,   # person
    11: 18,   # bicycle
    12: 17,   # motorcycle
    13: 255,
    14: 255,
    15: 6,    # light
    16: 255,
    17: 12,   # rider
    18: 255,
    19: 15,   # bus
    20: 255,
    21: 3,    # wall
    22: 255,
}

TRAIN_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation",
               "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def test_class_names_in_train_id_order():
    assert list(labels.CLASS_NAMES) == TRAIN_NAMES


@pytest.mark.parametrize("dataset", ["gta5", "cityscapes"])
def test_cityscapes_ids_table(dataset):
    lut = label_lut(dataset)
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    for native, train in CITYSCAPES_TABLE.items():
        assert lut[native] == train, native
    assert labels.CITYSCAPES_VALID_IDS == frozenset(CITYSCAPES_TABLE)


def test_synthia_ids_table():
    lut = label_lut("synthia")
    for native, train in SYNTHIA_TABLE.items():
        assert lut[native] == train, native
    assert labels.SYNTHIA_VALID_IDS == frozenset(SYNTHIA_TABLE)
    # terrain (9), truck (14) and train (16) never occur in SYNTHIA.
    assert {9, 14, 16}.isdisjoint(v for v in SYNTHIA_TABLE.values())


def test_synthia_eval_subsets():
    assert labels.SYNTHIA16_TRAIN_IDS == (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    assert labels.SYNTHIA13_TRAIN_IDS == (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    assert labels.eval_class_ids("gta5") == {"miou": tuple(range(19))}


@pytest.mark.parametrize("dataset,writer", [("gta5", write_palette_label), ("cityscapes", write_gray_label)])
def test_every_cityscapes_id_through_a_label_file(tmp_path, dataset, writer):
    native = np.array([sorted(CITYSCAPES_TABLE)], dtype=np.uint8)  # one row holding every valid id
    path = writer(tmp_path / "l.png", native)
    expected = np.array([[CITYSCAPES_TABLE[i] for i in sorted(CITYSCAPES_TABLE)]], dtype=np.uint8)
    np.testing.assert_array_equal(read_label(dataset, path), expected)


def test_every_synthia_id_through_a_16bit_label(tmp_path):
    native = np.array([sorted(SYNTHIA_TABLE)], dtype=np.uint16)
    path = write_synthia_label(tmp_path / "s.png", native)
    expected = np.array([[SYNTHIA_TABLE[i] for i in sorted(SYNTHIA_TABLE)]], dtype=np.uint8)
    np.testing.assert_array_equal(read_label("synthia", path), expected)


@pytest.mark.parametrize("bad", [34, 100, 254])
def test_cityscapes_ids_outside_the_table_are_rejected(tmp_path, bad):
    path = write_gray_label(tmp_path / "l.png", np.array([[7, bad]], dtype=np.uint8))
    with pytest.raises(UncerdaError, match=rf"l\.png.*{bad}"):
        read_label("cityscapes", path)


def test_synthia_id_23_rejected(tmp_path):
    path = write_synthia_label(tmp_path / "s.png", np.array([[3, 23]], dtype=np.uint16))
    with pytest.raises(UncerdaError, match=r"s\.png.*23"):
        read_label("synthia", path)


def test_unknown_dataset():
    with pytest.raises(UncerdaError, match="unknown data set 'kitti'"):
        label_lut("kitti")
