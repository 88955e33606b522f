"""Running a trained checkpoint: shared by evaluation, the maps dump and the report."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from uncerda_core.artifacts import UncerdaError
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
    bad = non_finite_entries(state["model"])
    if bad:
        raise UncerdaError(f"{checkpoint}: non-finite weights (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[0]!r}; "
                           "the training that wrote it diverged or its input was broken: retrain it (its log "
                           "names the stage and iteration)")
    model = build_model(stored or model_config)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UncerdaError(f"{checkpoint}: weights do not fit the recorded architecture: "
                           f"{str(exc).splitlines()[0]}") from exc
    return model.to(device).eval()


def _all_finite(values: torch.Tensor) -> bool:
    """One ``aminmax`` pass: NaN propagates to both ends, +-inf shows at one (no bool temporary)."""
    if values.numel() == 0:
        return True
    low, high = torch.aminmax(values.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def non_finite_entries(state_dict: dict) -> list[str]:
    """The keys of the floating-point tensors of ``state_dict`` holding NaN or inf."""
    return [key for key, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point() and not _all_finite(value)]


def require_finite(values: torch.Tensor, source: str) -> torch.Tensor:
    """``values`` unchanged if every entry is finite; else :class:`UncerdaError` naming ``source``.

    One ``aminmax`` pass and one host sync per call: 2.4 ms for a 19 x 1024 x
    512 batch on one CPU thread, against 144 ms for ``isfinite(values).all()``
    (a bool temporary and two passes) and 146 ms for the maps computed from
    the same logits.
    """
    if not _all_finite(values):
        raise UncerdaError(f"{source}: the network produced non-finite logits (NaN or inf); its weights overflow "
                           "on these images (a diverged training?): nothing is written, retrain the model")
    return values


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, normalize_mode: str,
                   size: tuple[int, int] | None = None, fuse_aux: float = 0.0,
                   source: str = "the model") -> torch.Tensor:
    """Logits (B, C, H, W) of 0-255 RGB ``images``, upsampled bilinearly to ``size`` (default: the input's).

    Main head only, or ``main + fuse_aux * aux`` when ``fuse_aux`` > 0.
    Non-finite logits raise :class:`UncerdaError` naming ``source`` (the
    checkpoint and images), so no stage summarises them as numbers.
    """
    device = next(model.parameters()).device
    x = normalize(images.to(device, dtype=torch.float32), normalize_mode)
    aux, main = model(x)
    logits = main if fuse_aux == 0 else main + fuse_aux * aux
    size = tuple(size) if size is not None else tuple(images.shape[-2:])
    return require_finite(F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False), source)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, normalize_mode: str,
                          size: tuple[int, int] | None = None, fuse_aux: float = 0.0,
                          source: str = "the model") -> torch.Tensor:
    """Softmax of :func:`predict_logits`: probabilities (B, C, H, W)."""
    return torch.softmax(predict_logits(model, images, normalize_mode, size, fuse_aux, source), dim=1)
