"""Using the adapted model: ``uncerda predict`` in the benchmark's formats, scoring what others write,
the evaluation protocols, and ``uncerda export``.

The round trip trains a tiny checkpoint (a width-8 DeepLab, a few iterations) on generated demo data:
its label-id predictions of the target val images, scored, give exactly the mIoU the evaluation
stage computes on the same images.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import demo_setup, write_rgb
from test_score import GT, PRED, _check_hand_count, _write_tree
from uncerda_core.artifacts import UncerdaError
from uncerda_core.cli import main
from uncerda_core.data.index import build_index, write_index
from uncerda_core.data.labels import CITYSCAPES_LUT, TRAIN_ID_COLORS, TRAIN_TO_CITYSCAPES_ID
from uncerda_core.evaluate.evaluate import evaluate_checkpoint, score_predictions
from uncerda_core.evaluate.predictions import find_predictions, split_name
from uncerda_core.inference import EvalProtocol, check_protocol, load_model, protocol_logits
from uncerda_core.predict import TRAIN_TO_LABEL_LUT, output_path, prediction_stem
from uncerda_core.train.loop import run_training, stage_settings
from uncerda_core.uncertainty.equations import normalized_entropy

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Demo data (8 source, 5 target val images of 64x32) and a source-only checkpoint of 6 iterations."""
    root = tmp_path_factory.mktemp("predict")
    config, source, val = demo_setup(root, 8, 1, 5, "val", {
        "source_only": {"iterations": 6}, "predict": {"batch_size": 2}})
    ckpt = root / "models" / "source_only" / "checkpoint.pt"
    run_training(config, stage_settings(config, "source_only"), ckpt, seed=0, source_dataset="gta5",
                 source_index=source, losses_csv=ckpt.with_name("losses.csv"), progress=False)
    return {"root": root, "config": config, "ckpt": ckpt, "val": val,
            "images": root / "target" / "leftImg8bit" / "val"}


# --- names and helpers ----------------------------------------------------------------------------------

def test_names():
    assert prediction_stem("aachen/aachen_000000_000019_leftImg8bit.png") == "aachen_000000_000019"
    assert prediction_stem("photo.JPG") == "photo"
    assert output_path(Path("a/b/x_leftImg8bit.png"), "labelIds") == Path("a/b/x_labelIds.png")
    assert split_name("x_000001_000002_labelIds.png") == ("x_000001_000002", "_labelIds")
    assert split_name("x_000001_000002_trainIds.png") == ("x_000001_000002", "_trainIds")
    assert split_name("x_000001_000002_leftImg8bit.png") == ("x_000001_000002", "_leftImg8bit")
    assert split_name("x_000001_000002.png") == ("x_000001_000002", None)
    assert split_name("x_color.png") is None and split_name("x_entropy.png") is None
    assert split_name("x.jpg") is None
    # The label-id table is the inverse of the reader's label id -> train id table.
    assert all(CITYSCAPES_LUT[TRAIN_TO_LABEL_LUT[t]] == t for t in range(19))
    assert TRAIN_TO_LABEL_LUT[0] == 7 and TRAIN_TO_LABEL_LUT[18] == 33 and TRAIN_TO_LABEL_LUT[255] == 255


# --- scoring what others write ----------------------------------------------------------------------------

CITY_OF = {"aachen_000000_000019": "aachen", "bremen_000001_000020": "bremen"}


def _rewrite(preds: Path, tag: str, ids: str, cities: bool) -> Path:
    """The hand-counted predictions of test_score again, named ``<stem><tag>.png`` in train or label ids."""
    out = preds.parent / f"preds{tag}_{ids}_{cities}"
    for stem, values in PRED.items():
        array = np.array(values, dtype=np.uint8)
        if ids == "label":
            array = TRAIN_TO_LABEL_LUT[array]
        folder = out / CITY_OF[stem] if cities else out
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, mode="L").save(folder / f"{stem}{tag}.png")
    return out


@pytest.mark.parametrize("tag,ids,id_type", [
    ("", "train", "auto"), ("_leftImg8bit", "train", "auto"), ("_trainIds", "train", "auto"),
    ("_labelIds", "label", "auto"), ("_labelIds", "label", "label"), ("_leftImg8bit", "label", "label"),
    ("", "label", "label"), ("_trainIds", "train", "train"), ("", "train", "train")])
