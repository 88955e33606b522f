"""``uncerda predict``: a trained checkpoint over a folder of new images, in the benchmark's formats.

Every PNG or JPEG under the input folder (recursively) is resized as the
checkpoint's config resizes target images (``target.resize``), run through the
network under an evaluation protocol (:func:`uncerda_core.inference.protocol_logits`),
and its class scores are upsampled to the image's own size. The outputs mirror
the input's sub-folders:

- ``<stem>_trainIds.png``: train ids 0..18 (never 255: every pixel gets a class);
- ``<stem>_labelIds.png``: Cityscapes label ids, what the benchmark server and
  cityscapesscripts' evaluator read;
- ``<stem>_color.png``: the Cityscapes palette;
- ``<stem>_entropy.png`` (with ``entropy``): the normalised entropy (Eq. 2) as a
  16-bit PNG, 0..65535 for 0..1.

``<stem>`` is the file name without its extension and without a trailing
``_leftImg8bit``. Memory stays bounded by one batch: each batch's files are
written as soon as they are computed, into a temporary folder that replaces the
output folder at the end.
"""

from __future__ import annotations

import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from uncerda_core import artifacts
from uncerda_core.data.datasets import ImageSettings, SegmentationDataset
from uncerda_core.data.labels import NUM_CLASSES, TRAIN_TO_CITYSCAPES_ID, colorize, lookup_table
from uncerda_core.errors import UncerdaError
from uncerda_core.inference import EvalProtocol, check_protocol, checkpoint_config, load_model, protocol_logits
from uncerda_core.runtime import load_checkpoint, resolve_device
from uncerda_core.uncertainty.equations import normalized_entropy

FORMATS: tuple[str, ...] = ("trainIds", "labelIds", "color")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
CITYSCAPES_IMAGE_TAG = "_leftImg8bit"
ENTROPY_TAG = "entropy"
# Train id -> Cityscapes label id; 255 never occurs in a prediction.
TRAIN_TO_LABEL_LUT = lookup_table(TRAIN_TO_CITYSCAPES_ID)
# The provenance record that marks a folder as one this command wrote (and may replace).
RECORD_NAME = "provenance.json"


