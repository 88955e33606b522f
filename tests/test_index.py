"""The index stage: one pass that checks every file and reports all problems together."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fixtures_data import (cityscapes_paths, truncate_file, write_cityscapes_tree, write_gray_label,
                           write_gta5_tree, write_palette_label, write_rgb, write_synthia_label,
                           write_synthia_tree)
from uncerda_core.artifacts import UncerdaError
from uncerda_core.data.index import (INDEX_COLUMNS, build_index, read_index, write_index)
from uncerda_core.data.readers import read_label


def test_gta5_index_with_a_resized_label(tmp_path, capsys):
    write_gta5_tree(tmp_path, 3, size=(8, 4), label_sizes={"00002": (4, 2)})
    # The small label of 00002, written out by hand: nearest resize doubles every pixel.
    write_palette_label(tmp_path / "labels" / "00002.png", np.array([[7, 8, 11, 12], [13, 17, 19, 20]]))
    df = build_index("gta5", tmp_path, "all", workers=1, progress=False)
    assert list(df.columns) == list(INDEX_COLUMNS)
    assert df["name"].tolist() == ["00001", "00002", "00003"]
    assert df["label_resized"].tolist() == [False, True, False]
    row = df.iloc[1]
    assert (row.width, row.height, row.label_width, row.label_height) == (8, 4, 4, 2)
    assert "3 images, 3 labelled, 1 labels resized to their image, 0 blank" in capsys.readouterr().out
    resized = read_label("gta5", row.label, size=(int(row.width), int(row.height)))
    np.testing.assert_array_equal(resized, [[0, 0, 1, 1, 2, 2, 3, 3]] * 2 + [[4, 4, 5, 5, 6, 6, 7, 7]] * 2)


def test_blank_frames(tmp_path, capsys):
    write_gta5_tree(tmp_path, 3, size=(8, 4))
    write_rgb(tmp_path / "images" / "00001.png", np.full((4, 8, 3), 40, np.uint8))  # one colour
    write_palette_label(tmp_path / "labels" / "00003.png", np.tile([0, 1, 255, 0], (4, 2)))  # only void ids
    df = build_index("gta5", tmp_path, "all", workers=1, progress=False)
    assert df["blank"].tolist() == [True, False, True]
    assert "2 blank (00001, 00003)" in capsys.readouterr().out


@pytest.mark.parametrize("workers", [1, 2])
def test_all_problems_reported_together(tmp_path, workers):
    write_gta5_tree(tmp_path, 6, size=(16, 8))
    truncate_file(tmp_path / "images" / "00001.png", 0.4)
    truncate_file(tmp_path / "labels" / "00002.png", 0.4)
    (tmp_path / "labels" / "00003.png").unlink()
    write_palette_label(tmp_path / "labels" / "00004.png", np.full((8, 16), 40))  # id 40 is not a label id
    with pytest.raises(UncerdaError) as info:
        build_index("gta5", tmp_path, "all", workers=workers, chunksize=2, progress=False)
    message = str(info.value)
    assert "4 problem(s) in 6 samples" in message
    assert "images/00001.png: cannot decode the image" in message
    assert "labels/00002.png: cannot decode the image" in message
    assert "images/00003.png: no label file (expected " in message and "labels/00003.png)" in message
    assert "labels/00004.png: label ids 40 are not gta5 label ids (valid: 0-33 and 255)" in message
    assert "00005" not in message and "00006" not in message


def test_many_problems_are_truncated_with_a_count(tmp_path):
    write_gta5_tree(tmp_path, 23, size=(4, 2), with_labels=False)
    with pytest.raises(UncerdaError) as info:
        build_index("gta5", tmp_path, "all", workers=1, progress=False)
    message = str(info.value)
    assert "23 problem(s)" in message and "... and 3 more (23 in all)" in message
    assert message.count("no label file") == 20


def test_synthia_8bit_label_in_index(tmp_path):
    write_synthia_tree(tmp_path, 2, size=(8, 4))
    write_synthia_label(tmp_path / "GT" / "LABELS" / "0000001.png", np.full((4, 8), 3), bits=8)
    with pytest.raises(UncerdaError, match=r"1 problem.*\n.*LABELS/0000001\.png: SYNTHIA label is 8-bit"):
        build_index("synthia", tmp_path, "all", workers=1, progress=False)


def test_synthia_index(tmp_path):
    write_synthia_tree(tmp_path, 2, size=(8, 4))
    df = build_index("synthia", tmp_path, "all", workers=1, progress=False)
    assert df["name"].tolist() == ["0000000", "0000001"]
    assert (df["label_width"] == 8).all() and not df["label_resized"].any()


def test_size_mismatch_is_an_error_outside_gta5(tmp_path):
    write_cityscapes_tree(tmp_path, {"train": 2}, size=(8, 4))
    label = cityscapes_paths(tmp_path, "train", "bremen_000001_000020")[1]
    write_gray_label(label, np.full((3, 8), 7))
    with pytest.raises(UncerdaError, match=r"bremen_000001_000020_gtFine_labelIds\.png: label is 8x3 but its "
                                           r"image .* is 8x4; expected equal sizes"):
        build_index("cityscapes", tmp_path, "train", workers=1, progress=False)


def test_missing_root_and_empty_split(tmp_path):
    with pytest.raises(UncerdaError, match="does not exist"):
        build_index("gta5", tmp_path / "absent", "all", progress=False)
    (tmp_path / "images").mkdir()
    with pytest.raises(UncerdaError, match="is empty"):
        build_index("gta5", tmp_path, "all", progress=False)


def test_labels_only_index_and_unlabelled_index(tmp_path):
    write_cityscapes_tree(tmp_path, {"val": 2}, size=(8, 4), with_images=False)
    df = build_index("cityscapes", tmp_path, "val", require_images=False, workers=1, progress=False)
    assert df["width"].isna().all() and (df["label_width"] == 8).all()
    write_gta5_tree(tmp_path / "g", 2, size=(8, 4), with_labels=False)
    df = build_index("gta5", tmp_path / "g", "all", require_labels=False, workers=1, progress=False)
    assert df["label"].tolist() == [None, None] and (df["width"] == 8).all()
    assert df["label_width"].isna().all()


def test_process_pool_gives_the_same_index(tmp_path):
    write_gta5_tree(tmp_path, 7, size=(8, 4), label_sizes={"00004": (6, 3)})
    one = build_index("gta5", tmp_path, "all", workers=1, progress=False)
    two = build_index("gta5", tmp_path, "all", workers=2, chunksize=2, progress=False)
    pd.testing.assert_frame_equal(one, two)
    assert two["label_resized"].sum() == 1


def test_write_read_round_trip(tmp_path):
    write_gta5_tree(tmp_path / "d", 3, size=(8, 4), label_sizes={"00003": (6, 3)})
    (tmp_path / "d" / "labels" / "00002.png").unlink()
    df = build_index("gta5", tmp_path / "d", "all", require_labels=False, workers=1, progress=False)
    out = tmp_path / "out" / "source_index.csv"
    write_index(df, out, {"stage": "index"})
    back = read_index(out)
    pd.testing.assert_frame_equal(back, df)
    assert back["name"].tolist() == ["00001", "00002", "00003"]  # leading zeros kept
    side = json.loads((tmp_path / "out" / "source_index.csv.provenance.json").read_text())
    assert side["stage"] == "index" and side["index_summary"]["label_resized"] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["source_index.csv", "source_index.csv.provenance.json"]


def test_read_index_errors(tmp_path):
    with pytest.raises(UncerdaError, match=r"nope\.csv: index table not found"):
        read_index(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,image\n00001,a.png\n")
    with pytest.raises(UncerdaError, match=r"bad\.csv: not an index table, missing column\(s\) label"):
        read_index(bad)
