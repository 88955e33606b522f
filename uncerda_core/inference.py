"""Running a trained checkpoint: shared by evaluation, the maps dump and the report."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from uncerda_core.artifacts import UncerdaError
from uncerda_core.config import validate_config
from uncerda_core.data.datasets import normalize
from uncerda_core.models import build_model
from uncerda_core.train.checkpoint import load_checkpoint


def load_model(checkpoint: str | Path, device: torch.device, model_config: dict | None = None,
               state: dict | None = None) -> torch.nn.Module:
    """The segmentation network of an uncerda checkpoint, in eval mode on ``device``.

    The architecture comes from the checkpoint (``model_config``); passing one
    that differs from it fails with both named. ``state``: the checkpoint
    already loaded by the caller, so that it is not read twice.
    """
    if state is None:
        state = load_checkpoint(checkpoint)
    if not isinstance(state["model"], dict):
        raise UncerdaError(f"{checkpoint}: its 'model' entry is a {type(state['model']).__name__}, "
                           "not a state dict of tensors")
    stored = state.get("model_config")
    if stored is None and model_config is None:
        raise UncerdaError(f"{checkpoint}: checkpoint does not record its architecture; pass the model config")
    if model_config is not None and stored is not None:
        keys = ("arch", "num_classes", "width", "blocks", "output_stride", "aspp_branches")
        diff = {k: (stored.get(k), model_config.get(k)) for k in keys if stored.get(k) != model_config.get(k)}
        if diff:
            raise UncerdaError(f"{checkpoint}: checkpoint architecture differs from the config: "
                               + ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items()))
    model = build_model(stored or model_config)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UncerdaError(f"{checkpoint}: weights do not fit the recorded architecture: "
                           f"{str(exc).splitlines()[0]}") from exc
    return model.to(device).eval()


def checkpoint_config(checkpoint: str | Path, config: dict | None, state: dict) -> dict:
    """The config to infer with: the given one, else the one the checkpoint records (with the
    schema's defaults filled in for keys added since it was trained)."""
    if config is not None:
        return config
    recorded = state.get("config")
    if not isinstance(recorded, dict):
        raise UncerdaError(f"{checkpoint}: the checkpoint records no config; pass one with --config")
    return validate_config(copy.deepcopy(recorded), source=f"{checkpoint} (its recorded config)")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, normalize_mode: str,
                   size: tuple[int, int] | None = None, fuse_aux: float = 0.0) -> torch.Tensor:
    """Logits (B, C, H, W) of 0-255 RGB ``images``, upsampled bilinearly to ``size`` (default: the input's).

    Main head only, or ``main + fuse_aux * aux`` when ``fuse_aux`` > 0.
    """
    device = next(model.parameters()).device
    x = normalize(images.to(device, dtype=torch.float32), normalize_mode)
    aux, main = model(x)
    logits = main if fuse_aux == 0 else main + fuse_aux * aux
    size = tuple(size) if size is not None else tuple(images.shape[-2:])
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, normalize_mode: str,
                          size: tuple[int, int] | None = None, fuse_aux: float = 0.0) -> torch.Tensor:
    """Softmax of :func:`predict_logits`: probabilities (B, C, H, W)."""
    return torch.softmax(predict_logits(model, images, normalize_mode, size, fuse_aux), dim=1)


# Evaluation protocols: how one image becomes class probabilities.
#   single           the network input once, main head only (as `uncerda evaluate` scores a model)
#   multiscale_flip  the input at scales 1.0 and 1.25, each also mirrored; main + 0.5 x aux logits per
#                    pass, softmax per pass, the four probability maps averaged
PROTOCOLS: tuple[str, ...] = ("single", "multiscale_flip")
MULTISCALE_SCALES: tuple[float, ...] = (1.0, 1.25)
MULTISCALE_AUX_WEIGHT = 0.5


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise UncerdaError(f"unknown evaluation protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return protocol


@torch.no_grad()
def protocol_logits(model: torch.nn.Module, images: torch.Tensor, normalize_mode: str,
                    protocol: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Class scores (B, C, H, W) of 0-255 RGB ``images`` under an evaluation ``protocol``, at ``size``
    (default: the input's): their argmax is the prediction, their softmax the class probabilities.

    ``single``: the main head's logits, upsampled bilinearly (exactly what ``uncerda evaluate``
    takes the argmax of). ``multiscale_flip``: the log of the four passes' averaged probabilities
    (each pass's logits upsampled to ``size`` before its softmax).
    """
    check_protocol(protocol)
    size = tuple(size) if size is not None else tuple(images.shape[-2:])
    if protocol == "single":
        return predict_logits(model, images, normalize_mode, size)
    height, width = images.shape[-2:]
    total = None
    for scale in MULTISCALE_SCALES:
        scaled = images if scale == 1.0 else F.interpolate(
            images.float(), size=(round(height * scale), round(width * scale)), mode="bilinear",
            align_corners=False)
        for flip in (False, True):
            x = scaled.flip(-1) if flip else scaled
            logits = predict_logits(model, x, normalize_mode, size, fuse_aux=MULTISCALE_AUX_WEIGHT)
            prob = torch.softmax(logits.flip(-1) if flip else logits, dim=1)
            total = prob if total is None else total + prob
    return torch.log(total / (2 * len(MULTISCALE_SCALES)))