@pytest.mark.parametrize("cities", [False, True])
def test_score_accepts_names_id_types_and_city_folders(tmp_path, tag, ids, id_type, cities):
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    _write_tree(root, preds)
    folder = _rewrite(preds, tag, ids, cities)
    out = tmp_path / f"s_{tag}_{ids}.json"
    assert main(["score", "--pred-dir", str(folder), "--dataset", "cityscapes", "--root", str(root),
                 "--split", "val", "--out", str(out), "--id-type", id_type]) == 0
    result = json.loads(out.read_text())
    _check_hand_count(result)
    assert result["provenance"]["id_type"] == id_type


def test_label_ids_of_classes_not_evaluated_count_as_misses(tmp_path):
    """A label id outside the 19 evaluated classes (here 4, 'static') is a miss for its ground truth."""
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    _write_tree(root, preds)
    folder = _rewrite(preds, "_labelIds", "label", False)
    stem = "aachen_000000_000019"
    array = TRAIN_TO_LABEL_LUT[np.array(PRED[stem], np.uint8)]
    array[1, 0] = 4                      # was car (26) on a car pixel: one car true positive fewer
    Image.fromarray(array, mode="L").save(folder / f"{stem}_labelIds.png")
    res = score_predictions(folder, "cityscapes", root, "val", tmp_path / "s.json", progress=False)
    # car: GT 5, predicted 3, TP 2 -> 2 / (5 + 3 - 2) = 1/3 (was 1/2)
    assert res["per_class_iou"]["car"] == pytest.approx(1 / 3)
    assert res["per_class_iou"]["road"] == pytest.approx(1 / 2)


def test_auto_prefers_train_ids_when_both_kinds_exist(tmp_path):
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    _write_tree(root, preds)
    folder = _rewrite(preds, "_trainIds", "train", True)
    # Label ids of all-road beside them: read only with --id-type label.
    for stem, city in CITY_OF.items():
        Image.fromarray(np.full((2, 4), 7, np.uint8), mode="L").save(folder / city / f"{stem}_labelIds.png")
        write_rgb(folder / city / f"{stem}_color.png", np.zeros((2, 4, 3), np.uint8))
    found = find_predictions(folder, list(PRED))
    assert {f.id_type for f in found.values()} == {"train"}
    _check_hand_count(score_predictions(folder, "cityscapes", root, "val", tmp_path / "a.json", progress=False))
    res = score_predictions(folder, "cityscapes", root, "val", tmp_path / "l.json", progress=False, id_type="label")
    # Every pixel predicted road: of the 14 labelled ones 3 are road -> 3 / (3 + 14 - 3).
    assert res["per_class_iou"]["road"] == pytest.approx(3 / 14)


@pytest.mark.parametrize("problem", ["duplicate", "label_ids_as_train", "bad_label_id", "only_train_for_label",
                                     "foreign_names"])
def test_score_naming_errors(tmp_path, capsys, problem):
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    _write_tree(root, preds)
    stem = "bremen_000001_000020"
    argv_extra = []
    folder = preds
    if problem == "duplicate":           # the same image twice, in two city folders
        folder = _rewrite(preds, "_trainIds", "train", True)
        (folder / "other").mkdir()
        shutil.copy(folder / "bremen" / f"{stem}_trainIds.png", folder / "other" / f"{stem}_trainIds.png")
        expect = "more than one prediction file"
    elif problem == "label_ids_as_train":
        folder = _rewrite(preds, "_leftImg8bit", "label", False)
        expect = "--id-type label"
    elif problem == "bad_label_id":
        folder = _rewrite(preds, "_labelIds", "label", False)
        Image.fromarray(np.full((2, 4), 40, np.uint8), mode="L").save(folder / f"{stem}_labelIds.png")
        expect = "found 40"
    elif problem == "only_train_for_label":
        folder = _rewrite(preds, "_trainIds", "train", False)
        argv_extra = ["--id-type", "label"]
        expect = "no prediction of label ids for 2 of 2"
    else:
        folder = tmp_path / "foreign"
        folder.mkdir()
        Image.fromarray(np.zeros((2, 4), np.uint8), mode="L").save(folder / "frankfurt_000000_000001.png")
        expect = "1 PNG(s) there carry no image key"
    out = tmp_path / "s.json"
    code = main(["score", "--pred-dir", str(folder), "--dataset", "cityscapes", "--root", str(root),
                 "--split", "val", "--out", str(out), *argv_extra])
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
    assert not out.exists()


# --- predict and the round trip ---------------------------------------------------------------------------

