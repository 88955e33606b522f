"""DeepLab-v2: a Caffe-style dilated ResNet with two ASPP-style classifier heads.

The paper's network is DeepLab-v2 on ResNet-101 as in AdaptSegNet and ADVENT:

- Caffe-style bottlenecks: the stride sits in the *first* 1x1 conv, not the 3x3.
- Stem: 7x7 conv stride 2, BatchNorm, ReLU, 3x3 max-pool stride 2 padding 1 with
  ``ceil_mode=True`` (so 512x1024 -> 129x257 after the stem).
- layer3 and layer4 keep the resolution and use dilations 2 and 4 instead of
  strides: output stride 8 (a 512x1024 input gives 65x129 logits).
- Two heads (:class:`ASPPClassifier`): parallel 3x3 convs with dilations
  6, 12, 18, 24 whose outputs are summed; ``head_aux`` on layer3 (1024 channels),
  ``head_main`` on layer4 (2048 channels).

Module names are chosen so that foreign checkpoints map onto them with a few
prefix rewrites (see :mod:`uncerda_core.models.weights`): the backbone lives under
``backbone.`` with torchvision-style names (``conv1``, ``bn1``, ``layerN.i.conv1``,
``layerN.i.downsample.{0,1}``) and each head's convs are ``head_*.branches.i``.

The small variant for the CPU demo is the same architecture with a narrower stem
(``width``), fewer blocks per stage and smaller ASPP dilations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from uncerda_core.errors import UncerdaError
from uncerda_core.schema import enum

ARCHS: tuple[str, ...] = enum("model.arch")  # the schema's model.arch
# How BatchNorm behaves while training (see DeepLabV2): statistics source and trainable affine.
BN_MODES = ("train", "train_frozen_affine", "frozen")
RESNET101_BLOCKS = (3, 4, 23, 3)
PAPER_ASPP_DILATIONS = (6, 12, 18, 24)


@dataclass(frozen=True)
class DeepLabSettings:
    """Architecture of a :class:`DeepLabV2`.

    ``width`` is the stem's channel count; stage ``k`` (1..4) has bottleneck width
    ``width * 2**(k-1)`` and ``expansion`` times that many output channels
    (ResNet-101: width 64, expansion 4 -> 256, 512, 1024, 2048 channels).
    ``output_stride`` 8 dilates layer3/layer4 by 2/4; 4 also keeps layer2 at full
    resolution, with dilations 2/4/8 in layer2/3/4 so the receptive field in input
    pixels is that of the output-stride-8 network. ``aspp_dilations`` sets the number
    of head branches; only the first ``aspp_branches`` of them are summed.
    """

    num_classes: int = 19
    width: int = 64
    blocks: tuple[int, int, int, int] = RESNET101_BLOCKS
    expansion: int = 4
    output_stride: int = 8
    aspp_dilations: tuple[int, ...] = PAPER_ASPP_DILATIONS
    aspp_branches: int = 4
    bn_mode: str = "train"

    def __post_init__(self) -> None:
        if self.bn_mode not in BN_MODES:
            raise UncerdaError(f"model.bn_mode must be one of {', '.join(BN_MODES)}, got {self.bn_mode!r}")
        if self.num_classes < 2:
            raise UncerdaError(f"model.num_classes must be >= 2, got {self.num_classes}")
        if self.width < 1 or self.expansion < 1:
            raise UncerdaError(f"model.width and expansion must be >= 1, got {self.width}, {self.expansion}")
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise UncerdaError(f"model.blocks must be 4 integers >= 1, got {list(self.blocks)}")
        if self.output_stride not in (4, 8):
            raise UncerdaError(f"model.output_stride must be 4 or 8, got {self.output_stride}")
        if not self.aspp_dilations or min(self.aspp_dilations) < 1:
            raise UncerdaError(f"ASPP dilations must be positive integers, got {list(self.aspp_dilations)}")
        if not 1 <= self.aspp_branches <= len(self.aspp_dilations):
            raise UncerdaError(
                f"model.aspp_branches must be between 1 and {len(self.aspp_dilations)} "
                f"(the number of ASPP dilations), got {self.aspp_branches}")


def stage_dilations(output_stride: int) -> tuple[tuple[int, int], ...]:
    """(stride, dilation) of layer1..layer4 for an output stride of 8 or 4."""
    if output_stride == 8:
        return ((1, 1), (2, 1), (1, 2), (1, 4))
    if output_stride == 4:
        return ((1, 1), (1, 2), (1, 4), (1, 8))
    raise UncerdaError(f"output stride must be 4 or 8, got {output_stride}")


class CaffeBottleneck(nn.Module):
    """ResNet bottleneck with the stride on the first 1x1 conv (Caffe / DeepLab-v2).

    1x1 (stride) -> 3x3 (dilation, padding = dilation) -> 1x1 (x expansion), each
    followed by BatchNorm; residual sum, then ReLU. ``downsample`` is a 1x1 conv +
    BatchNorm on the shortcut when the shape changes.
    """

    def __init__(self, inplanes: int, planes: int, expansion: int = 4, stride: int = 1,
                 dilation: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        out = planes * expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNetBackbone(nn.Module):
    """Caffe-style dilated ResNet; ``forward`` returns (layer3, layer4) features."""

    def __init__(self, width: int, blocks: Sequence[int], expansion: int, output_stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        inplanes = width
        layers = []
        for k, (n, (stride, dilation)) in enumerate(zip(blocks, stage_dilations(output_stride))):
            planes = width * 2 ** k
            layer, inplanes = self._make_layer(inplanes, planes, n, expansion, stride, dilation)
            layers.append(layer)
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.channels = (width * 4 * expansion, width * 8 * expansion)  # layer3, layer4

    @staticmethod
    def _make_layer(inplanes: int, planes: int, n: int, expansion: int, stride: int,
                    dilation: int) -> tuple[nn.Sequential, int]:
        out = planes * expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        blocks = [CaffeBottleneck(inplanes, planes, expansion, stride, dilation, downsample)]
        blocks += [CaffeBottleneck(out, planes, expansion, 1, dilation) for _ in range(n - 1)]
        return nn.Sequential(*blocks), out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        f3 = self.layer3(x)
        f4 = self.layer4(f3)
        return f3, f4


class ASPPClassifier(nn.Module):
    """DeepLab-v2 classifier: parallel dilated 3x3 convs (padding = dilation, bias), summed.

    All ``len(dilations)`` branch convs exist (so foreign checkpoints load key for
    key), but only the first ``summed`` outputs are added: ``summed=2`` reproduces
    AdaptSegNet's two-branch sum; the unused branches get ``requires_grad=False``.
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int],
                 summed: int | None = None) -> None:
        super().__init__()
        self.summed = len(dilations) if summed is None else summed
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)
        for conv in self.branches[self.summed:]:
            conv.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:self.summed]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """DeepLab-v2 with an auxiliary head on layer3 and the main head on layer4.

    ``forward(x)`` takes a normalised ``(N, 3, H, W)`` batch and returns
    ``(aux_logits, main_logits)``, both ``(N, num_classes, h, w)`` at the output
    stride, not upsampled: for output stride 8, ``h = ceil(ceil(H/2)/2 ... )``, e.g.
    512x1024 -> 65x129 and 64x128 -> 9x17 (the Caffe stem rounds up). Logit cell
    ``j`` is centred on input pixel ``output_stride * j``; :func:`logits_to_input`
    puts the logits on the input's pixels accordingly.

    ``bn_mode`` says what BatchNorm does while training:

    - ``train``: batch statistics, running statistics updated, affine parameters trained
      (plain PyTorch behaviour);
    - ``train_frozen_affine``: batch statistics and updated running statistics, but the
      affine parameters have ``requires_grad=False`` (what the reference code trains
      with: with batch size 1 the running statistics drift towards the data seen);
    - ``frozen``: every BatchNorm stays in eval mode (running statistics used, never
      updated) even after ``train()``, and its affine parameters are frozen.
    """

    def __init__(self, settings: DeepLabSettings | None = None) -> None:
        super().__init__()
        s = settings or DeepLabSettings()
        self.settings = s
        self.backbone = ResNetBackbone(s.width, s.blocks, s.expansion, s.output_stride)
        c3, c4 = self.backbone.channels
        self.head_aux = ASPPClassifier(c3, s.num_classes, s.aspp_dilations, s.aspp_branches)
        self.head_main = ASPPClassifier(c4, s.num_classes, s.aspp_dilations, s.aspp_branches)
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if s.bn_mode in ("train_frozen_affine", "frozen"):
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)
        self.train()

    @property
    def output_stride(self) -> int:
        """Input pixels per logit cell (4 or 8): cell ``j`` is centred on pixel ``output_stride * j``."""
        return self.settings.output_stride

    def train(self, mode: bool = True) -> DeepLabV2:
        """Like ``nn.Module.train``, but keeps BatchNorm in eval mode under ``bn_mode: frozen``."""
        super().train(mode)
        if self.settings.bn_mode == "frozen":
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(aux_logits, main_logits)`` at the output stride (see the class docstring)."""
        f3, f4 = self.backbone(x)
        return self.head_aux(f3), self.head_main(f4)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters), trainable ones only.

        Training gives the heads ``head_lr_mult`` (10x) the backbone's learning rate.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        heads = [p for h in (self.head_aux, self.head_main) for p in h.parameters() if p.requires_grad]
        return backbone, heads


def output_stride_of(model: nn.Module) -> int:
    """The output stride of a network, also when wrapped (DDP's ``.module``, ``torch.compile``'s
    ``._orig_mod``): every caller that resizes its logits to pixels needs it."""
    while not hasattr(model, "output_stride"):
        inner = next((m for m in (getattr(model, "module", None), getattr(model, "_orig_mod", None))
                      if isinstance(m, nn.Module)), None)
        if inner is None:
            raise ValueError(f"{type(model).__name__} has no output_stride: cannot place its logits on the "
                             "input's pixels")
        model = inner
    return int(model.output_stride)


def logits_to_input(logits: Tensor, size: Sequence[int], stride: int) -> Tensor:
    """(B, C, h, w) logits at output stride ``stride``, resampled onto the pixels of an (H, W) input.

    The network's logit cell ``j`` is centred on input pixel ``stride * j``
    (7x7/2 conv, 3x3/2 ceil-mode max-pool, then strided 1x1 convs: every stage
    keeps the first sample on pixel 0). Output pixel ``y`` therefore takes the
    bilinear value at cell coordinate ``y / stride``: pixel ``stride * j`` is cell
    ``j`` exactly, pixels in between are linear blends of their two cells, and
    pixels past the last cell centre keep the last cell's value. (Plain
    ``interpolate(..., align_corners=False)`` to (H, W) would stretch the grid by
    ``h / (H / stride)``: at 64x128 and stride 4, 17x33 cells, cell 0 would land
    on pixel 1.4 and cell 16 on pixel 61.6 instead of 0 and 64.)

    The ceil-mode stem gives ``h = ceil((H - 1) / stride) + 1`` cells or one
    fewer (the last pixels then lie past the last centre); anything else means
    the stride or the size does not belong to these logits, and raises
    ``ValueError``. Stride 1 with ``(h, w) == (H, W)`` returns the logits.
    """
    height, width = (int(v) for v in size)
    h, w = logits.shape[-2:]
    if stride < 1:
        raise ValueError(f"output stride must be >= 1, got {stride}")
    need_h, need_w = -(-(height - 1) // stride) + 1, -(-(width - 1) // stride) + 1
    if not (need_h - 1 <= h <= need_h and need_w - 1 <= w <= need_w):
        raise ValueError(f"{h}x{w} logit cells do not come from a {height}x{width} input at output stride "
                         f"{stride} (expected {need_h}x{need_w} or one fewer)")
    if stride == 1 and (h, w) == (height, width):
        return logits
    pad_h, pad_w = need_h - h, need_w - w
    if pad_h or pad_w:
        logits = F.pad(logits, (0, pad_w, 0, pad_h), mode="replicate")
    # align_corners=True maps output index i to input index i * (n - 1) / (m - 1) = i / stride.
    span = (stride * (need_h - 1) + 1, stride * (need_w - 1) + 1)
    return F.interpolate(logits, size=span, mode="bilinear", align_corners=True)[..., :height, :width]


def small_aspp_dilations(output_stride: int) -> tuple[int, ...]:
    """Default ASPP dilations of the small model: (1, 2, 3, 4) at OS 8, (2, 4, 6, 8) at OS 4.

    The paper's 6..24 exceed a 9x17 feature map (128x64 input, OS 8); these keep the
    same four-branch structure within the map, and the same span in input pixels at
    either output stride.
    """
    k = 8 // output_stride
    return tuple(k * d for d in (1, 2, 3, 4))


SMALL_EXPANSION = 2


def deeplabv2_resnet101(num_classes: int = 19, aspp_branches: int = 4, bn_mode: str = "train",
                        aspp_dilations: Sequence[int] = PAPER_ASPP_DILATIONS) -> DeepLabV2:
    """The paper's DeepLab-v2 ResNet-101 (output stride 8, 44,601,560 parameters at 19 classes)."""
    return DeepLabV2(DeepLabSettings(num_classes=num_classes, width=64, blocks=RESNET101_BLOCKS,
                                     expansion=4, output_stride=8, aspp_dilations=tuple(aspp_dilations),
                                     aspp_branches=aspp_branches, bn_mode=bn_mode))


