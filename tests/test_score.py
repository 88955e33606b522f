"""``uncerda score``: a folder of prediction PNGs against a Cityscapes-layout ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fixtures_data import cityscapes_paths, write_gray_label, write_rgb
from uncerda_core.cli import main
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.data.readers import list_label_samples, read_label
from uncerda_core.evaluate.evaluate import protocol_of

# Two 4x2 val images. Ground truth in Cityscapes label ids, predictions in train ids.
# 7 road (0), 8 sidewalk (1), 21 vegetation (8), 24 person (11), 26 car (13), 0/1 void (255).
GT = {
    "aachen_000000_000019": [[7, 7, 8, 8], [26, 26, 0, 24]],
    "bremen_000001_000020": [[7, 26, 26, 26], [21, 21, 21, 1]],
}
PRED = {
    "aachen_000000_000019": [[0, 1, 1, 1], [13, 255, 5, 11]],
    "bremen_000001_000020": [[0, 13, 13, 0], [8, 8, 13, 8]],
}
# Counted by hand over the 14 labelled pixels (the 2 void ones are not counted, so the
# pole predicted on a void pixel and the vegetation predicted on another count nowhere):
#   road:       GT 3, predicted 3, TP 2 -> 2 / (3 + 3 - 2) = 1/2
#   sidewalk:   GT 2, predicted 3, TP 2 -> 2 / 3
#   vegetation: GT 3, predicted 2, TP 2 -> 2 / 3
#   person:     GT 1, predicted 1, TP 1 -> 1
#   car:        GT 5 (one predicted 255: a miss), predicted 4, TP 3 -> 3 / 6
#   pole and every other class: absent everywhere -> null
EXPECTED = {"road": 1 / 2, "sidewalk": 2 / 3, "vegetation": 2 / 3, "person": 1.0, "car": 1 / 2}


def _write_tree(root: Path, pred_dir: Path) -> None:
    for stem, ids in GT.items():
        image, label = cityscapes_paths(root, "val", stem)
        write_gray_label(label, np.array(ids))
        write_rgb(image, np.zeros((2, 4, 3), np.uint8))
    pred_dir.mkdir(parents=True, exist_ok=True)
    for stem, ids in PRED.items():
        Image.fromarray(np.array(ids, dtype=np.uint8), mode="L").save(pred_dir / f"{stem}.png")


def _check_hand_count(result: dict) -> None:
    assert 0.0 <= result["miou"] <= 1.0
    assert result["miou"] == pytest.approx(sum(EXPECTED.values()) / 5)    # = 2/3
    iou = result["per_class_iou"]
    assert list(iou) == list(CLASS_NAMES)
    for name in CLASS_NAMES:
        if name in EXPECTED:
            assert isinstance(iou[name], float) and iou[name] == pytest.approx(EXPECTED[name])
        else:
            assert iou[name] is None, name
    assert result["labelled_pixels"] == 14
    assert result["pixel_accuracy"] == pytest.approx(10 / 14)
    assert result["images"] == 2 and result["resized_predictions"] == 0


def test_score_command_against_a_hand_count(tmp_path):
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    _write_tree(root, preds)
    out, csv = tmp_path / "m" / "score.json", tmp_path / "m" / "score.csv"
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "score", "--pred-dir", str(preds),
                           "--dataset", "cityscapes", "--root", str(root), "--split", "val",
                           "--out", str(out), "--csv", str(csv)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_hand_count(json.loads(out.read_text()))
    # the tables must not credit these numbers to an evaluation protocol of ours
    assert protocol_of(json.loads(out.read_text())) == "PNG predictions, scored as given"
    table = pd.read_csv(csv)
    assert list(table.columns) == ["class_id", "class", "iou"]
    assert table.loc[table["class"] == "sidewalk", "iou"].item() == pytest.approx(2 / 3)
    assert table.loc[table["class"] == "pole", "iou"].isna().item()
    assert "| preds |" in proc.stdout and "66.7" in proc.stdout            # mIoU in the printed table
    assert not list(out.parent.glob(".*tmp*"))


def test_score_synthia_subsets_and_resized_predictions(tmp_path, capsys):
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    _write_tree(root, preds)
    # Upscale one prediction 2x (nearest): resized back to its label and counted.
    stem = "bremen_000001_000020"
    big = np.repeat(np.repeat(np.array(PRED[stem], np.uint8), 2, axis=0), 2, axis=1)
    Image.fromarray(big, mode="L").save(preds / f"{stem}.png")
    out = tmp_path / "s.json"
    assert main(["score", "--pred-dir", str(preds), "--dataset", "cityscapes", "--root", str(root),
                 "--split", "val", "--out", str(out), "--classes", "synthia"]) == 0
    res = json.loads(out.read_text())
    assert res["resized_predictions"] == 1
    captured = capsys.readouterr()
    assert f"score: 1 of 2 predictions resized (nearest) to their label's size, e.g. {stem}.png 8x4 -> 4x2" \
        in captured.err
    assert res["per_class_iou"]["car"] == pytest.approx(1 / 2)         # same counts after the resize
    # All five present classes are among SYNTHIA's 16 and 13: both means are the same 2/3.
    assert res["miou"] == pytest.approx(2 / 3) and res["miou13"] == pytest.approx(2 / 3)
    assert "mIoU*" in captured.out


@pytest.mark.parametrize("problem", ["missing", "value", "rgb", "truncated", "no_folder", "aspect"])
def test_score_bad_predictions_fail_naming_the_file(tmp_path, capsys, problem):
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    _write_tree(root, preds)
    stem = "bremen_000001_000020"
    target = preds / f"{stem}.png"
    expect = target.name
    if problem == "missing":
        target.unlink()
    elif problem == "value":
        Image.fromarray(np.full((2, 4), 19, np.uint8), mode="L").save(target)
        expect = "found 19"
    elif problem == "rgb":
        Image.fromarray(np.zeros((2, 4, 3), np.uint8), mode="RGB").save(target)
        expect = "mode RGB"
    elif problem == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif problem == "aspect":             # 4x4 for a 4x2 label: silently stretched before
        Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(target)
        expect = f"{target}: the prediction is 4x4, its label 4x2: another aspect ratio"
    else:
        preds = tmp_path / "nowhere"
        expect = "nowhere"
    out = tmp_path / "s.json"
    code = main(["score", "--pred-dir", str(preds), "--dataset", "cityscapes", "--root", str(root),
                 "--split", "val", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "uncerda score: error:" in err and expect in err.split("uncerda score: error:")[1]
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_real_cityscapes_val_ground_truth_scores_one(real_samples, tmp_path):
    root = real_samples / "cityscapes"
    if not (root / "gtFine" / "val").is_dir():
        pytest.skip("no real Cityscapes val labels")
    preds = tmp_path / "preds"
    preds.mkdir()
    samples = list_label_samples("cityscapes", root, "val")
    assert len(samples) >= 1
    for s in samples:
        Image.fromarray(read_label("cityscapes", s.label)).save(preds / f"{s.name}.png", compress_level=1)
    out = tmp_path / "real.json"
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "score", "--pred-dir", str(preds),
                           "--dataset", "cityscapes", "--root", str(root), "--split", "val", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["images"] == len(samples)
    assert res["miou"] == 1.0 and res["pixel_accuracy"] == 1.0
    present = [n for n, v in res["per_class_iou"].items() if v is not None]
    assert all(res["per_class_iou"][n] == 1.0 for n in present)
    # The README of the samples: all 19 evaluated classes occur across the val labels.
    assert len(present) == 19
    assert sum(res["unpredicted_pixels"]) == 0