def test_predict_score_round_trip_matches_evaluation(trained, tmp_path, capsys):
    config, ckpt = trained["config"], trained["ckpt"]
    metrics = evaluate_checkpoint(config, ckpt, trained["val"], tmp_path / "eval.json", progress=False)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(trained["images"]), "--out-dir", str(out),
                 "--zip", str(tmp_path / "submission.zip")]) == 0
    assert "5 images" in capsys.readouterr().out
    images = sorted(trained["images"].rglob("*_leftImg8bit.png"))
    assert len(images) == 5
    for image in images:
        rel = image.relative_to(trained["images"])
        stem = prediction_stem(image)
        folder = out / rel.parent                                       # the city sub-folder, mirrored
        with Image.open(folder / f"{stem}_trainIds.png") as im:
            train = np.asarray(im)
        with Image.open(folder / f"{stem}_labelIds.png") as im:
            label = np.asarray(im)
        with Image.open(folder / f"{stem}_color.png") as im:
            color = np.asarray(im.convert("RGB"))
        with Image.open(image) as im:
            assert train.shape == (im.size[1], im.size[0])               # the image's own size
        assert train.max() < 19                                          # 255 nowhere
        np.testing.assert_array_equal(CITYSCAPES_LUT[label], train)
        assert set(np.unique(label)) <= set(TRAIN_TO_CITYSCAPES_ID.values())
        np.testing.assert_array_equal(color, TRAIN_ID_COLORS[train])
        assert not (folder / f"{stem}_entropy.png").exists()
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        names = sorted(archive.namelist())
    assert len(names) == 5 and all(n.endswith("_labelIds.png") and "/" in n for n in names)
    # Score the label ids only (auto: by name), and with the train ids beside them (--id-type label).
    only_label = tmp_path / "only_label"
    for path in out.rglob("*_labelIds.png"):
        target = only_label / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    root = trained["root"] / "target"
    for folder, id_type in ((only_label, "auto"), (out, "label"), (out, "auto")):
        scored = score_predictions(folder, "cityscapes", root, "val", tmp_path / "score.json", progress=False,
                                   id_type=id_type)
        assert scored["miou"] == metrics["miou"], (folder, id_type)
        assert scored["per_class_iou"] == metrics["per_class_iou"]
        assert scored["confusion_matrix"] == metrics["confusion_matrix"]
    assert 0 < metrics["miou"] < 1


def test_predict_formats_entropy_jpeg_and_own_sizes(trained, tmp_path):
    """Nested folders, a JPEG and images of other sizes; a subset of formats; the 16-bit entropy."""
    inp = tmp_path / "photos"
    rng = np.random.default_rng(0)
    sizes = {"a/one.png": (40, 24), "a/b/two.jpg": (64, 32), "three_leftImg8bit.png": (64, 32)}
    for rel, (w, h) in sizes.items():
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(inp / rel)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(trained["ckpt"]), "--input", str(inp), "--out-dir", str(out),
                 "--formats", "trainIds", "--entropy"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a/b/two_entropy.png", "a/b/two_trainIds.png", "a/one_entropy.png", "a/one_trainIds.png",
                       "three_entropy.png", "three_trainIds.png"]
    config = trained["config"]
    model = load_model(trained["ckpt"], torch.device("cpu"), config["model"])
    for rel, (w, h) in sizes.items():
        stem = prediction_stem(rel)
        parent = Path(rel).parent
        with Image.open(out / parent / f"{stem}_entropy.png") as im:
            assert im.mode.startswith("I") and im.size == (w, h)
            ent = np.asarray(im).astype(np.float64) / 65535.0
        with Image.open(out / parent / f"{stem}_trainIds.png") as im:
            train = np.asarray(im)
        # The same image through the model by hand (no target.resize in this config).
        with Image.open(inp / rel) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()).float()[None]
        logits = protocol_logits(model, image, config["train"]["normalize"], SINGLE)
        prob = torch.softmax(logits, dim=1)
        np.testing.assert_array_equal(train, logits.argmax(1)[0].numpy())
        np.testing.assert_allclose(ent, normalized_entropy(prob[0].numpy(), axis=0), atol=1 / 65535)
    record = json.loads((out / "provenance.json").read_text())
    assert record["stage"] == "predict" and record["images"] == 3 and record["protocol"] == "single"
    # Predicting again into a folder this command wrote replaces it.
    assert main(["predict", "--checkpoint", str(trained["ckpt"]), "--input", str(inp), "--out-dir", str(out),
                 "--formats", "color"]) == 0
    assert sorted(p.name for p in out.rglob("*.png")) == ["one_color.png", "three_color.png", "two_color.png"]