def deeplabv2_small(num_classes: int = 19, width: int = 16, blocks: Sequence[int] = (1, 1, 1, 1),
                    output_stride: int = 8, aspp_dilations: Sequence[int] | None = None,
                    aspp_branches: int = 4, bn_mode: str = "train",
                    expansion: int = SMALL_EXPANSION) -> DeepLabV2:
    """The CPU demo's DeepLab-v2: same architecture, narrow (stage widths w, 2w, 4w, 8w,
    expansion 2 by default, so layer3/layer4 give 8w/16w channels) and shallow."""
    dil = small_aspp_dilations(output_stride) if aspp_dilations is None else tuple(aspp_dilations)
    return DeepLabV2(DeepLabSettings(num_classes=num_classes, width=width, blocks=tuple(blocks),
                                     expansion=expansion, output_stride=output_stride,
                                     aspp_dilations=dil, aspp_branches=aspp_branches,
                                     bn_mode=bn_mode))


def build_model(model_cfg: dict) -> DeepLabV2:
    """Build the network from the config's ``model`` section (``init`` is left to the caller).

    Reads ``arch``, ``num_classes``, ``aspp_branches``, ``bn_mode``, ``output_stride`` and, for
    ``deeplabv2_small``, ``width`` and ``blocks``: a complete section, as the resolved config has it
    (the schema is where their defaults live; ``config.complete_model_section`` fills them into a
    section a checkpoint recorded before a key existed). Keys outside the schema, ``aspp_dilations``
    and ``expansion``, override the architecture's own values when present.
    """
    arch = model_cfg["arch"]
    common = dict(num_classes=int(model_cfg["num_classes"]), aspp_branches=int(model_cfg["aspp_branches"]),
                  bn_mode=str(model_cfg["bn_mode"]))
    dil = model_cfg.get("aspp_dilations")
    if arch == "deeplabv2_resnet101":
        if int(model_cfg["output_stride"]) != 8:
            raise UncerdaError("model.output_stride: deeplabv2_resnet101 is built at output stride 8 "
                               "(layer3/layer4 dilated 2/4); set output_stride: 8")
        return deeplabv2_resnet101(aspp_dilations=dil or PAPER_ASPP_DILATIONS, **common)
    if arch == "deeplabv2_small":
        return deeplabv2_small(width=int(model_cfg["width"]),
                               blocks=tuple(model_cfg["blocks"]),
                               output_stride=int(model_cfg["output_stride"]),
                               aspp_dilations=dil,
                               expansion=int(model_cfg.get("expansion", SMALL_EXPANSION)),
                               **common)
    raise UncerdaError(f"model.arch must be one of {', '.join(ARCHS)}, got {arch!r}")
