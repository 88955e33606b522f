"""Torch datasets over an index table, and the deterministic batch stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fixtures_data import write_gta5_tree, write_palette_label
from uncerda_core.artifacts import UncerdaError
from uncerda_core.data.datasets import (BatchStream, ImageSettings, IterationBatches, SegmentationDataset,
                                        collate, normalize)
from uncerda_core.data.index import build_index
from uncerda_core.data.readers import read_image, read_label


# --------------------------------------------------------------------------- BatchStream

def test_stream_is_a_pure_function_of_the_iteration():
    a = BatchStream(10, 3, seed=7, stream=1)
    b = BatchStream(10, 3, seed=7, stream=1)
    later = b.items(5)                        # b asked out of order: same answer
    for it in range(6):
        a.items(it)
    assert a.items(5) == later
    assert len(later) == 3 and all(0 <= i < 10 and f == -1 for i, _, f in later)
    # Another iteration, seed or stream gives other draws.
    assert a.items(6) != later
    assert BatchStream(10, 3, seed=8, stream=1).items(5) != later
    assert BatchStream(10, 3, seed=7, stream=2).items(5) != later


def test_stream_matches_its_documented_draw():
    stream = BatchStream(10, 2, seed=3, stream=1)
    rng = np.random.default_rng([3, 1, 4])
    indices = rng.integers(0, 10, size=2)
    seeds = rng.integers(0, 2**31 - 1, size=2)
    assert stream.items(4) == [(int(indices[0]), int(seeds[0]), -1), (int(indices[1]), int(seeds[1]), -1)]


def test_shards_are_disjoint_parts_of_one_stream():
    full = BatchStream(20, 2, seed=0, stream=1, world_size=3).global_items(9)
    assert len(full) == 6
    shards = [BatchStream(20, 2, seed=0, stream=1, rank=r, world_size=3).items(9) for r in range(3)]
    assert shards[0] == full[0::3] and shards[1] == full[1::3] and shards[2] == full[2::3]
    assert sorted(sum(shards, [])) == sorted(full)


def test_weighted_draw_never_picks_a_zero_weight_image():
    p = np.array([0.0, 1.0, 0.0, 3.0])
    stream = BatchStream(4, 4, seed=0, stream=1, probabilities=p)
    assert stream.probabilities.tolist() == [0.0, 0.25, 0.0, 0.75]
    drawn = [i for it in range(100) for i, _, _ in stream.items(it)]
    assert set(drawn) == {1, 3}
    # About 3/4 of the draws are image 3 (400 draws: well within 5 standard deviations).
    assert abs(drawn.count(3) / len(drawn) - 0.75) < 5 * np.sqrt(0.75 * 0.25 / len(drawn))


@pytest.mark.parametrize("p", [[1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
def test_bad_probabilities(p):
    with pytest.raises(UncerdaError, match="one non-negative number per image"):
        BatchStream(3, 1, seed=0, stream=1, probabilities=np.array(p))


def test_empty_data_set():
    with pytest.raises(UncerdaError, match="empty data set"):
        BatchStream(0, 2, seed=0, stream=1)


def test_focus_classes_follow_the_weights():
    weights = np.zeros((3, 5))
    weights[0, 2] = 1.0                       # image 0: always class 2
    weights[1, [1, 4]] = [1.0, 1.0]           # image 1: class 1 or 4
    # image 2: no weight -> no focus (-1)
    stream = BatchStream(3, 6, seed=0, stream=1, focus_weights=weights)
    seen = {0: set(), 1: set(), 2: set()}
    for it in range(30):
        for index, _, focus in stream.items(it):
            seen[index].add(focus)
    assert seen[0] == {2} and seen[1] == {1, 4} and seen[2] == {-1}


# --------------------------------------------------------------------------- datasets

@pytest.fixture(scope="module")
def gta(tmp_path_factory):
    """A 4-image GTA5 tree (16x8) whose image 00002 has a 8x4 label, and its index."""
    root = tmp_path_factory.mktemp("gta")
    write_gta5_tree(root, 4, size=(16, 8), label_sizes={"00002": (8, 4)})
    table = build_index("gta5", root, "all", workers=1, progress=False)
    return root, table


def test_item_is_the_image_and_its_train_ids(gta):
    root, table = gta
    ds = SegmentationDataset("gta5", table, ImageSettings())
    assert len(ds) == 4 and ds.names == ["00001", "00002", "00003", "00004"]
    item = ds[0]
    assert item["index"] == 0
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 8, 16)
    assert torch.equal(item["image"], torch.from_numpy(read_image(root / "images" / "00001.png").copy()).permute(2, 0, 1).float())
    assert item["label"].dtype == torch.int64
    assert np.array_equal(item["label"].numpy(), read_label("gta5", root / "labels" / "00001.png"))
    # (index, item_seed, focus) addressing gives the same image without augmentation.
    assert torch.equal(ds[(0, 123, -1)]["image"], item["image"])


def test_gta5_label_of_another_size_is_resized_to_its_image(gta):
    root, table = gta
    ds = SegmentationDataset("gta5", table, ImageSettings())
    label = ds[1]["label"].numpy()
    assert label.shape == (8, 16)
    small = read_label("gta5", root / "labels" / "00002.png")
    assert small.shape == (4, 8)
    np.testing.assert_array_equal(label, np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))


def test_resize_and_native_label_size(gta):
    root, table = gta
    settings = ImageSettings(resize=(8, 4))
    item = SegmentationDataset("gta5", table, settings)[0]
    assert item["image"].shape == (3, 4, 8) and item["label"].shape == (4, 8)
    full = read_label("gta5", root / "labels" / "00001.png")
    np.testing.assert_array_equal(item["label"].numpy(), np.asarray(Image.fromarray(full).resize((8, 4), Image.NEAREST)))
    # Evaluation keeps the labels at full resolution.
    native = SegmentationDataset("gta5", table, settings, native_label_size=True)[0]
    assert native["image"].shape == (3, 4, 8) and native["label"].shape == (8, 16)


def test_crop_and_flip_are_deterministic_slices(gta):
    _, table = gta
    plain = SegmentationDataset("gta5", table, ImageSettings())[2]
    ds = SegmentationDataset("gta5", table, ImageSettings(crop=(6, 4), flip=True))
    flips = 0
    for seed in range(12):
        a, b = ds[(2, seed, -1)], ds[(2, seed, -1)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["image"].shape == (3, 4, 6) and a["label"].shape == (4, 6)
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(0, 8 - 4 + 1)), int(rng.integers(0, 16 - 6 + 1))
        flipped = rng.random() < 0.5
        window_img = plain["image"][:, top:top + 4, left:left + 6]
        window_lab = plain["label"][top:top + 4, left:left + 6]
        if flipped:
            window_img, window_lab = window_img.flip(-1), window_lab.flip(-1)
            flips += 1
        assert torch.equal(a["image"], window_img) and torch.equal(a["label"], window_lab)
    assert 0 < flips < 12


def test_focus_crop_contains_the_focus_class(tmp_path):
    write_gta5_tree(tmp_path, 1, size=(32, 16))
    ids = np.full((16, 32), 7, np.uint8)       # road everywhere...
    ids[12, 30] = 26                           # ...and one car pixel in a corner
    write_palette_label(tmp_path / "labels" / "00001.png", ids)
    table = build_index("gta5", tmp_path, "all", workers=1, progress=False)
    ds = SegmentationDataset("gta5", table, ImageSettings(crop=(8, 4)))
    for seed in range(5):
        assert (ds[(0, seed, 13)]["label"] == 13).any()       # centred on the car (train id 13)
    # Without a focus most crops miss the single pixel.
    assert sum(bool((ds[(0, s, -1)]["label"] == 13).any()) for s in range(20)) < 20


def test_crop_larger_than_the_image(gta):
    _, table = gta
    ds = SegmentationDataset("gta5", table, ImageSettings(crop=(32, 8)))
    with pytest.raises(UncerdaError, match="crop 32x8 is larger than the image 16x8"):
        ds[0]


def test_labels_from_a_pseudo_label_folder(gta, tmp_path):
    _, table = gta
    folder = tmp_path / "pseudo"
    folder.mkdir()
    for k, name in enumerate(table["name"]):
        Image.fromarray(np.full((8, 16), k, np.uint8)).save(folder / f"{name}.png")
    ds = SegmentationDataset("gta5", table, ImageSettings(), label_source=folder)
    assert int(ds[3]["label"].unique().item()) == 3
    (folder / "00003.png").unlink()
    with pytest.raises(UncerdaError, match=r"no label PNG for 1 images, e.g. 00003.png"):
        SegmentationDataset("gta5", table, ImageSettings(), label_source=folder)
    unlabelled = SegmentationDataset("gta5", table, ImageSettings(), label_source=None)[0]
    assert "label" not in unlabelled


def test_index_row_without_a_label(gta):
    _, table = gta
    t = table.copy()
    t["label"] = ""
    with pytest.raises(UncerdaError, match="no label listed in the index"):
        SegmentationDataset("gta5", t, ImageSettings())[0]


def test_cache_returns_the_same_arrays(gta):
    _, table = gta
    ds = SegmentationDataset("gta5", table, ImageSettings(), cache=True)
    first = ds[1]
    assert 1 in ds.cache
    assert torch.equal(ds[1]["image"], first["image"])


def test_iteration_batches_are_the_stream_from_start(gta):
    _, table = gta
    ds = SegmentationDataset("gta5", table, ImageSettings(crop=(8, 4), flip=True))
    stream = BatchStream(len(ds), 2, seed=5, stream=1)
    batches = IterationBatches(ds, stream, start=3, stop=6)
    assert len(batches) == 3 and len(IterationBatches(ds, stream, 6, 3)) == 0
    for k in range(3):
        got, want = batches[k], collate(ds, stream.items(3 + k))
        assert got["image"].shape == (2, 3, 4, 8) and got["label"].shape == (2, 4, 8)
        assert all(torch.equal(got[key], want[key]) for key in ("image", "label", "index"))


def test_normalize_by_hand():
    images = torch.tensor([255.0, 0.0, 127.5]).view(1, 3, 1, 1)
    imagenet = normalize(images, "imagenet").flatten().tolist()
    assert imagenet == pytest.approx([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.5 - 0.406) / 0.225])
    caffe = normalize(images, "caffe_bgr").flatten().tolist()
    # Channels reversed to BGR, then the Caffe means subtracted.
    assert caffe == pytest.approx([127.5 - 104.00698793, 0 - 116.66876762, 255 - 122.67891434])
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(images, "none")


def test_image_settings_from_config():
    section = {"resize": [64, 32], "crop": [32, 16]}
    assert ImageSettings.from_config(section, train=True, flip=True) == ImageSettings((64, 32), (32, 16), True)
    # Evaluation: no crop, no flip.
    assert ImageSettings.from_config(section, train=False, flip=True) == ImageSettings((64, 32), None, False)
    assert ImageSettings.from_config({"resize": None, "crop": None}, train=True, flip=False) == ImageSettings()


def test_table_columns_are_read_by_name():
    # A table from another source: only name, image and label are used.
    table = pd.DataFrame({"label": ["b.png"], "image": ["a.png"], "name": ["x"]})
    ds = SegmentationDataset("gta5", table, ImageSettings(), label_source=None)
    assert ds.names == ["x"] and ds.images == ["a.png"] and ds.labels == ["b.png"]


@pytest.mark.parametrize("problem, expected", [
    ("value", "found 20"), ("rgb", "mode RGB"), ("truncated", "cannot decode"), ("size", "label is 8x4"),
])
def test_bad_pseudo_label_png_names_the_file(gta, tmp_path, problem, expected):
    _, table = gta
    folder = tmp_path / "pseudo"
    folder.mkdir()
    for name in table["name"]:
        Image.fromarray(np.zeros((8, 16), np.uint8)).save(folder / f"{name}.png")
    bad = folder / "00002.png"
    if problem == "value":
        Image.fromarray(np.full((8, 16), 20, np.uint8)).save(bad)     # not a train id, not 255
    elif problem == "rgb":
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(bad)
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:40])
    else:
        Image.fromarray(np.zeros((4, 8), np.uint8)).save(bad)
    ds = SegmentationDataset("gta5", table, ImageSettings(crop=(8, 4)), label_source=folder)
    assert ds[0]["label"].shape == (4, 8)
    with pytest.raises(UncerdaError, match=expected) as info:
        ds[1]
    assert str(bad) in str(info.value)
    # 255 (no pseudo label) is a valid value.
    Image.fromarray(np.full((8, 16), 255, np.uint8)).save(bad)
    assert set(ds[1]["label"].unique().tolist()) == {255}
