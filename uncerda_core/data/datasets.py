"""Torch datasets over an index table, and the deterministic batch stream.

Randomness of the input pipeline (which images, crops, flips) is a pure
function of ``(seed, stream, iteration)``, so a training run resumed at
iteration k sees exactly the batches an uninterrupted run sees, and shards of
a distributed run draw disjoint parts of one stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from uncerda_core.data import readers
from uncerda_core.data.labels import IGNORE, NUM_CLASSES
from uncerda_core.errors import UncerdaError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)


@dataclass(frozen=True)
class ImageSettings:
    """How images of one domain are fed to the network."""

    resize: tuple[int, int] | None = None   # (width, height) before cropping
    crop: tuple[int, int] | None = None     # (width, height) random crop, training only
    flip: bool = False
    scale: float = 1.0                      # factor on the resized (or decoded) size: multi-scale testing

    @classmethod
    def from_config(cls, section: dict, train: bool, flip: bool, scale: float = 1.0) -> "ImageSettings":
        resize = tuple(section["resize"]) if section.get("resize") else None
        crop = tuple(section["crop"]) if (train and section.get("crop")) else None
        return cls(resize=resize, crop=crop, flip=flip and train, scale=scale)

    def input_size(self, width: int, height: int) -> tuple[int, int] | None:
        """(width, height) an image decoded at ``width`` x ``height`` is resized to; None keeps it.

        ``resize`` (or the decoded size) times ``scale``, rounded: scale 1.25 of
        1024x512 is 1280x640. One resampling from the decoded image, never two.
        """
        if self.scale == 1.0:
            return tuple(self.resize) if self.resize is not None else None
        base_w, base_h = self.resize if self.resize is not None else (width, height)
        return int(round(base_w * self.scale)), int(round(base_h * self.scale))


def normalize(images: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, 3, H, W) RGB in 0-255 -> network input ('imagenet' or Caffe-style 'caffe_bgr')."""
    if mode == "imagenet":
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        return (images - mean) / std
    if mode == "caffe_bgr":
        bgr = images.flip(1)
        return bgr - images.new_tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    raise ValueError(f"unknown normalisation {mode!r}")


def resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) images (or per-pixel scores) resized to (H, W) as images are: bilinear with
    half-pixel centres (``align_corners=False``), both covering the same scene extent; returned as
    they are when already that size. Not for a network's logit grid, whose cells sit on every
    ``stride``-th pixel (:func:`uncerda_core.models.deeplab.logits_to_input`).
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationDataset(torch.utils.data.Dataset):
    """Images (and labels) of one split, addressed by ``(index, item_seed, focus_class)``.

    ``label_source``: 'index' reads the labels listed in the index (native ids
    mapped to train ids), a directory reads ``<dir>/<name>.png`` (train ids,
    e.g. pseudo labels at the network input size), None gives no labels.
    Images are returned as float RGB in 0-255 (normalised later, after FDA).
    """

    def __init__(self, dataset: str, table: pd.DataFrame, settings: ImageSettings,
                 label_source: str | Path | None = "index", cache: bool = False,
                 native_label_size: bool = False):
        self.dataset = dataset
        self.names = list(table["name"])
        self.images = list(table["image"])
        self.labels = list(table["label"]) if "label" in table else [""] * len(table)
        self.settings = settings
        self.native_label_size = native_label_size  # evaluation: labels stay at full resolution
        self.label_source = label_source
        self.cache: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = {} if cache else None
        if label_source not in (None, "index"):
            folder = Path(label_source)
            missing = [n for n in self.names if not (folder / f"{n}.png").is_file()]
            if missing:
                raise UncerdaError(f"{folder}: no label PNG for {len(missing)} images, e.g. {missing[0]}.png")

    def __len__(self) -> int:
        return len(self.names)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        image = readers.read_image(self.images[index])
        height, width = image.shape[:2]
        label = None
        if self.label_source == "index":
            if not self.labels[index]:
                raise UncerdaError(f"{self.images[index]}: no label listed in the index")
            label = readers.read_label(self.dataset, self.labels[index], size=(width, height))
        elif self.label_source is not None:
            path = Path(self.label_source) / f"{self.names[index]}.png"
            label = _read_train_id_png(path)
            if self.settings.resize is None and label.shape != (height, width):
                raise UncerdaError(f"{path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                                   f"{self.images[index]} is {width}x{height}; expected equal sizes")
        size = self.settings.input_size(width, height)
        if size is not None:
            image = _resize(image, size, Image.BICUBIC)
            if label is not None and not self.native_label_size and label.shape[::-1] != size:
                label = _resize(label, size, Image.NEAREST)
        if self.cache is not None:
            self.cache[index] = (image, label)
        return image, label

    def __getitem__(self, item):
        index, item_seed, focus = item if isinstance(item, tuple) else (item, 0, -1)
        image, label = self._load(int(index))
        rng = np.random.default_rng(int(item_seed))
        if self.settings.crop is not None:
            image, label = _random_crop(image, label, self.settings.crop, rng, int(focus))
        if self.settings.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            label = label[:, ::-1] if label is not None else None
        out = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
               "index": int(index)}
        if label is not None:
            out["label"] = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        return out


