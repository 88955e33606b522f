"""Target inference: run a checkpoint over target images and write the maps file (HDF5).

Memory stays bounded by one batch whatever the number of images: each
image's maps are written to their own chunk as soon as they are computed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from uncerda_core import artifacts
from uncerda_core.data import readers
from uncerda_core.data.index import read_index
from uncerda_core.data.datasets import ImageSettings, SegmentationDataset, resize_bilinear
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.inference import load_model, predict_logits
from uncerda_core.runtime import load_checkpoint, resolve_device
from uncerda_core.uncertainty.maps import MapsWriter, maps_from_logits


def _table(dataset: str, root, split: str, index):
    import pandas as pd
    if index is not None:
        return read_index(index)
    if root is None:
        raise UncerdaError("dump: give --index, or --root and --split")
    samples = readers.list_samples(dataset, root, split, require_labels=False)
    return pd.DataFrame({"name": [s.name for s in samples], "image": [s.image for s in samples],
                         "label": ["" for _ in samples]})


def dump_maps(checkpoint: str | Path, out: str | Path, config: dict | None = None, dataset: str | None = None,
              root: str | Path | None = None, split: str | None = None, index: str | Path | None = None,
              progress: bool = True) -> None:
    """Write argmax, entropy (Eq. 2) and max-probability maps of every image to ``out``.

    Maps are stored at the network input size (``target.resize``, else the
    image size). ``config`` defaults to the one recorded in the checkpoint;
    ``dataset`` and ``split`` (with ``root``) to its ``target.dataset`` and ``target.train_split``.
    """
    artifacts.remove_stale_temporaries(out)   # what a killed dump of this file left
    state = None
    if config is None:
        state = load_checkpoint(checkpoint)
        config = state.get("config")
        if not isinstance(config, dict):
            raise UncerdaError(f"{checkpoint}: the checkpoint records no config; pass one with --config")
    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    model = load_model(checkpoint, device, config["model"], state=state)
    dataset = config["target"]["dataset"] if dataset is None else dataset
    split = config["target"]["train_split"] if split is None else split
    table = _table(dataset, root, split, index)
    settings = ImageSettings.from_config(config["target"], train=False, flip=False)
    images = SegmentationDataset(dataset, table, settings, label_source=None)
    if not len(images):
        raise UncerdaError(f"dump: no images to process ({index or root})")
    first = images[0]["image"]
    height, width = first.shape[-2:]
    dump_cfg = config["dump"]
    prob_size = tuple(dump_cfg["prob_size"][::-1]) if dump_cfg["prob_size"] else None  # (h, w)
    record = artifacts.provenance("dump", config=config, inputs={"checkpoint": checkpoint, "index": index})
    attrs = {"checkpoint": str(checkpoint), "checkpoint_sha256": record["inputs"]["checkpoint"]["sha256"],
             "config": config, "provenance": record}
    num_classes = config["model"]["num_classes"]
    batch_size = dump_cfg["batch_size"]
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False,
                                         num_workers=config["train"]["num_workers"])
    with MapsWriter(out, len(images), height, width, num_classes, CLASS_NAMES[:num_classes],
                    prob_size=prob_size, compression=dump_cfg["compression"], attrs=attrs) as writer:
        for batch in tqdm(loader, desc="dump", disable=not progress, file=sys.stderr, mininterval=2.0):
            indices = batch["index"].tolist()
            logits = predict_logits(model, batch["image"], config["train"]["normalize"],
                                    fuse_aux=dump_cfg["fuse_aux"],
                                    source=f"{checkpoint} (images {', '.join(images.names[i] for i in indices)})")
            argmax, entropy, maxprob = maps_from_logits(logits)
            small = None
            if prob_size is not None:
                # logits are already on the input's pixels (predict_logits); prob_size is an image resize
                small = resize_bilinear(torch.softmax(logits, dim=1), prob_size).clamp(0, 1).half().cpu().numpy()
            for j, i in enumerate(indices):
                writer.write(i, images.names[i], argmax[j], entropy[j], maxprob[j],
                             None if small is None else small[j])