def test_predict_with_a_config_whose_data_roots_are_elsewhere(trained, tmp_path, capsys):
    """--config replaces the checkpoint's config; its data roots need not exist (inference reads none)."""
    import yaml
    config = {k: v for k, v in trained["config"].items()}
    config = {**config, "demo": {**config["demo"], "enabled": False},
              "source": {**config["source"], "root": str(tmp_path / "nowhere")},
              "target": {**config["target"], "root": str(tmp_path / "nowhere"), "resize": [32, 16]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(trained["ckpt"]), "--input", str(trained["images"]),
                 "--out-dir", str(out), "--formats", "trainIds", "--config", str(path)]) == 0, capsys.readouterr().err
    pngs = sorted(out.rglob("*_trainIds.png"))
    assert len(pngs) == 5
    with Image.open(pngs[0]) as im:
        assert im.size == (64, 32)        # inferred at 32x16, written at the image's own size


def test_real_cityscapes_frames_round_trip(real_samples, trained, tmp_path):
    """Real 2048x1024 frames in their city folder: label ids predicted at full size score exactly
    as the evaluation of the same checkpoint on the same frames (network input 256x128)."""
    root = real_samples / "cityscapes"
    if not (root / "leftImg8bit" / "train").is_dir():
        pytest.skip("no real Cityscapes frames with labels")
    index = tmp_path / "real_index.csv"
    write_index(build_index("cityscapes", root, "train", workers=1, progress=False), index, {})
    # One image per forward pass as evaluation does: a batch of two may round a near-tie of two
    # classes the other way (one pixel in these 16.8 million did).
    config = {**trained["config"], "target": {**trained["config"]["target"], "root": str(root),
                                              "resize": [256, 128]}, "predict": {"batch_size": 1}}
    metrics = evaluate_checkpoint(config, trained["ckpt"], index, tmp_path / "eval.json", progress=False)
    from uncerda_core.predict import predict_folder
    out = tmp_path / "pred"
    summary = predict_folder(trained["ckpt"], root / "leftImg8bit" / "train", out, formats=("labelIds",),
                             config=config, progress=False)
    assert summary["images"] == metrics["images"] >= 1
    labels = sorted(out.rglob("*_labelIds.png"))
    assert all(p.parent.name == "aachen" and "_leftImg8bit" not in p.name for p in labels)
    with Image.open(labels[0]) as im:
        assert im.size == (2048, 1024)
    scored = score_predictions(out, "cityscapes", root, "train", tmp_path / "score.json", progress=False)
    assert scored["confusion_matrix"] == metrics["confusion_matrix"] and scored["miou"] == metrics["miou"]


@pytest.mark.parametrize("problem", ["overlap", "foreign_out", "no_images", "clash", "zip_without_label_ids",
                                     "not_an_image", "truncated"])