def _read_train_id_png(path: Path) -> np.ndarray:
    """A PNG of train ids (pseudo labels): single channel, values 0..18 or 255."""
    im = readers.open_decoded(path)
    if im.mode not in ("L", "P"):
        raise UncerdaError(f"{path}: a label PNG of train ids must be single-channel (mode L or P), got mode {im.mode}")
    label = np.asarray(im)
    bad = (label >= NUM_CLASSES) & (label != IGNORE)
    if bad.any():
        raise UncerdaError(f"{path}: label values must be train ids 0..{NUM_CLASSES - 1} or {IGNORE}, "
                           f"found {int(label[bad][0])}")
    return label


def _resize(array: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize(tuple(size), resample))


def _random_crop(image: np.ndarray, label: np.ndarray | None, crop: tuple[int, int],
                 rng: np.random.Generator, focus: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Random (width, height) crop; with ``focus >= 0`` centred on a random pixel of that class."""
    crop_w, crop_h = crop
    height, width = image.shape[:2]
    if crop_w > width or crop_h > height:
        raise UncerdaError(f"crop {crop_w}x{crop_h} is larger than the image {width}x{height}: "
                           "lower the crop or resize first")
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    if focus >= 0 and label is not None:
        ys, xs = np.nonzero(label == focus)
        if len(ys):
            pick = int(rng.integers(0, len(ys)))
            top = int(np.clip(ys[pick] - crop_h // 2, 0, height - crop_h))
            left = int(np.clip(xs[pick] - crop_w // 2, 0, width - crop_w))
    image = image[top:top + crop_h, left:left + crop_w]
    label = label[top:top + crop_h, left:left + crop_w] if label is not None else None
    return image, label


class BatchStream:
    """The batches of one training stream as a pure function of the iteration.

    Iteration ``it`` draws ``batch_size * world_size`` items from
    ``np.random.default_rng([seed, stream, it])``: image indices (uniform, or
    with ``probabilities``, with replacement), an augmentation seed per item,
    and for crop-level sampling a focus class per item drawn from
    ``focus_weights`` (M, C). Rank r takes items r, r + world, r + 2 world, ...,
    so shards are disjoint parts of one stream.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, stream: int,
                 probabilities: np.ndarray | None = None, focus_weights: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1):
        if n_items <= 0:
            raise UncerdaError("cannot draw batches from an empty data set")
        self.n_items = n_items
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.rank = rank
        self.world_size = world_size
        self.probabilities = None
        if probabilities is not None:
            p = np.asarray(probabilities, dtype=np.float64)
            if p.shape != (n_items,) or not np.all(p >= 0) or p.sum() <= 0:
                raise UncerdaError("sampling probabilities must be one non-negative number per image")
            self.probabilities = p / p.sum()
        self.focus_weights = focus_weights

    def global_items(self, iteration: int) -> list[tuple[int, int, int]]:
        rng = np.random.default_rng([self.seed, self.stream, iteration])
        total = self.batch_size * self.world_size
        if self.probabilities is None:
            indices = rng.integers(0, self.n_items, size=total)
        else:
            indices = rng.choice(self.n_items, size=total, replace=True, p=self.probabilities)
        item_seeds = rng.integers(0, 2**31 - 1, size=total)
        focus = np.full(total, -1, dtype=np.int64)
        if self.focus_weights is not None:
            for j, index in enumerate(indices):
                w = self.focus_weights[index]
                if w.sum() > 0:
                    focus[j] = int(rng.choice(len(w), p=w / w.sum()))
        return [(int(i), int(s), int(f)) for i, s, f in zip(indices, item_seeds, focus)]

    def items(self, iteration: int) -> list[tuple[int, int, int]]:
        return self.global_items(iteration)[self.rank::self.world_size]


def collate(dataset: SegmentationDataset, items: list[tuple[int, int, int]]) -> dict[str, torch.Tensor]:
    samples = [dataset[item] for item in items]
    batch = {"image": torch.stack([s["image"] for s in samples]),
             "index": torch.tensor([s["index"] for s in samples])}
    if "label" in samples[0]:
        batch["label"] = torch.stack([s["label"] for s in samples])
    return batch


class IterationBatches(torch.utils.data.Dataset):
    """Batch ``k`` of this dataset is iteration ``start + k`` of a :class:`BatchStream`.

    Wrapped in a DataLoader with ``batch_size=None`` it loads batches in worker
    processes while keeping their order (and so the run's determinism).
    """

    def __init__(self, dataset: SegmentationDataset, stream: BatchStream, start: int, stop: int):
        self.dataset, self.stream, self.start, self.stop = dataset, stream, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return collate(self.dataset, self.stream.items(self.start + k))