def check_formats(formats: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UncerdaError(f"--formats: unknown or no format {unknown}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


@dataclass(frozen=True)
class PredictSettings:
    """What to write and how to infer (``batch_size``: images per forward pass)."""

    formats: tuple[str, ...]
    protocol: EvalProtocol
    entropy: bool
    batch_size: int

    def __post_init__(self):
        check_formats(self.formats)


def prediction_stem(path: str | Path) -> str:
    """The file's name without extension and without a trailing ``_leftImg8bit``."""
    stem = Path(path).stem
    return stem[: -len(CITYSCAPES_IMAGE_TAG)] if stem.endswith(CITYSCAPES_IMAGE_TAG) else stem


def find_images(input_dir: str | Path) -> list[Path]:
    """Every PNG or JPEG under ``input_dir`` (recursively), relative to it, sorted."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise UncerdaError(f"{input_dir}: input folder not found")
    found = sorted(p.relative_to(input_dir) for p in input_dir.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise UncerdaError(f"{input_dir}: no .png, .jpg or .jpeg images in it or its sub-folders")
    return found


def output_path(relative: Path, kind: str) -> Path:
    """Where the ``kind`` output (a format, or ``entropy``) of the image at ``relative`` goes."""
    return relative.parent / f"{prediction_stem(relative)}_{kind}.png"


def _check_targets(input_dir: Path, out_dir: Path, images: list[Path]) -> None:
    """Refuse, before any work, outputs that would overwrite each other or a folder not ours."""
    inp, out = input_dir.resolve(), out_dir.resolve()
    if out == inp or inp in out.parents or out in inp.parents:
        raise UncerdaError(f"--out-dir {out_dir} and --input {input_dir} overlap; the output folder is "
                           "replaced as a whole, so it must lie outside the input folder")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                     and not (out_dir / RECORD_NAME).is_file())):
        raise UncerdaError(f"{out_dir}: exists and was not written by uncerda predict (no {RECORD_NAME}); "
                           "it would be replaced as a whole: choose a new or empty --out-dir")
    owners: dict[Path, list[Path]] = defaultdict(list)
    for rel in images:
        owners[output_path(rel, "x")].append(rel)
    clashes = [" and ".join(map(str, paths)) for paths in owners.values() if len(paths) > 1]
    if clashes:
        raise UncerdaError(f"{input_dir}: {len(clashes)} group(s) of images would write the same predictions "
                           f"(same folder and stem), e.g. {clashes[0]}; rename or remove one of them")


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UncerdaError(f"{path}: cannot read the image ({exc}); remove it from the input folder "
                           "or replace it") from exc
    return height, width


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def _write_outputs(root: Path, relative: Path, scores: torch.Tensor, settings: PredictSettings) -> None:
    """The files of one image from its (C, H, W) class scores (:func:`protocol_logits`)."""
    train_ids = scores.argmax(dim=0).to(torch.uint8).numpy()
    arrays = {"trainIds": lambda: train_ids, "labelIds": lambda: TRAIN_TO_LABEL_LUT[train_ids],
              "color": lambda: colorize(train_ids)}
    for fmt in settings.formats:
        _write_png(root / output_path(relative, fmt), arrays[fmt]())
    if settings.entropy:
        prob = torch.softmax(scores, dim=0).numpy()
        entropy = normalized_entropy(prob, axis=0)   # float64: the 16 bits are all kept
        scaled = np.rint(entropy * 65535.0).astype(np.uint16)
        _write_png(root / output_path(relative, ENTROPY_TAG), scaled)


def predict_folder(checkpoint: str | Path, input_dir: str | Path, out_dir: str | Path,
                   formats: tuple[str, ...] = FORMATS, protocol: str | None = None, entropy: bool = False,
                   config: dict | None = None, progress: bool = True) -> dict:
    """Write the predictions of ``checkpoint`` for every image under ``input_dir`` into ``out_dir``.

    ``protocol``: an evaluation protocol's name (default: the config's
    ``evaluate.protocol``; its scales and aux weight come from the config's
    ``evaluate`` section). ``config``: the config to infer with (default: the
    checkpoint's); its ``predict.batch_size`` images go through one forward
    pass. Returns a summary (images, formats, protocol); the same record goes
    to ``<out_dir>/provenance.json``.
    """
    formats = check_formats(tuple(formats))
    if protocol is not None:
        check_protocol(protocol)
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    images = find_images(input_dir)
    _check_targets(input_dir, out_dir, images)
    sizes = [_image_size(input_dir / rel) for rel in images]   # a file that is no image fails here
    state = load_checkpoint(checkpoint)
    config = checkpoint_config(checkpoint, config, state)
    settings = PredictSettings(formats, EvalProtocol.from_config(config["evaluate"], protocol), entropy,
                               config["predict"]["batch_size"])
    if config["model"]["num_classes"] != NUM_CLASSES:
        raise UncerdaError(f"{checkpoint}: {config['model']['num_classes']} classes; the benchmark formats "
                           f"need the {NUM_CLASSES} Cityscapes train ids")
    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    model = load_model(checkpoint, device, config["model"], state=state)
    del state
    table = pd.DataFrame({"name": [str(p) for p in images], "image": [str(input_dir / p) for p in images]})
    dataset = SegmentationDataset(config["target"]["dataset"], table,
                                  ImageSettings.from_config(config["target"], train=False, flip=False),
                                  label_source=None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=False,
                                         num_workers=config["train"]["num_workers"], collate_fn=list)
    normalize_mode = config["train"]["normalize"]
    with artifacts.atomic_dir(out_dir) as tmp:
        for batch in tqdm(loader, desc="predict", disable=not progress, file=sys.stderr, mininterval=2.0):
            # Images of one batch share a forward pass when their input and output sizes agree.
            groups: dict[tuple, list[dict]] = defaultdict(list)
            for item in batch:
                groups[(tuple(item["image"].shape), sizes[item["index"]])].append(item)
            for (_, size), items in groups.items():
                stack = torch.stack([item["image"] for item in items])
                scores = protocol_logits(model, stack, normalize_mode, settings.protocol, size=size).cpu()
                for item, s in zip(items, scores):
                    _write_outputs(tmp, images[item["index"]], s, settings)
        record = artifacts.provenance("predict", config=config, inputs={"checkpoint": checkpoint}, extra={
            "input": str(input_dir), "images": len(images), "formats": list(settings.formats),
            "protocol": settings.protocol.name, "protocol_details": settings.protocol.record(),
            "entropy": settings.entropy})
        artifacts.write_json(tmp / RECORD_NAME, record)
    return {"images": len(images), "formats": list(settings.formats), "protocol": settings.protocol.name,
            "out_dir": str(out_dir)}


def write_submission_zip(pred_dir: str | Path, out_zip: str | Path, fmt: str = "labelIds") -> int:
    """Zip every ``*_<fmt>.png`` under ``pred_dir`` (keeping sub-folders) for the benchmark server;
    returns how many files went in."""
    pred_dir = Path(pred_dir)
    files = sorted(pred_dir.rglob(f"*_{fmt}.png"))
    if not files:
        raise UncerdaError(f"{pred_dir}: no *_{fmt}.png predictions to zip (predict with --formats {fmt})")
    with artifacts.atomic_path(out_zip, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(pred_dir).as_posix())
    return len(files)