def test_predict_refuses_bad_input_and_leaves_nothing(trained, tmp_path, capsys, problem):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(inp / "x.png")
    out = tmp_path / "out"
    extra = []
    if problem == "overlap":
        out, expect = inp / "preds", "overlap"
    elif problem == "foreign_out":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        expect = "not written by uncerda predict"
    elif problem == "no_images":
        (inp / "x.png").unlink()
        expect = "no .png, .jpg or .jpeg images"
    elif problem == "clash":
        Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(inp / "x_leftImg8bit.jpg")
        expect = "would write the same predictions"
    elif problem == "not_an_image":
        (inp / "sub").mkdir()
        (inp / "sub" / "notes.png").write_text("not a PNG")
        expect = "notes.png: cannot read the image"
    elif problem == "truncated":          # the header reads, the pixels do not: fails during the run
        data = (inp / "x.png").read_bytes()
        (inp / "y.png").write_bytes(data[: len(data) // 2])
        expect = "y.png: cannot decode"
    else:
        extra = ["--formats", "trainIds", "--zip", str(tmp_path / "s.zip")]
        expect = "add labelIds to --formats"
    code = main(["predict", "--checkpoint", str(trained["ckpt"]), "--input", str(inp), "--out-dir", str(out),
                 *extra])
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
    if problem == "foreign_out":
        assert (out / "notes.txt").read_text() == "mine"
    else:
        assert not out.exists()
    assert not (tmp_path / "s.zip").exists() and not list(tmp_path.glob(".*tmp*"))


# --- evaluation protocols ---------------------------------------------------------------------------------

SINGLE = EvalProtocol("single", (1.0,), 0.0)
MULTISCALE = EvalProtocol("multiscale_flip", (1.0, 1.25), 0.5)

class _PixelModel(torch.nn.Module):
    """Logits that are a fixed 1x1 map of the input pixels (aux: another one), no downsampling."""

    output_stride = 1

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.main = torch.randn(3, 3, generator=gen)
        self.aux = torch.randn(3, 3, generator=gen)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.einsum("cd,bdhw->bchw", self.aux, x), torch.einsum("cd,bdhw->bchw", self.main, x)


def test_multiscale_flip_protocol_by_hand():
    """Scales 1.0 and 1.25, each mirrored; softmax of main + 0.5 aux per pass at the network's
    resolution, mirrored back, upsampled to the output size; the four probability maps averaged."""
    import torch.nn.functional as F

    from uncerda_core.data.datasets import normalize
    model = _PixelModel()
    images = torch.rand(1, 3, 8, 12) * 255
    got = protocol_logits(model, images, "imagenet", MULTISCALE, size=(8, 12)).exp()
    expected = torch.zeros(1, 3, 8, 12)
    for size in ((8, 12), (10, 15)):
        x = images if size == (8, 12) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flip in (False, True):
            xin = normalize(x.flip(-1) if flip else x, "imagenet")
            prob = torch.softmax(torch.einsum("cd,bdhw->bchw", model.main + 0.5 * model.aux, xin), dim=1)
            prob = prob.flip(-1) if flip else prob
            expected += F.interpolate(prob, size=(8, 12), mode="bilinear", align_corners=False) / 4
    torch.testing.assert_close(got, expected)
    single = protocol_logits(model, images, "imagenet", SINGLE)
    torch.testing.assert_close(single, model(normalize(images, "imagenet"))[1])
    with pytest.raises(UncerdaError, match="unknown evaluation protocol"):
        check_protocol("ten_crop")


def test_predict_multiscale_flip(trained, tmp_path):
    out = tmp_path / "ms"
    assert main(["predict", "--checkpoint", str(trained["ckpt"]), "--input", str(trained["images"]),
                 "--out-dir", str(out), "--formats", "trainIds", "--evaluation-protocol", "multiscale_flip"]) == 0
    assert json.loads((out / "provenance.json").read_text())["protocol"] == "multiscale_flip"
    assert len(list(out.rglob("*_trainIds.png"))) == 5


def test_predict_takes_the_config_the_workflow_passes(trained, tmp_path):
    """--config-json (the workflow's route) is the config predict infers with: here its protocol."""
    from uncerda_core.config import deep_merge, dumps
    config = deep_merge(trained["config"], {"evaluate": {"protocol": "multiscale_flip"}})
    out = tmp_path / "from_json"
    assert main(["predict", "--checkpoint", str(trained["ckpt"]), "--input", str(trained["images"]),
                 "--out-dir", str(out), "--formats", "trainIds", "--config-json", dumps(config)]) == 0
    assert json.loads((out / "provenance.json").read_text())["protocol"] == "multiscale_flip"


# --- export -----------------------------------------------------------------------------------------------

def test_export_pt2_gives_the_checkpoints_logits(trained, tmp_path):
    from uncerda_core.export import load_exported
    out = tmp_path / "model.pt2"
    assert main(["export", "--checkpoint", str(trained["ckpt"]), "--out", str(out)]) == 0
    exported, meta = load_exported(out)
    assert meta["normalize"] == trained["config"]["train"]["normalize"] and len(meta["class_names"]) == 19
    model = load_model(trained["ckpt"], torch.device("cpu"), trained["config"]["model"])
    for shape in ((1, 3, 32, 64), (3, 3, 48, 80)):          # batch, height and width are free
        x = torch.randn(*shape)
        with torch.no_grad():
            for got, ref in zip(exported(x), model(x)):
                torch.testing.assert_close(got, ref)


def test_export_refusals(trained, tmp_path, capsys):
    import importlib.util
    out = tmp_path / "model.bin"
    assert main(["export", "--checkpoint", str(trained["ckpt"]), "--out", str(out)]) == 2
    assert "unknown format .bin" in capsys.readouterr().err
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        onnx = tmp_path / "model.onnx"
        assert main(["export", "--checkpoint", str(trained["ckpt"]), "--out", str(onnx)]) == 2
        err = capsys.readouterr().err
        assert "ONNX export needs" in err and ".pt2" in err
        assert not onnx.exists()
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
