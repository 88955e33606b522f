"""Per-image class pixel counts from the label PNGs, checked against hand counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fixtures_data import (write_gray_label, write_gta5_tree, write_palette_label, write_synthia_label,
                           write_synthia_tree)
from uncerda_core.artifacts import UncerdaError
from uncerda_core.data import labels
from uncerda_core.data.class_stats import (STATS_COLUMNS, compute_class_stats, count_label_classes,
                                           native_to_train_counts, read_class_stats, write_class_stats)
from uncerda_core.data.index import build_index
from uncerda_core.data.readers import read_label

# A 3x4 label of Cityscapes ids. By hand: road (7) x3, sidewalk (8) x1, building (11) x1,
# car (26) x3, person (24) x1, bicycle (33) x1; void ids 0 and 255 are not counted.
HAND_LABEL = np.array([[7, 7, 8, 0],
                       [26, 26, 26, 255],
                       [24, 33, 7, 11]], dtype=np.uint8)
HAND_COUNTS = {"road": 3, "sidewalk": 1, "building": 1, "car": 3, "person": 1, "bicycle": 1}


def expected_vector(by_name: dict[str, int]) -> np.ndarray:
    return np.array([by_name.get(name, 0) for name in labels.CLASS_NAMES], dtype=np.int64)


@pytest.mark.parametrize("dataset,writer", [("gta5", write_palette_label), ("cityscapes", write_gray_label)])
def test_hand_counted_label(tmp_path, dataset, writer):
    counts = count_label_classes(dataset, writer(tmp_path / "l.png", HAND_LABEL))
    assert counts.dtype == np.int64 and counts.shape == (19,)
    np.testing.assert_array_equal(counts, expected_vector(HAND_COUNTS))


def test_hand_counted_synthia_label(tmp_path):
    # SYNTHIA ids: road 3 x2, sky 1 x1, person 10 x1, car 8 x1; 13 and 0 are void.
    ids = np.array([[3, 3, 1], [10, 13, 8], [0, 0, 0]], dtype=np.uint16)
    counts = count_label_classes("synthia", write_synthia_label(tmp_path / "s.png", ids))
    np.testing.assert_array_equal(counts, expected_vector({"road": 2, "sky": 1, "person": 1, "car": 1}))


def test_native_to_train_counts():
    native = np.zeros(256, dtype=np.int64)
    native[[7, 8, 0, 33, 255]] = [5, 2, 9, 1, 4]
    np.testing.assert_array_equal(native_to_train_counts("gta5", native),
                                  expected_vector({"road": 5, "sidewalk": 2, "bicycle": 1}))


def test_invalid_id_names_the_file(tmp_path):
    path = write_palette_label(tmp_path / "00007.png", np.array([[7, 200]]))
    with pytest.raises(UncerdaError, match=r"00007\.png: label ids 200 are not gta5 label ids"):
        count_label_classes("gta5", path)


@pytest.mark.parametrize("workers", [1, 2])
def test_table_matches_an_independent_count(tmp_path, workers):
    write_gta5_tree(tmp_path, 9, size=(16, 8), label_sizes={"00004": (10, 6)})
    write_palette_label(tmp_path / "labels" / "00004.png", np.full((6, 10), 7))  # all road, 10x6
    index = build_index("gta5", tmp_path, "all", workers=1, progress=False)
    stats = compute_class_stats(index, "gta5", workers=workers, chunksize=2, progress=False)
    assert list(stats.columns) == list(STATS_COLUMNS)
    assert stats["name"].tolist() == index["name"].tolist()
    assert all(stats[c].dtype == np.int64 for c in labels.CLASS_NAMES)
    for row, label in zip(stats.itertuples(index=False), index["label"]):
        train = read_label("gta5", label)  # independent path: decode, LUT, bincount
        expected = np.bincount(train[train != 255], minlength=19)
        np.testing.assert_array_equal(np.array(row[1:]), expected)
    # Counts are at the label's native size, not resized to the image.
    assert index["label_resized"].tolist()[3] and stats.loc[3, "road"] == stats.iloc[3, 1:].sum() == 10 * 6


def test_synthia_table(tmp_path):
    write_synthia_tree(tmp_path, 3, size=(8, 4))
    index = build_index("synthia", tmp_path, "all", workers=1, progress=False)
    stats = compute_class_stats(index, "synthia", workers=1, progress=False)
    for i, label in enumerate(index["label"]):
        train = read_label("synthia", label)
        np.testing.assert_array_equal(stats.iloc[i, 1:].to_numpy(np.int64),
                                      np.bincount(train[train != 255], minlength=19))
    assert (stats[["terrain", "truck", "train"]] == 0).all().all()


def test_rows_without_label_are_rejected():
    index = pd.DataFrame({"name": ["00001", "00002"], "label": ["a.png", None]})
    with pytest.raises(UncerdaError, match=r"1 index row\(s\) have none:\n  00002"):
        compute_class_stats(index, "gta5", workers=1, progress=False)


def test_write_read_round_trip(tmp_path):
    stats = pd.DataFrame(np.arange(2 * 19, dtype=np.int64).reshape(2, 19), columns=list(labels.CLASS_NAMES))
    stats.insert(0, "name", ["00001", "00002"])
    out = tmp_path / "source_class_stats.csv"
    write_class_stats(stats, out, {"stage": "class_stats"})
    assert out.read_text().splitlines()[0] == ",".join(STATS_COLUMNS)
    pd.testing.assert_frame_equal(read_class_stats(out), stats)
    assert json.loads((tmp_path / "source_class_stats.csv.provenance.json").read_text())["stage"] == "class_stats"


def test_read_class_stats_errors(tmp_path):
    with pytest.raises(UncerdaError, match="class statistics not found"):
        read_class_stats(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,road\n00001,3\n")
    with pytest.raises(UncerdaError, match=r"bad\.csv: class-statistics columns must be name,road,sidewalk"):
        read_class_stats(bad)
    negative = tmp_path / "neg.csv"
    negative.write_text(",".join(STATS_COLUMNS) + "\n00001," + ",".join(["-1"] + ["0"] * 18) + "\n")
    with pytest.raises(UncerdaError, match="non-negative integers"):
        read_class_stats(negative)
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(STATS_COLUMNS) + "\n")
    with pytest.raises(UncerdaError, match=r"empty\.csv: class statistics table has no rows"):
        read_class_stats(empty)
