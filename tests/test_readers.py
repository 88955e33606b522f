"""Readers and listings on format fixtures the tests write, and on the real samples."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from fixtures_data import (cityscapes_paths, truncate_file, write_cityscapes_tree, write_gray_label,
                           write_gta5_tree, write_palette_label, write_rgb, write_synthia_label,
                           write_synthia_tree)
from uncerda_core.artifacts import UncerdaError
from uncerda_core.data.readers import (Sample, list_label_samples, list_samples, native_label_histogram,
                                       read_image, read_label, read_native_label, split_has_labels)

# ----------------------------------------------------------------------------- GTA5


def test_gta5_listing_layout(tmp_path):
    names = write_gta5_tree(tmp_path, 3)
    samples = list_samples("gta5", tmp_path, "all")
    assert [s.name for s in samples] == names == ["00001", "00002", "00003"]
    assert samples[1] == Sample("00002", str(tmp_path / "images" / "00002.png"),
                                str(tmp_path / "labels" / "00002.png"))


def test_gta5_split_file(tmp_path):
    write_gta5_tree(tmp_path, 4)
    (tmp_path / "train.txt").write_text("# a subset\n00003\n\n00001.png\n")
    assert [s.name for s in list_samples("gta5", tmp_path, "train")] == ["00003", "00001"]


def test_gta5_split_file_missing_or_naming_absent_images(tmp_path):
    write_gta5_tree(tmp_path, 2)
    with pytest.raises(UncerdaError, match=r"val\.txt: split file not found"):
        list_samples("gta5", tmp_path, "val")
    (tmp_path / "val.txt").write_text("00001\n00009\n")
    with pytest.raises(UncerdaError, match=r"val\.txt: 1 listed images not found:\n.*images/00009\.png"):
        list_samples("gta5", tmp_path, "val")


def test_gta5_palette_label_read_as_indices(tmp_path):
    ids = np.array([[7, 8, 0], [26, 33, 255]], dtype=np.uint8)
    path = write_palette_label(tmp_path / "l.png", ids)
    assert Image.open(path).mode == "P"
    native = read_native_label("gta5", path)
    assert native.dtype == np.uint8
    np.testing.assert_array_equal(native, ids)
    np.testing.assert_array_equal(read_label("gta5", path), [[0, 1, 255], [13, 18, 255]])
    # The palette colours are not the ids: reading through RGB would be wrong.
    assert not np.array_equal(np.asarray(Image.open(path).convert("RGB"))[..., 0], ids)


def test_colour_label_rejected(tmp_path):
    path = write_rgb(tmp_path / "colour.png", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(UncerdaError, match=r"colour\.png: a gta5 label must be an 8-bit label-id PNG.*mode RGB"):
        read_label("gta5", path)


def test_label_resized_nearest_to_a_size(tmp_path):
    ids = np.array([[7, 8, 11, 12], [13, 17, 19, 20]], dtype=np.uint8)  # train ids 0..7
    path = write_palette_label(tmp_path / "l.png", ids)
    np.testing.assert_array_equal(read_label("gta5", path, size=(8, 4)),
                                  [[0, 0, 1, 1, 2, 2, 3, 3]] * 2 + [[4, 4, 5, 5, 6, 6, 7, 7]] * 2)
    # Pixel-centre sampling: 4 -> 2 columns picks columns 1 and 3; 2 -> 1 rows picks row 1.
    np.testing.assert_array_equal(read_label("gta5", path, size=(2, 1)), [[5, 7]])
    assert read_label("gta5", path, size=(4, 2)).shape == (2, 4)


def test_gta5_image_without_label(tmp_path):
    write_gta5_tree(tmp_path, 3)
    (tmp_path / "labels" / "00002.png").unlink()
    with pytest.raises(UncerdaError, match=r"1 image\(s\) without a label file:\n.*images/00002\.png: no label"):
        list_samples("gta5", tmp_path, "all")
    samples = list_samples("gta5", tmp_path, "all", require_labels=False)
    assert [s.label is None for s in samples] == [False, True, False]

# ----------------------------------------------------------------------------- SYNTHIA


def test_synthia_listing_and_16bit_label(tmp_path):
    names = write_synthia_tree(tmp_path, 2)
    samples = list_samples("synthia", tmp_path, "all")
    assert [s.name for s in samples] == names == ["0000000", "0000001"]
    assert samples[0].image == str(tmp_path / "RGB" / "0000000.png")
    assert samples[0].label == str(tmp_path / "GT" / "LABELS" / "0000000.png")

    ids = np.array([[3, 4, 21], [0, 13, 11]], dtype=np.uint16)
    path = write_synthia_label(tmp_path / "x.png", ids)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (2, 3, 3)
    assert (raw[..., 1] > 2).all()  # G holds other values: the reader must take R
    native = read_native_label("synthia", path)
    assert native.dtype == np.uint16
    np.testing.assert_array_equal(native, ids)
    np.testing.assert_array_equal(read_label("synthia", path), [[0, 1, 3], [255, 255, 18]])


def test_synthia_8bit_label_rejected(tmp_path):
    path = write_synthia_label(tmp_path / "0000005.png", np.array([[3, 4]]), bits=8)
    with pytest.raises(UncerdaError, match=r"0000005\.png: SYNTHIA label is 8-bit.*expected a 16-bit PNG"):
        read_label("synthia", path)
    with pytest.raises(UncerdaError, match=r"0000005\.png: SYNTHIA label is 8-bit"):
        native_label_histogram("synthia", path)


def test_synthia_truncated_label(tmp_path):
    path = write_synthia_label(tmp_path / "t.png", np.full((40, 60), 3))
    truncate_file(path, 0.5)
    with pytest.raises(UncerdaError, match=r"t\.png: cannot decode the SYNTHIA label"):
        read_native_label("synthia", path)

# ----------------------------------------------------------------------------- Cityscapes


def test_cityscapes_naming(tmp_path):
    stems = write_cityscapes_tree(tmp_path, {"train": 3, "val": 1})
    assert stems["train"] == ["aachen_000000_000019", "aachen_000002_000021", "bremen_000001_000020"]
    samples = list_samples("cityscapes", tmp_path, "train")
    assert [s.name for s in samples] == stems["train"]
    image, label = cityscapes_paths(tmp_path, "train", "bremen_000001_000020")
    assert samples[2] == Sample("bremen_000001_000020", str(image), str(label))
    assert image.name == "bremen_000001_000020_leftImg8bit.png"
    assert label.name == "bremen_000001_000020_gtFine_labelIds.png"
    assert read_label("cityscapes", label).shape == (16, 32)


def test_cityscapes_labels_only_split(tmp_path):
    write_cityscapes_tree(tmp_path, {"val": 2}, with_images=False)
    with pytest.raises(UncerdaError, match=r"leftImg8bit/val: folder not found, but .*gtFine/val exists.*"
                                           r"list_label_samples"):
        list_samples("cityscapes", tmp_path, "val")
    samples = list_label_samples("cityscapes", tmp_path, "val")
    assert [s.name for s in samples] == ["aachen_000000_000019", "bremen_000001_000020"]
    assert all(s.label is not None for s in samples)
    assert samples[0].image.endswith("leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png")


def test_split_has_labels_follows_each_layout(tmp_path):
    """The workflow's start-up check for target ground truth: the label folder of the split, per layout."""
    write_cityscapes_tree(tmp_path / "cs", {"train": 1}, with_images=False)
    (tmp_path / "cs" / "leftImg8bit" / "val").mkdir(parents=True)
    assert split_has_labels("cityscapes", tmp_path / "cs", "train")
    assert not split_has_labels("cityscapes", tmp_path / "cs", "val")  # images, no gtFine/val
    write_gta5_tree(tmp_path / "gta", 1)
    assert split_has_labels("gta5", tmp_path / "gta", "all")
    assert not split_has_labels("synthia", tmp_path / "gta", "all")
    with pytest.raises(UncerdaError, match="unknown data set"):
        split_has_labels("kitti", tmp_path, "train")


