"""Evaluation of a checkpoint on the target val set, and scoring a folder of predictions.

Both paths accumulate the same confusion matrix (:mod:`uncerda_core.evaluate.metrics`)
at the ground truth's full resolution.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from uncerda_core import artifacts
from uncerda_core.data import readers
from uncerda_core.data.index import read_index
from uncerda_core.data.datasets import ImageSettings, SegmentationDataset
from uncerda_core.data.labels import CLASS_NAMES, NUM_CLASSES, eval_class_ids
from uncerda_core.errors import UncerdaError
from uncerda_core.evaluate.metrics import confusion_matrix, summarize
from uncerda_core.evaluate.predictions import find_predictions, to_train_ids
from uncerda_core.inference import EvalProtocol, load_model, predict_logits, predict_multiscale_flip
from uncerda_core.runtime import resolve_device

SHORT_NAMES = ("road", "side.", "build.", "wall", "fence", "pole", "light", "sign", "vege.", "terr.",
               "sky", "person", "rider", "car", "truck", "bus", "train", "motor.", "bike")



def protocol_of(result: dict) -> str:
    """The protocol a metrics JSON was made with, in words.

    Metrics written before the protocol was recorded came from the only
    protocol there was then: single scale, main head.
    """
    protocol = result.get("protocol")
    if protocol is None:
        return "single scale, main head"
    return protocol["description"]


def evaluate_checkpoint(config: dict, checkpoint: str | Path, val_index: str | Path, out_json: str | Path,
                        out_csv: str | Path | None = None, pred_dir: str | Path | None = None,
                        progress: bool = True) -> dict:
    """mIoU of ``checkpoint`` on the images of ``val_index`` (target data set, labels required)."""
    result, predictions = checkpoint_metrics(config, checkpoint, val_index, keep_predictions=pred_dir is not None,
                                             progress=progress)
    result["provenance"] = artifacts.provenance("evaluate", config=config, inputs={
        "checkpoint": checkpoint, "val_index": val_index})
    _write_result(result, out_json, out_csv)
    if pred_dir is not None:
        with artifacts.atomic_dir(pred_dir) as tmp:
            for name, pred in predictions.items():
                Image.fromarray(pred).save(tmp / f"{name}.png")
    return result


def checkpoint_metrics(config: dict, checkpoint: str | Path, index: str | Path, keep_predictions: bool = False,
                       progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """The metrics of ``checkpoint`` on the labelled target images of ``index``, under the config's
    evaluation protocol (``evaluate``), and (``keep_predictions``) each image's prediction by name.

    Writes nothing: the reported evaluation and checkpoint selection both compute through here.
    """
    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    model = load_model(checkpoint, device, config["model"])
    table = read_index(index)
    protocol = EvalProtocol.from_config(config["evaluate"])
    dataset_name = config["target"]["dataset"]
    settings = ImageSettings.from_config(config["target"], train=False, flip=False)
    dataset = SegmentationDataset(dataset_name, table, settings, native_label_size=True)
    # multiscale_flip: each scale's images are resampled once from the decoded file
    views = [dataset if scale == 1.0 else SegmentationDataset(
        dataset_name, table, ImageSettings.from_config(config["target"], train=False, flip=False, scale=scale),
        label_source=None) for scale in protocol.scales]
    normalize_mode = config["train"]["normalize"]
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    misses = np.zeros(NUM_CLASSES, dtype=np.int64)
    predictions = {}
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, file=sys.stderr, mininterval=2.0):
        item = dataset[i]
        label = item["label"].numpy()
        # scores: logits (single) or mean probabilities (multiscale_flip); the prediction is their argmax,
        # so the single protocol needs no softmax
        source = f"{checkpoint} (image {dataset.names[i]})"
        if protocol.name == "single":
            scores = predict_logits(model, item["image"][None], normalize_mode, size=label.shape, source=source)
        else:
            images = [(item if view is dataset else view[i])["image"][None] for view in views]
            scores = predict_multiscale_flip(model, images, normalize_mode, label.shape, protocol.aux_weight,
                                             source)
        pred = scores.argmax(dim=1)[0].cpu().numpy().astype(np.uint8)
        c, m = confusion_matrix(pred, label, NUM_CLASSES)
        cm += c
        misses += m
        if keep_predictions:
            predictions[dataset.names[i]] = pred
    subsets = eval_class_ids(config["source"]["dataset"])
    result = summarize(cm, misses, subsets)
    result["images"] = len(dataset)
    result["protocol"] = protocol.record()
    return result, predictions


def score_predictions(pred_dir: str | Path, dataset: str, root: str | Path, split: str,
                      out_json: str | Path, out_csv: str | Path | None = None,
                      subsets: dict[str, tuple[int, ...]] | None = None, progress: bool = True,
                      id_type: str = "auto") -> dict:
    """Score the predictions in ``pred_dir`` against the data set's labels.

    Files are found and named as :mod:`uncerda_core.evaluate.predictions`
    describes (city sub-folders, ``_leftImg8bit``/``_trainIds``/``_labelIds``
    names, train or label ids by name or ``id_type``). A prediction whose size
    differs from its label but has its aspect ratio (within one pixel) is
    resized nearest-neighbour to the label, counted and reported on stderr;
    another aspect ratio (a crop, another data set) and a missing prediction
    file are errors naming the file.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UncerdaError(f"{pred_dir}: prediction folder not found")
    samples = readers.list_label_samples(dataset, root, split)
    found = find_predictions(pred_dir, [s.name for s in samples], id_type)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    misses = np.zeros(NUM_CLASSES, dtype=np.int64)
    resized: list[str] = []
    for sample in tqdm(samples, desc="score", disable=not progress, file=sys.stderr, mininterval=2.0):
        label = readers.read_label(dataset, sample.label)
        path = found[sample.name].path
        try:
            with Image.open(path) as im:
                if im.mode not in ("L", "P"):
                    raise UncerdaError(f"{path}: predictions must be single-channel PNGs of train ids, got mode {im.mode}")
                if im.size != label.shape[::-1]:
                    (pw, ph), (lw, lh) = im.size, label.shape[::-1]
                    if abs(pw * lh - ph * lw) > max(pw, lw):   # more than one pixel of rounding apart
                        raise UncerdaError(f"{path}: the prediction is {pw}x{ph}, its label {lw}x{lh}: another "
                                           "aspect ratio (a crop, or another data set's image?); predictions must "
                                           "cover the whole image, at its size or scaled")
                    im = im.resize((lw, lh), Image.NEAREST)
                    resized.append(f"{path.name} {pw}x{ph} -> {lw}x{lh}")
                pred = np.asarray(im)
        except OSError as exc:
            raise UncerdaError(f"{path}: unreadable prediction PNG ({exc})") from exc
        pred = to_train_ids(pred, found[sample.name])
        c, m = confusion_matrix(pred, label, NUM_CLASSES)
        cm += c
        misses += m
    if resized:
        print(f"score: {len(resized)} of {len(samples)} predictions resized (nearest) to their label's size, "
              f"e.g. {resized[0]}", file=sys.stderr)
    result = summarize(cm, misses, subsets or eval_class_ids("gta5"))
    result["images"] = len(samples)
    result["resized_predictions"] = len(resized)
    # made by another program: how its predictions were computed is not known here
    result["protocol"] = {"name": "png_predictions", "scales": None, "aux_weight": None,
                          "description": "PNG predictions, scored as given"}
    result["provenance"] = artifacts.provenance("score", extra={"pred_dir": str(pred_dir), "dataset": dataset,
                                                               "root": str(root), "split": split,
                                                               "id_type": id_type})
    _write_result(result, out_json, out_csv)
    return result


def _write_result(result: dict, out_json: str | Path, out_csv: str | Path | None) -> None:
    artifacts.write_json(out_json, result)
    if out_csv is not None:
        rows = [{"class_id": c, "class": n, "iou": result["per_class_iou"][n]} for c, n in enumerate(CLASS_NAMES)]
        with artifacts.atomic_path(out_csv) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)


def format_table(results: dict[str, dict], subsets: dict[str, tuple[int, ...]] | None = None) -> str:
    """A markdown table with the paper's Table 1/2 columns (per-class IoU in %, then mIoU)."""
    subsets = subsets or {"miou": tuple(range(NUM_CLASSES))}
    classes = sorted(set().union(*subsets.values()))
    head = ["model"] + [SHORT_NAMES[c] for c in classes] + [("mIoU*" if k == "miou13" else "mIoU") for k in subsets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        cells = [name]
        for c in classes:
            v = res["per_class_iou"][CLASS_NAMES[c]]
            cells.append("-" if v is None else f"{100 * v:.1f}")
        cells += [f"{100 * res[k]:.1f}" for k in subsets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
