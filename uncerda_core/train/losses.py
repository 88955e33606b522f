"""Losses of the training stages: segmentation, adversarial, and the variance-rectified losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uncerda_core.data.labels import IGNORE
from uncerda_core.models.deeplab import logits_to_input

# Discriminator targets (the reference code's convention): source 0, target 1.
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def upsample(logits: torch.Tensor, size: tuple[int, int], stride: int | None = None) -> torch.Tensor:
    """(B, C, h, w) logits at output stride ``stride`` placed on the (H, W) input pixels
    (:func:`uncerda_core.models.deeplab.logits_to_input`: cell ``j`` on pixel ``stride * j``).

    Logits already at (H, W) are returned as they are; any other size needs the
    network's ``stride`` (``ValueError`` without it: a guessed grid would be
    silently misaligned).
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    if stride is None:
        raise ValueError(f"resizing {tuple(logits.shape[-2:])} logits to {tuple(size)} needs the network's "
                         "output stride")
    return logits_to_input(logits, size, stride)


def focal_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Focal loss [17] (Lin et al., ICCV 2017), ``-(1 - p_t)^gamma log p_t`` per labelled pixel, averaged
    over the labelled pixels; p_t is the softmax probability of the pixel's class. gamma 0 is the
    cross-entropy; 255 is ignored (0/0 when every pixel is: the caller guards it)."""
    ce = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    focal = (1.0 - torch.exp(-ce)).pow(gamma) * ce
    labelled = labels != IGNORE
    return focal.sum() / labelled.sum()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, *, stride: int | None = None,
                      focal_gamma: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits upsampled to the labels' size (:func:`upsample`); 255 is ignored.
    ``focal_gamma > 0``: the focal loss instead (:func:`focal_cross_entropy`, Table 4's "Focal Loss" row).

    Returns 0 (with a gradient path) when every pixel is ignored.
    """
    logits = upsample(logits, labels.shape[-2:], stride)
    if focal_gamma > 0:
        mean = focal_cross_entropy(logits, labels, focal_gamma)
    else:
        mean = F.cross_entropy(logits, labels, ignore_index=IGNORE)  # 0/0 when every pixel is ignored
    # Chosen on the device: asking the host whether any pixel is labelled would wait for the GPU.
    return torch.where((labels != IGNORE).any(), mean, logits.sum() * 0.0)


def adversarial_loss(disc_logits: torch.Tensor, domain_label: float) -> torch.Tensor:
    """BCE-with-logits of every discriminator output against one domain label."""
    target = torch.full_like(disc_logits, domain_label)
    return F.binary_cross_entropy_with_logits(disc_logits, target)


