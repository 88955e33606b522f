"""Confusion matrix, IoU, mIoU and the results table against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uncerda_core.data.labels import CLASS_NAMES, SYNTHIA13_TRAIN_IDS, SYNTHIA16_TRAIN_IDS, eval_class_ids
from uncerda_core.evaluate.evaluate import format_table
from uncerda_core.evaluate.metrics import confusion_matrix, iou_per_class, mean_iou, summarize


def test_confusion_matrix_by_hand():
    gt = np.array([[0, 0, 1], [2, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [255, 2, 0]], dtype=np.uint8)
    cm, misses = confusion_matrix(pred, gt, 3)
    # (0,0)->cm[0,0]; (0,1)->cm[0,1]; (1,1)->cm[1,1]; (1,0)->cm[1,0];
    # gt 2 predicted 255 -> a miss of class 2; gt 255 -> not counted at all.
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert misses.tolist() == [0, 0, 1]
    iou = iou_per_class(cm, misses)
    # class 0: TP 1, GT 2, pred 2 -> 1/3; class 1 the same; class 2: TP 0, GT 1 (the miss) -> 0.
    assert iou.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])


def test_gt_outside_the_classes_is_not_counted_and_prediction_outside_is_a_miss():
    gt = np.array([0, 1, 7, 255, 1])
    pred = np.array([0, 9, 0, 0, 1])
    cm, misses = confusion_matrix(pred, gt, 2)
    # gt 7 and 255 are not labelled pixels; pred 9 on gt 1 counts as a miss of class 1.
    assert cm.tolist() == [[1, 0], [0, 1]]
    assert misses.tolist() == [0, 1]
    assert iou_per_class(cm, misses).tolist() == pytest.approx([1.0, 0.5])


def test_absent_classes():
    # Class 2 is predicted but absent from the GT: IoU 0. Class 3 is absent everywhere: NaN.
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    cm, misses = confusion_matrix(pred, gt, 4)
    iou = iou_per_class(cm, misses)
    assert iou[:3].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert math.isnan(iou[3])
    # mIoU over present classes: (0.5 + 1 + 0) / 3.
    assert mean_iou(iou) == pytest.approx(0.5)
    assert mean_iou(iou, (0, 1)) == pytest.approx(0.75)
    assert math.isnan(mean_iou(iou, (3,)))
    assert iou_per_class(cm).tolist()[:3] == pytest.approx([0.5, 1.0, 0.0])   # misses optional


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_accumulating_images_equals_one_big_image():
    rng = np.random.default_rng(0)
    gts = [rng.choice([0, 1, 2, 255], size=(3, 5)) for _ in range(3)]
    preds = [rng.choice([0, 1, 2, 255], size=(3, 5)) for _ in range(3)]
    cm = np.zeros((3, 3), np.int64)
    misses = np.zeros(3, np.int64)
    for p, g in zip(preds, gts):
        c, m = confusion_matrix(p, g, 3)
        cm += c
        misses += m
    big_cm, big_m = confusion_matrix(np.concatenate(preds), np.concatenate(gts), 3)
    assert np.array_equal(cm, big_cm) and np.array_equal(misses, big_m)
    # Every labelled pixel lands in exactly one cell or one miss.
    assert cm.sum() + misses.sum() == sum(int((g != 255).sum()) for g in gts)


def test_summarize_19_classes():
    cm = np.zeros((19, 19), np.int64)
    cm[0, 0], cm[0, 1] = 6, 2        # road: TP 6, 2 pixels predicted sidewalk
    cm[1, 1] = 2                     # sidewalk: TP 2, FP 2 -> 2 / 4
    cm[13, 13] = 3                   # car: TP 3, 1 miss -> 3 / 4
    misses = np.zeros(19, np.int64)
    misses[13] = 1
    res = summarize(cm, misses, eval_class_ids("gta5"))
    assert set(res) >= {"miou", "per_class_iou", "pixel_accuracy", "labelled_pixels", "confusion_matrix",
                        "unpredicted_pixels", "ignore_label"}
    assert list(res["per_class_iou"]) == list(CLASS_NAMES)
    assert res["per_class_iou"]["road"] == pytest.approx(6 / 8)
    assert res["per_class_iou"]["sidewalk"] == pytest.approx(2 / 4)
    assert res["per_class_iou"]["car"] == pytest.approx(3 / 4)
    assert res["per_class_iou"]["bus"] is None
    assert res["miou"] == pytest.approx((6 / 8 + 2 / 4 + 3 / 4) / 3)
    assert res["labelled_pixels"] == 14
    assert res["pixel_accuracy"] == pytest.approx(11 / 14)
    assert res["unpredicted_pixels"][13] == 1 and res["ignore_label"] == 255
    assert res["confusion_matrix"][0][1] == 2


def test_synthia_16_and_13_class_subsets():
    assert len(SYNTHIA16_TRAIN_IDS) == 16 and len(SYNTHIA13_TRAIN_IDS) == 13
    assert set(SYNTHIA16_TRAIN_IDS) == set(range(19)) - {9, 14, 16}     # no terrain, truck, train
    assert set(SYNTHIA13_TRAIN_IDS) == set(SYNTHIA16_TRAIN_IDS) - {3, 4, 5}  # nor wall, fence, pole
    cm = np.zeros((19, 19), np.int64)
    cm[0, 0] = 4                     # road 1.0
    cm[3, 3], cm[3, 0] = 1, 1        # wall 1/2, road gets 1 FP -> road 4/5
    cm[9, 9] = 5                     # terrain 1.0: outside both subsets
    cm[10, 10], cm[10, 8] = 3, 1     # sky 3/4, vegetation 0 (predicted, never in GT)
    res = summarize(cm, np.zeros(19, np.int64), eval_class_ids("synthia"))
    iou = res["per_class_iou"]
    assert iou["road"] == pytest.approx(4 / 5) and iou["wall"] == pytest.approx(1 / 2)
    assert iou["terrain"] == pytest.approx(1.0) and iou["vegetation"] == 0.0 and iou["sky"] == pytest.approx(3 / 4)
    # 16 classes: road, wall, vegetation, sky present (terrain excluded).
    assert res["miou"] == pytest.approx((4 / 5 + 1 / 2 + 0 + 3 / 4) / 4)
    # 13 classes: wall dropped too.
    assert res["miou13"] == pytest.approx((4 / 5 + 0 + 3 / 4) / 3)


def test_format_table():
    res = {"miou": 0.5, "per_class_iou": {n: None for n in CLASS_NAMES}}
    res["per_class_iou"]["road"] = 0.9876
    res["per_class_iou"]["car"] = 0.0
    table = format_table({"model_a": res}).splitlines()
    assert table[0].startswith("| model | road | side. |") and table[0].endswith("| bike | mIoU |")
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[0] == "model_a" and cells[1] == "98.8" and cells[14] == "0.0" and cells[2] == "-"
    assert cells[-1] == "50.0" and len(cells) == 21
    syn = dict(res, miou13=0.25)
    t2 = format_table({"m": syn}, eval_class_ids("synthia")).splitlines()
    assert t2[0].endswith("| mIoU | mIoU* |") and "terr." not in t2[0] and "wall" in t2[0]
    assert t2[2].rstrip(" |").endswith("25.0")
