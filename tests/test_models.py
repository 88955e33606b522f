"""DeepLab-v2 (ResNet-101 and small) and the discriminator: structure, shapes, BN freezing, inputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from torch import nn

from uncerda_core.artifacts import UncerdaError
from uncerda_core.config import complete_model_section
from uncerda_core.models import (
    FCDiscriminator,
    build_model,
    deeplabv2_resnet101,
    deeplabv2_small,
    discriminator_input,
    weighted_self_information,
)
from uncerda_core.models.deeplab import logits_to_input, output_stride_of

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def resnet101() -> nn.Module:
    torch.manual_seed(0)
    return deeplabv2_resnet101(num_classes=19).eval()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def caffe_os8_side(n: int) -> int:
    """Hand formula: conv 7x7/2 -> ceil(n/2); maxpool 3x3/2 pad 1 ceil -> ceil((n+1)/2); 1x1/2 -> ceil(n/2)."""
    n = math.ceil(n / 2)
    n = math.ceil((n + 1) / 2)
    return math.ceil(n / 2)


# ---------------------------------------------------------------- ResNet-101


def test_resnet101_parameter_count(resnet101):
    tv = torchvision.models.resnet101(weights=None)
    backbone = n_params(tv) - n_params(tv.fc)  # same convs and BNs; stride placement doesn't change counts
    # four 3x3 convs with bias per head: aux on 1024 channels, main on 2048
    heads = 4 * (1024 * 19 * 9 + 19) + 4 * (2048 * 19 * 9 + 19)
    assert backbone == 42_500_160
    assert n_params(resnet101.backbone) == backbone
    assert n_params(resnet101) == backbone + heads == 44_601_560


def test_resnet101_is_caffe_style_and_dilated(resnet101):
    bb = resnet101.backbone
    assert bb.maxpool.ceil_mode and bb.maxpool.kernel_size == 3 and bb.maxpool.padding == 1
    assert [len(bb.layer1), len(bb.layer2), len(bb.layer3), len(bb.layer4)] == [3, 4, 23, 3]
    first = bb.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    assert first.downsample[0].stride == (2, 2)
    for layer, d in ((bb.layer3, 2), (bb.layer4, 4)):
        for block in layer:
            assert block.conv1.stride == (1, 1)
            assert block.conv2.dilation == (d, d) and block.conv2.padding == (d, d)
    for head, cin in ((resnet101.head_aux, 1024), (resnet101.head_main, 2048)):
        assert [c.dilation[0] for c in head.branches] == [6, 12, 18, 24]
        assert [c.padding[0] for c in head.branches] == [6, 12, 18, 24]
        assert all(c.in_channels == cin and c.bias is not None for c in head.branches)


def test_resnet101_512x1024_gives_65x129(resnet101):
    meta = copy.deepcopy(resnet101).to("meta")
    with torch.no_grad():
        aux, main = meta(torch.zeros(1, 3, 512, 1024, device="meta"))
    assert caffe_os8_side(512) == 65 and caffe_os8_side(1024) == 129
    assert tuple(aux.shape) == tuple(main.shape) == (1, 19, 65, 129)


def test_resnet101_real_forward_odd_size(resnet101):
    with torch.no_grad():
        aux, main = resnet101(torch.randn(1, 3, 97, 161))
    assert tuple(aux.shape) == tuple(main.shape) == (1, 19, caffe_os8_side(97), caffe_os8_side(161)) == (1, 19, 13, 21)
    assert torch.isfinite(main).all()


# ---------------------------------------------------------------- small model


@pytest.mark.parametrize("output_stride,expected", [(8, (9, 17)), (4, (17, 33))])
def test_small_shapes(output_stride, expected):
    model = deeplabv2_small(num_classes=7, width=8, output_stride=output_stride)
    aux, main = model(torch.randn(2, 3, 64, 128))
    assert tuple(aux.shape) == tuple(main.shape) == (2, 7) + expected
    # expansion 2: layer3 / layer4 give 8w / 16w channels
    assert model.head_aux.branches[0].in_channels == 64 and model.head_main.branches[0].in_channels == 128


def test_small_os4_dilates_layer2_instead_of_striding():
    bb = deeplabv2_small(width=8, output_stride=4).backbone
    assert bb.layer2[0].conv1.stride == (1, 1)
    assert [bb.layer2[0].conv2.dilation[0], bb.layer3[0].conv2.dilation[0], bb.layer4[0].conv2.dilation[0]] == [2, 4, 8]
    assert deeplabv2_small(output_stride=4).settings.aspp_dilations == (2, 4, 6, 8)
    assert deeplabv2_small(output_stride=8).settings.aspp_dilations == (1, 2, 3, 4)


# ---------------------------------------------------------------- logits on the input's pixels


def test_logits_to_input_ramp_by_hand():
    cells = torch.tensor([[[[0.0, 1.0, 2.0], [10.0, 11.0, 12.0], [20.0, 21.0, 22.0]]]])   # 10 * row + column
    out = logits_to_input(cells, (9, 9), stride=4)
    assert out.shape == (1, 1, 9, 9)
    assert out[0, 0, 4, 8].item() == 12.0 and out[0, 0, 8, 4].item() == 21.0      # pixel 4j is cell j
    assert out[0, 0, 2, 0].item() == pytest.approx(5.0)                           # mean of cells 0 and 1
    assert out[0, 0, 0, 2].item() == pytest.approx(0.5)
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    torch.testing.assert_close(out[0, 0], 10 * ys / 4 + xs / 4)                   # bilinear keeps a ramp
    # 11x10 pixels: past the last centre (pixel 8) the last cell's value is kept.
    wide = logits_to_input(cells, (11, 10), stride=4)
    ys, xs = torch.meshgrid(torch.arange(11.0).clamp(max=8), torch.arange(10.0).clamp(max=8), indexing="ij")
    torch.testing.assert_close(wide[0, 0], 10 * ys / 4 + xs / 4)


@pytest.mark.parametrize("size,stride,cells", [((64, 128), 4, (17, 33)), ((512, 1024), 8, (65, 129)),
                                               ((70, 45), 8, (9, 6)), ((7, 5), 1, (7, 5))])
def test_logits_to_input_puts_every_cell_on_pixel_stride_times_j(size, stride, cells):
    logits = torch.randn((2, 3) + cells, generator=torch.Generator().manual_seed(0))
    out = logits_to_input(logits, size, stride)
    assert out.shape == (2, 3) + size
    on_centres = out[..., ::stride, ::stride]
    torch.testing.assert_close(on_centres, logits[..., :on_centres.shape[-2], :on_centres.shape[-1]],
                               rtol=0, atol=1e-5)
    if stride == 1:
        assert out is logits


def test_logits_to_input_refuses_cells_of_another_stride():
    with pytest.raises(ValueError, match=r"9x17 logit cells do not come from a 64x128 input at output stride 4"):
        logits_to_input(torch.zeros(1, 2, 9, 17), (64, 128), 4)        # output stride 8 logits
    with pytest.raises(ValueError, match="output stride 8"):
        logits_to_input(torch.zeros(1, 2, 17, 33), (64, 128), 8)


@pytest.mark.parametrize("stride,size,cells", [(4, (192, 200), (49, 51)), (8, (192, 200), (25, 26))])
def test_each_logit_cell_is_centred_on_pixel_stride_times_j(stride, size, cells):
    """The premise of logits_to_input, on the network itself: made linear with positive weights
    (ReLUs removed, the max-pool replaced by an average over the same windows), a cell's
    logit depends on exactly its receptive field, which is centred on pixel stride * j."""
    torch.manual_seed(0)
    model = deeplabv2_small(num_classes=2, width=4, output_stride=stride, aspp_dilations=(1,), aspp_branches=1)
    assert model.output_stride == stride and output_stride_of(model) == stride
    for module in list(model.modules()):
        if hasattr(module, "relu"):
            module.relu = nn.Identity()
        if isinstance(module, nn.Conv2d):
            module.weight.data.abs_()
    model.backbone.maxpool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
    model.eval()
    x = torch.zeros((1, 3) + size, requires_grad=True)
    main = model(x)[1]
    assert tuple(main.shape[-2:]) == cells
    i, j = cells[0] // 2, cells[1] // 2
    main[0, 0, i, j].backward()
    rows = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2)) > 0).flatten()
    columns = torch.nonzero(x.grad[0].abs().sum(dim=(0, 1)) > 0).flatten()
    assert rows[0] > 0 and rows[-1] < size[0] - 1 and columns[0] > 0 and columns[-1] < size[1] - 1  # inside
    assert (rows[0] + rows[-1]).item() == 2 * stride * i and (columns[0] + columns[-1]).item() == 2 * stride * j


def test_output_stride_of_unwraps_wrapped_models():
    model = deeplabv2_small(width=4, output_stride=4)

    class Wrapper(nn.Module):        # DistributedDataParallel keeps the network as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert output_stride_of(Wrapper(model)) == 4 and output_stride_of(Wrapper(Wrapper(model))) == 4
    with pytest.raises(ValueError, match="Linear has no output_stride"):
        output_stride_of(nn.Linear(2, 2))


def test_build_model_from_config():
    model = build_model({"arch": "deeplabv2_small", "num_classes": 16, "aspp_branches": 2, "bn_mode": "frozen",
                         "width": 8, "blocks": [1, 2, 1, 1], "output_stride": 4, "init": None})
    s = model.settings
    assert (s.num_classes, s.aspp_branches, s.bn_mode, s.width, s.blocks, s.output_stride) == \
        (16, 2, "frozen", 8, (1, 2, 1, 1), 4)
    # The model_config of a checkpoint written before bn_mode records freeze_bn; the schema fills the rest.
    assert build_model(complete_model_section({"arch": "deeplabv2_small", "freeze_bn": True})).settings.bn_mode == "frozen"
    assert build_model(complete_model_section({"arch": "deeplabv2_small", "freeze_bn": False})).settings.bn_mode == "train"
    small = complete_model_section({"arch": "deeplabv2_small"})
    assert (small["bn_mode"], small["width"], small["blocks"], small["output_stride"]) == ("train", 16, [1, 1, 1, 1], 8)
    assert build_model(small).settings.bn_mode == "train"
    with pytest.raises(UncerdaError, match="model.bn_mode must be one of train, train_frozen_affine, frozen"):
        build_model({**small, "bn_mode": "eval"})
    with pytest.raises(UncerdaError, match=r"ckpt\.pt: invalid model section:\n  'model.bn_mode': 'eval'"):
        complete_model_section({"arch": "deeplabv2_small", "bn_mode": "eval"}, source="ckpt.pt")
    assert len(model.backbone.layer2) == 2
    assert build_model({**small, "aspp_dilations": [1, 1, 2, 2]}).settings.aspp_dilations == (1, 1, 2, 2)
    with pytest.raises(UncerdaError, match="aspp_branches"):
        build_model({**small, "aspp_dilations": [1, 2]})
    with pytest.raises(UncerdaError, match="model.arch"):
        build_model({**small, "arch": "deeplabv3"})
    with pytest.raises(UncerdaError, match="output_stride"):
        build_model({**complete_model_section({"arch": "deeplabv2_resnet101"}), "output_stride": 4})
    # No default of its own: a section without a key the schema fills is refused, not silently completed.
    with pytest.raises(KeyError, match="num_classes"):
        build_model({"arch": "deeplabv2_small"})


# ---------------------------------------------------------------- BN, heads, param groups


def _bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("bn_mode, batch_statistics, affine_trained", [
    ("frozen", False, False), ("train_frozen_affine", True, False), ("train", True, True)])
def test_bn_modes(bn_mode, batch_statistics, affine_trained):
    torch.manual_seed(0)
    model = deeplabv2_small(width=8, bn_mode=bn_mode).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 64, 128) * 3 + 1
    aux, main = model(x)
    (aux.sum() + main.sum()).backward()
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    bns = _bn_layers(model)
    assert model.training
    assert unchanged == (not batch_statistics)     # running statistics drift only with batch statistics
    assert all(bn.training for bn in bns) == batch_statistics
    assert all(p.requires_grad and p.grad is not None for bn in bns for p in bn.parameters()) == affine_trained
    assert all(not p.requires_grad and p.grad is None for bn in bns for p in bn.parameters()) == (not affine_trained)
    # With batch statistics the stem's BN output is normalised over the batch whatever the running values.
    stem = model.backbone.bn1(model.backbone.conv1(x)).detach()
    assert (stem.mean(dim=(0, 2, 3)).abs().max() < 1e-4) == batch_statistics
    model.eval().train()  # a second train() keeps the mode
    assert all(bn.training for bn in bns) == batch_statistics


def test_aspp_two_branches_sums_only_first_two():
    torch.manual_seed(0)
    model = deeplabv2_small(width=8, aspp_branches=2).eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        f3, f4 = model.backbone(x)
        aux, main = model(x)
        br = [c(f4) for c in model.head_main.branches]
    assert torch.allclose(main, br[0] + br[1], atol=1e-6)
    assert not torch.allclose(main, br[0] + br[1] + br[2] + br[3], atol=1e-4)
    assert torch.allclose(aux, model.head_aux.branches[0](f3) + model.head_aux.branches[1](f3), atol=1e-6)
    # unused branches stay in the state dict (checkpoint compatibility) but are not trained
    assert all(not p.requires_grad for p in model.head_main.branches[2].parameters())
    four = deeplabv2_small(width=8, aspp_branches=4)
    four.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(four.eval()(x)[1], sum(br), atol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"bn_mode": "frozen"}, {"bn_mode": "train_frozen_affine"}, {"aspp_branches": 2}])
def test_param_groups_cover_trainable_params_once(kw):
    model = deeplabv2_small(width=8, **kw)
    backbone, heads = model.param_groups()
    ids_b, ids_h = [id(p) for p in backbone], [id(p) for p in heads]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(set(ids_b)) == len(ids_b) and len(set(ids_h)) == len(ids_h)
    assert not set(ids_b) & set(ids_h)
    assert set(ids_b) | set(ids_h) == trainable
    assert set(ids_h) == {id(p) for h in (model.head_aux, model.head_main) for p in h.parameters() if p.requires_grad}
    n_bn = sum(p.numel() for bn in _bn_layers(model) for p in bn.parameters())
    assert (sum(p.numel() for p in backbone) == n_params(model.backbone) - n_bn) == (kw.get("bn_mode", "train") != "train")


def test_small_trains_one_step():
    torch.manual_seed(0)
    model = deeplabv2_small(num_classes=3, width=8)
    backbone, heads = model.param_groups()
    opt = torch.optim.SGD([{"params": backbone, "lr": 0.001}, {"params": heads, "lr": 0.01}], momentum=0.9)
    x, y = torch.randn(4, 3, 64, 128), torch.randint(0, 3, (4, 9, 17))
    losses = []
    for _ in range(5):
        aux, main = model(x)
        loss = nn.functional.cross_entropy(main, y) + 0.1 * nn.functional.cross_entropy(aux, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- discriminator


def test_discriminator_input_softmax_and_entropy_hand_computed():
    # p = (1/4, 3/4): logits (0, ln 3)
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).view(1, 2, 1, 1)
    p = discriminator_input(logits, "softmax").flatten()
    assert torch.allclose(p, torch.tensor([0.25, 0.75], dtype=torch.float64))
    e = discriminator_input(logits, "entropy").flatten()
    # -p log p / log 2: 0.25 * 2 = 0.5 and 0.75 * log2(4/3) = 0.3112781...
    assert torch.allclose(e, torch.tensor([0.5, 0.75 * math.log2(4 / 3)], dtype=torch.float64))
    assert e.sum().item() == pytest.approx(0.8112781244591328)  # binary entropy of 0.25


def test_weighted_self_information_extremes():
    uniform = torch.zeros(1, 5, 2, 2)
    assert torch.allclose(weighted_self_information(uniform).sum(1), torch.ones(1, 2, 2))
    certain = torch.tensor([200.0, 0.0, 0.0]).view(1, 3, 1, 1)  # p underflows to exactly 0 for two classes
    out = weighted_self_information(certain)
    assert torch.isfinite(out).all() and out.abs().max().item() < 1e-30


def test_discriminator_input_upsamples_and_rejects_bad_mode():
    logits = torch.randn(2, 4, 9, 17)
    out = discriminator_input(logits, "softmax", size=(64, 128))
    assert tuple(out.shape) == (2, 4, 64, 128)
    assert torch.allclose(out.sum(1), torch.ones(2, 64, 128), atol=1e-6)
    # align_corners=True keeps the corner values
    assert torch.allclose(out[:, :, 0, 0], torch.softmax(logits, 1)[:, :, 0, 0], atol=1e-6)
    with pytest.raises(UncerdaError, match="mode"):
        discriminator_input(logits, "kl")


def test_discriminator_structure_and_shapes():
    d = FCDiscriminator(19, ndf=16)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(19, 16), (16, 32), (32, 64), (64, 128), (128, 1)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert [m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)] == [0.2] * 4
    assert tuple(d(torch.randn(2, 19, 64, 128)).shape) == (2, 1, 2, 4)
    assert tuple(d(torch.randn(1, 19, 32, 33)).shape) == (1, 1, 1, 1)


def test_discriminator_needs_32_pixels():
    d = FCDiscriminator(19, ndf=8)
    with pytest.raises(UncerdaError, match="upsample the logits"):
        d(torch.randn(1, 19, 9, 17))  # raw logits of a 64x128 image at output stride 8
    logits = deeplabv2_small(width=8).eval()(torch.randn(1, 3, 64, 128))[1]
    assert tuple(d(discriminator_input(logits, "entropy", size=(64, 128))).shape) == (1, 1, 2, 4)
