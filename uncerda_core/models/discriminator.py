"""The fully convolutional discriminator of AdaptSegNet / ADVENT and its input maps.

Five 4x4 convs with stride 2 and padding 1 (``C -> ndf -> 2ndf -> 4ndf -> 8ndf -> 1``),
LeakyReLU(0.2) after the first four; the output is a map of logits (BCE with logits,
source label 0, target label 1, in the trainer).

Each conv maps a side of ``n`` pixels to ``floor(n / 2)``, so five of them need at
least 32 pixels per side to leave a 1x1 output; a 9x17 logit map (128x64 input at
output stride 8) would shrink to zero. As in the reference code, the segmentation
logits are upsampled to the input image size before the discriminator: pass
``size=`` to :func:`discriminator_input`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uncerda_core.errors import UncerdaError

DiscriminatorMode = Literal["softmax", "entropy"]
MODES = ("softmax", "entropy")
N_CONVS = 5
MIN_SIDE = 2 ** N_CONVS


def softmax_map(logits: Tensor) -> Tensor:
    """Output-space input (AdaptSegNet): class probabilities ``softmax(logits)`` over dim 1."""
    return torch.softmax(logits, dim=1)


def weighted_self_information(logits: Tensor) -> Tensor:
    """Entropy-space input (ADVENT): ``-p_c * log(p_c) / log(C)`` per class ``c``.

    Summed over the class dimension this is the normalised entropy in [0, 1]. Computed
    with ``log_softmax`` so that ``p = 0`` gives exactly 0 without an epsilon.
    """
    num_classes = logits.shape[1]
    logp = torch.log_softmax(logits, dim=1)
    return -logp.exp() * logp / math.log(num_classes)


def discriminator_input(logits: Tensor, mode: DiscriminatorMode = "softmax",
                        size: tuple[int, int] | None = None) -> Tensor:
    """The map fed to the discriminator from ``(N, C, h, w)`` segmentation logits.

    ``size=(H, W)`` first upsamples the logits bilinearly (``align_corners=True``, as
    the reference code's ``nn.Upsample``) to the input image size; ``mode`` picks
    :func:`softmax_map` or :func:`weighted_self_information`.
    """
    if logits.dim() != 4:
        raise UncerdaError(f"discriminator_input expects (N, C, h, w) logits, got shape {tuple(logits.shape)}")
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
    if mode == "softmax":
        return softmax_map(logits)
    if mode == "entropy":
        return weighted_self_information(logits)
    raise UncerdaError(f"discriminator input mode must be one of {', '.join(MODES)}, got {mode!r}")


class FCDiscriminator(nn.Module):
    """AdaptSegNet's discriminator: 5 convs 4x4/2, LeakyReLU(0.2), logits out.

    ``ndf`` is the first conv's width (the config's ``adapt.disc_ndf``: 64 in the paper).
    The input must be at least 32 pixels on each side (see the module docstring).
    """

    def __init__(self, in_channels: int, ndf: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        widths = [in_channels, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(negative_slope, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, 1, H // 32, W // 32)`` logits (1 = target)."""
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise UncerdaError(
                f"discriminator input of {h}x{w} pixels is too small: five stride-2 convs need at "
                f"least {MIN_SIDE}x{MIN_SIDE}; upsample the logits to the image size first "
                f"(discriminator_input(logits, mode, size=image_size))")
        return self.net(x)

