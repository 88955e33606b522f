"""BatchNorm statistics re-estimated on target images.

The AdaBN control (``adapt_batchnorm``, no training): part of any adaptation
gain can come from BatchNorm merely seeing target statistics; this control
measures that share. The same pass (``reestimate_batchnorm``) ends every
mixed-domain training stage under ``train.target_bn_stats`` (docs/method.md,
"BatchNorm statistics after mixed batches").
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from uncerda_core import artifacts
from uncerda_core.data.index import read_index
from uncerda_core.data.datasets import ImageSettings, SegmentationDataset, collate, normalize
from uncerda_core.errors import UncerdaError
from uncerda_core.inference import load_model, non_finite_entries, require_finite
from uncerda_core.runtime import load_checkpoint, resolve_device
from uncerda_core.train.checkpoint import save_checkpoint


def target_images(config: dict, target_index: str | Path) -> SegmentationDataset:
    """Target images as inference sees them (no crop, no flip): what BatchNorm statistics are estimated on."""
    settings = ImageSettings.from_config(config["target"], train=False, flip=False)
    return SegmentationDataset(config["target"]["dataset"], read_index(target_index), settings, label_source=None)


@torch.no_grad()
def reestimate_batchnorm(model: torch.nn.Module, images: SegmentationDataset, *, batch_size: int,
                         device: torch.device, normalization: str, what: str, progress: bool = True) -> None:
    """Replace every BatchNorm running mean and variance of ``model`` by their averages over ``images``.

    One pass with cumulative averages (momentum None), every other layer in eval mode; the
    model's training mode is restored afterwards. Raises :class:`UncerdaError` naming ``what``
    and the images when an activation or a statistic is not finite.
    """
    was_training = model.training
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the whole pass
        bn.train()
    # Batches in order, without a DataLoader: starting one draws from torch's random generator,
    # and a training run that re-estimates a kept snapshot must not change its own course.
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="target BatchNorm statistics", disable=not progress, file=sys.stderr,
                      mininterval=2.0):
        batch = collate(images, list(range(start, min(start + batch_size, len(images)))))
        _, logits = model(normalize(batch["image"].to(device), normalization))
        require_finite(logits, f"{what} (target images {', '.join(images.names[i] for i in batch['index'].tolist())})")
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.train(was_training)
    bad = non_finite_entries({k: v for k, v in model.state_dict().items() if "running_" in k})
    if bad:   # activations overflowed on some target image: the averages are not statistics
        raise UncerdaError(f"{what}: re-estimating BatchNorm on target images gave non-finite statistics "
                           f"in {len(bad)} tensor(s), e.g. {bad[0]!r}")


def adapt_batchnorm(config: dict, checkpoint: str | Path, target_index: str | Path, out: str | Path,
                    progress: bool = True) -> None:
    """The AdaBN control: one pass over the target train images with cumulative BatchNorm averages."""
    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    state = load_checkpoint(checkpoint)
    model = load_model(checkpoint, device, config["model"], state=state)
    try:
        reestimate_batchnorm(model, target_images(config, target_index), batch_size=config["train"]["batch_size"],
                             device=device, normalization=config["train"]["normalize"], what=str(checkpoint),
                             progress=progress)
    except UncerdaError as exc:
        raise UncerdaError(f"{exc} ({target_index}); {out} is not written") from exc
    state["model"] = {k: v.cpu() for k, v in model.state_dict().items()}
    state["stage"] = "adabn"
    state["provenance"] = artifacts.provenance("adabn", config=config, inputs={
        "checkpoint": checkpoint, "target_index": target_index})
    save_checkpoint(out, state)
