"""Losses of the training stages: segmentation, adversarial, and the variance-rectified loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uncerda_core.data.labels import IGNORE

# Discriminator targets (the reference code's convention): source 0, target 1.
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B, C, h, w) logits to (H, W)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits upsampled to the labels' size; 255 is ignored.

    Returns 0 (with a gradient path) when every pixel is ignored.
    """
    logits = upsample(logits, labels.shape[-2:])
    valid = labels != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def adversarial_loss(disc_logits: torch.Tensor, domain_label: float) -> torch.Tensor:
    """BCE-with-logits of every discriminator output against one domain label."""
    target = torch.full_like(disc_logits, domain_label)
    return F.binary_cross_entropy_with_logits(disc_logits, target)


def prediction_variance(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``KL(softmax(a) || softmax(b))`` summed over classes: (B, H, W)."""
    log_p = F.log_softmax(logits_a, dim=1)
    log_q = F.log_softmax(logits_b, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def rectified_loss_single(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``mean(CE(a, y) * exp(-var)) + mean(var)`` over the labelled pixels, var = KL(a || b).

    The uncertainty-rectified loss used for self-training (the paper's
    "variance restraint"): pixels where the two heads disagree get a smaller
    cross-entropy weight, and the disagreement itself is penalised. Pixels
    labelled 255 take part in neither mean.
    """
    size = labels.shape[-2:]
    logits_a = upsample(logits_a, size)
    logits_b = upsample(logits_b, size)
    valid = labels != IGNORE
    if not bool(valid.any()):
        return logits_a.sum() * 0.0
    ce = F.cross_entropy(logits_a, labels, ignore_index=IGNORE, reduction="none")
    var = prediction_variance(logits_a, logits_b)
    return (ce * torch.exp(-var))[valid].mean() + var[valid].mean()


def rectified_loss(main_logits: torch.Tensor, aux_logits: torch.Tensor, labels: torch.Tensor,
                   lambda_aux: float) -> torch.Tensor:
    """The main head's rectified loss plus ``lambda_aux`` times the aux head's (heads swapped)."""
    return (rectified_loss_single(main_logits, aux_logits, labels)
            + lambda_aux * rectified_loss_single(aux_logits, main_logits, labels))
