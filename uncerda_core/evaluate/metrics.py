"""Confusion matrix, per-class IoU and mIoU (pure numpy)."""

from __future__ import annotations

import numpy as np

from uncerda_core.data.labels import CLASS_NAMES, IGNORE
from uncerda_core.errors import UncerdaError


def confusion_matrix(prediction: np.ndarray, ground_truth: np.ndarray,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, C) int64 counts (rows = ground truth, columns = prediction) and (C,) misses.

    Pixels whose ground truth is 255 (or outside 0..C-1) are not counted. A
    prediction of 255 ("no prediction") on a labelled pixel counts as a miss:
    it adds nothing to any column, so it lowers that class's IoU through the
    row total.
    """
    gt = ground_truth.reshape(-1).astype(np.int64)
    pred = prediction.reshape(-1).astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"prediction and ground truth differ in size: {prediction.shape} vs {ground_truth.shape}")
    labelled = (gt >= 0) & (gt < num_classes)
    gt, pred = gt[labelled], pred[labelled]
    predicted = (pred >= 0) & (pred < num_classes)
    cm = np.bincount(gt[predicted] * num_classes + pred[predicted], minlength=num_classes**2)
    cm = cm.reshape(num_classes, num_classes)
    # Labelled pixels without a valid prediction: false negatives only.
    misses = np.bincount(gt[~predicted], minlength=num_classes)
    return cm, misses


def iou_per_class(cm: np.ndarray, misses: np.ndarray | None = None) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) per class; NaN for a class absent from both ground truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    gt_total = cm.sum(axis=1) + (misses if misses is not None else 0)
    pred_total = cm.sum(axis=0)
    union = gt_total + pred_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(iou: np.ndarray, classes: tuple[int, ...] | None = None) -> float:
    """Mean IoU over ``classes`` (default all), skipping classes that are NaN (absent everywhere)."""
    values = iou if classes is None else iou[list(classes)]
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def summarize(cm: np.ndarray, misses: np.ndarray, subsets: dict[str, tuple[int, ...]]) -> dict:
    """The metrics JSON body: mIoU per subset, per-class IoU by name (None where absent), pixel accuracy."""
    iou = iou_per_class(cm, misses)
    result = {name: mean_iou(iou, ids) for name, ids in subsets.items()}
    result["per_class_iou"] = {CLASS_NAMES[c]: (None if np.isnan(iou[c]) else float(iou[c])) for c in range(len(iou))}
    labelled = cm.sum() + misses.sum()
    result["pixel_accuracy"] = float(np.trace(cm) / labelled) if labelled else float("nan")
    result["labelled_pixels"] = int(labelled)
    result["confusion_matrix"] = cm.tolist()
    result["unpredicted_pixels"] = misses.tolist()
    result["ignore_label"] = IGNORE
    return result


def best_candidate(scores: list[float]) -> int:
    """Index of the highest score; ties go to the earliest (the snapshot trained least).

    A NaN score (nothing evaluable) never wins; all NaN (or none) is an error.
    """
    values = np.asarray(scores, dtype=np.float64)
    if not len(values) or np.isnan(values).all():
        raise UncerdaError(f"no candidate has a score to select by (scores: {list(scores)})")
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values)))   # argmax returns the first maximum