def prediction_variance(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``KL(softmax(a) || softmax(b))`` summed over classes: (B, H, W)."""
    log_p = F.log_softmax(logits_a, dim=1)
    log_q = F.log_softmax(logits_b, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def memory_regularisation(main_logits: torch.Tensor, aux_logits: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """MRNet's memory regularisation in vivo (Zheng and Yang, IJCAI 2020), on unlabelled target pixels.

    ``m = softmax(main + aux_weight * aux)``, the two heads' fused prediction, is held constant (no
    gradient) and each head is pulled towards it: ``mean_pixels[KL(m || softmax(main)) + KL(m || softmax(aux))]``
    with each KL summed over classes, the mean over every pixel of the (B, C, H, W) logits. Two heads that
    agree give 0. The fused prediction is the one the heads are read by at test time, so the term asks
    each head to remember it.
    """
    fused = (main_logits + aux_weight * aux_logits).detach()
    return (prediction_variance(fused, main_logits) + prediction_variance(fused, aux_logits)).mean()


def rectified_loss_single(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor, *,
                          stride: int | None = None) -> torch.Tensor:
    """``mean(CE(a, y) * exp(-var)) + mean(var)`` over the labelled pixels, var = KL(a || b).

    The uncertainty-rectified loss used for self-training (the paper's
    "variance restraint"): pixels where the two heads disagree get a smaller
    cross-entropy weight, and the disagreement itself is penalised. Pixels
    labelled 255 take part in neither mean. Logits are first upsampled to the
    labels (:func:`upsample`, at output stride ``stride``).
    """
    size = labels.shape[-2:]
    logits_a = upsample(logits_a, size, stride)
    logits_b = upsample(logits_b, size, stride)
    valid = labels != IGNORE
    if not bool(valid.any()):
        return logits_a.sum() * 0.0
    ce = F.cross_entropy(logits_a, labels, ignore_index=IGNORE, reduction="none")
    var = prediction_variance(logits_a, logits_b)
    return (ce * torch.exp(-var))[valid].mean() + var[valid].mean()


def rectified_loss(main_logits: torch.Tensor, aux_logits: torch.Tensor, labels: torch.Tensor,
                   lambda_aux: float, *, stride: int | None = None) -> torch.Tensor:
    """The main head's rectified loss plus ``lambda_aux`` times the aux head's (heads swapped)."""
    return (rectified_loss_single(main_logits, aux_logits, labels, stride=stride)
            + lambda_aux * rectified_loss_single(aux_logits, main_logits, labels, stride=stride))


# A class covering less than this fraction of a batch's pixels counts as small under class balancing
# (Seg-Uncertainty's 64x64 pixels per 512x256 crop, written as a fraction so that it follows the crop).
SMALL_CLASS_FRACTION = 1.0 / 32.0


def small_class_weights(labels: torch.Tensor, num_classes: int, max_weight: float,
                        fraction: float = SMALL_CLASS_FRACTION) -> torch.Tensor:
    """Cross-entropy class weights (C,): ``max_weight`` for a class with fewer than
    ``fraction * labels.numel()`` pixels in the batch (ignored pixels count in the
    total, as in the reference), 1 for the others. Computed on the labels' device
    without a host round trip.
    """
    flat = labels.reshape(-1)
    index = torch.where((flat >= 0) & (flat < num_classes), flat, torch.full_like(flat, num_classes))
    counts = torch.zeros(num_classes + 1, device=labels.device, dtype=torch.float32)
    counts.scatter_add_(0, index, torch.ones_like(flat, dtype=torch.float32))
    small = counts[:num_classes] < fraction * flat.numel()
    return torch.where(small, torch.full_like(small, max_weight, dtype=torch.float32),
                       torch.ones_like(small, dtype=torch.float32))


def rectified_loss_all_pixels(logits: torch.Tensor, other: torch.Tensor, labels: torch.Tensor,
                              class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """One head's rectified loss as Seg-Uncertainty computes it.

    ``var = KL(softmax(other) || softmax(logits))`` per pixel (summed over classes),
    ``loss = mean(w_y * CE(logits, y) * exp(-var)) + mean(var)``, both means over ALL
    pixels: a pixel labelled 255 adds 0 to the first sum but still counts in both
    denominators and still carries its variance term. ``class_weight`` (C,) scales
    each pixel's cross-entropy by its label's weight (no renormalisation).
    Inputs are already at the labels' size.
    """
    ce = F.cross_entropy(logits, labels, weight=class_weight, ignore_index=IGNORE, reduction="none")
    var = prediction_variance(other, logits)
    return (ce * torch.exp(-var)).mean() + var.mean()


def rectified_loss_seguncertainty(main_logits: torch.Tensor, aux_logits: torch.Tensor, labels: torch.Tensor,
                                  lambda_aux: float, class_weight: torch.Tensor | None = None, *,
                                  stride: int | None = None) -> torch.Tensor:
    """``L(main; var = KL(aux || main)) + lambda_aux * L(aux; var = KL(main || aux))``
    with :func:`rectified_loss_all_pixels` (logits upsampled to the labels first, :func:`upsample`)."""
    size = labels.shape[-2:]
    main_logits, aux_logits = upsample(main_logits, size, stride), upsample(aux_logits, size, stride)
    return (rectified_loss_all_pixels(main_logits, aux_logits, labels, class_weight)
            + lambda_aux * rectified_loss_all_pixels(aux_logits, main_logits, labels, class_weight))