def test_cityscapes_unknown_split_and_missing_label(tmp_path):
    write_cityscapes_tree(tmp_path, {"train": 2})
    with pytest.raises(UncerdaError, match=r"leftImg8bit/test: split 'test' not found \(splits with images: train\)"):
        list_samples("cityscapes", tmp_path, "test")
    cityscapes_paths(tmp_path, "train", "aachen_000000_000019")[1].unlink()
    with pytest.raises(UncerdaError, match=r"aachen_000000_000019_leftImg8bit\.png: no label .*_gtFine_labelIds"):
        list_samples("cityscapes", tmp_path, "train")
    assert list_samples("cityscapes", tmp_path, "train", require_labels=False)[0].label is None

# ----------------------------------------------------------------------------- errors shared by all


@pytest.mark.parametrize("dataset", ["gta5", "synthia", "cityscapes"])
def test_missing_root(tmp_path, dataset):
    with pytest.raises(UncerdaError, match=r"data root '.*nowhere' does not exist; expected the"):
        list_samples(dataset, tmp_path / "nowhere", "all")


def test_empty_split(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UncerdaError, match=r"images: no \.png files, split 'all' is empty"):
        list_samples("gta5", tmp_path, "all")
    (tmp_path / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    with pytest.raises(UncerdaError, match=r"leftImg8bit/train: no \*_leftImg8bit\.png files.*is empty"):
        list_samples("cityscapes", tmp_path, "train")


def test_layout_folder_missing(tmp_path):
    (tmp_path / "RGB").mkdir()
    with pytest.raises(UncerdaError, match=r"/images: folder not found; expected the GTA5 layout"):
        list_samples("gta5", tmp_path, "all")


def test_truncated_image_and_label(tmp_path):
    image = write_rgb(tmp_path / "i.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    truncate_file(image, 0.5)
    with pytest.raises(UncerdaError, match=r"i\.png: cannot decode the image"):
        read_image(image)
    label = write_palette_label(tmp_path / "l.png", np.random.default_rng(0).integers(0, 34, (64, 64)))
    truncate_file(label, 0.5)
    with pytest.raises(UncerdaError, match=r"l\.png: cannot decode the image"):
        read_label("gta5", label)
    with pytest.raises(UncerdaError, match=r"absent\.png: no such file"):
        read_image(tmp_path / "absent.png")


def test_read_image_rgb(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = read_image(write_rgb(tmp_path / "a.png", rgb))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, rgb)
    grey = read_image(write_gray_label(tmp_path / "g.png", np.array([[5, 9]])))
    np.testing.assert_array_equal(grey, [[[5, 5, 5], [9, 9, 9]]])


def test_native_label_histogram(tmp_path):
    path = write_palette_label(tmp_path / "l.png", np.array([[7, 7, 0], [255, 33, 7]]))
    counts, size = native_label_histogram("gta5", path)
    assert size == (3, 2) and counts.shape == (256,)
    assert (counts[7], counts[0], counts[255], counts[33], counts.sum()) == (3, 1, 1, 1, 6)

# ----------------------------------------------------------------------------- real files


def test_real_cityscapes_train(real_samples):
    samples = list_samples("cityscapes", real_samples / "cityscapes", "train")
    assert len(samples) == 8 and all(s.name.startswith("aachen_") for s in samples)
    image = read_image(samples[0].image)
    assert image.shape == (1024, 2048, 3) and image.dtype == np.uint8
    label = read_label("cityscapes", samples[0].label)
    assert label.shape == (1024, 2048) and label.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(19)) | {255}
    assert {0, 2, 10, 13} <= set(np.unique(label))  # road, building, sky, car in a street scene


def test_real_cityscapes_val_labels_only(real_samples):
    with pytest.raises(UncerdaError, match="list_label_samples"):
        list_samples("cityscapes", real_samples / "cityscapes", "val")
    samples = list_label_samples("cityscapes", real_samples / "cityscapes", "val")
    assert len(samples) == 15 and all(s.name.startswith("frankfurt_") for s in samples)
    seen: set[int] = set()
    for s in samples:
        counts, size = native_label_histogram("cityscapes", s.label)
        assert size == (2048, 1024)
        seen |= set(np.flatnonzero(counts).tolist())
    # README: all 19 evaluated ids occur across these files, plus void ids 0-6, 9, 18.
    assert {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33} <= seen
    assert {0, 1, 2, 3, 4, 5, 6, 9, 18} <= seen


def test_real_gta5_images_without_labels(real_samples):
    with pytest.raises(UncerdaError, match=r"5 image\(s\) without a label file"):
        list_samples("gta5", real_samples / "gta5", "all")
    samples = list_samples("gta5", real_samples / "gta5", "all", require_labels=False)
    assert [s.name for s in samples] == ["00373", "02630", "04112", "17991", "fda_demo_source"]
    assert all(s.label is None for s in samples)
    assert read_image(samples[0].image).shape == (526, 957, 3)


@pytest.mark.parametrize("where", ["png_in_images", "images_folder", "root", "cityscapes_image"])
def test_a_symbolic_link_that_loops_is_named(tmp_path, capsys, where):
    """Before: a raw OSError (Too many levels of symbolic links), or 'not found' for a folder that is there."""
    from uncerda_core.cli import main   # the command a user meets it through

    dataset, split, root = "gta5", "all", tmp_path / "gta5"
    if where == "png_in_images":
        write_gta5_tree(root, 2)
        link = root / "images" / "00009.png"
    elif where == "images_folder":
        write_gta5_tree(root, 2)
        shutil.rmtree(root / "images")
        link = root / "images"
    elif where == "root":
        link = root
    else:
        dataset, split, root = "cityscapes", "val", tmp_path / "cs"
        write_cityscapes_tree(root, {"val": 2})
        image = next((root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
        image.unlink()
        link = image
    os.symlink(link.name, link)                       # a link to itself
    code = main(["index", "--dataset", dataset, "--root", str(root), "--split", split,
                 "--out", str(tmp_path / "index.csv"), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{link}: a symbolic link that loops" in err, err
    assert not (tmp_path / "index.csv").exists()
