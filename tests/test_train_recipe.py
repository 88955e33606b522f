"""The reference training recipe's keys: the poly horizon, the backbone learning-rate
multiplier, BatchNorm modes, the Seg-Uncertainty self-training options, the deferred
finiteness check, and the ResNet-101 preset model training from a DeepLab init.

Smoke-size runs on the CPU (the generated data of test_train.py).
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from test_train import _train, data  # noqa: F401  (module fixture: generated data and a smoke config)
from uncerda_core.artifacts import UncerdaError
from uncerda_core.config import load_config, validate_config
from uncerda_core.data.index import read_index
from uncerda_core.models import build_model
from uncerda_core.runtime import load_checkpoint
from uncerda_core.train import losses
from uncerda_core.train.checkpoint import resume_path
from uncerda_core.train.loop import NonFiniteLoss, build_optimizer, stage_settings

REPO = Path(__file__).resolve().parent.parent


def _config(data, **sections) -> dict:
    config = copy.deepcopy(data["config"])
    for section, values in sections.items():
        config[section].update(values)
    return config


def _losses(out: Path) -> pd.DataFrame:
    return pd.read_csv(out.with_name("losses.csv"))


# ---------------------------------------------------------------- schedule and learning rates


def test_poly_horizon_decouples_the_decay_from_the_stage_length(data):
    lr = data["config"]["train"]["lr"]
    runs = {}
    for horizon in (None, 60):
        out = data["root"] / f"horizon_{horizon}" / "checkpoint.pt"
        _train(data, "source_only", out, config=_config(data, train={"poly_horizon": horizon}))
        runs[horizon] = _losses(out)["lr"].tolist()
    # The rate logged at iteration k is the one used there: k - 1 decay steps taken.
    assert runs[None] == pytest.approx([lr * (1 - k / 6) ** 0.9 for k in range(6)], rel=1e-12)
    assert runs[60] == pytest.approx([lr * (1 - k / 60) ** 0.9 for k in range(6)], rel=1e-12)
    assert runs[60][-1] > 0.9 * lr > runs[None][-1]


def test_poly_horizon_shorter_than_a_stage_is_refused(data):
    config = _config(data, train={"poly_horizon": 5})
    assert stage_settings(config, "aa").horizon == 5              # 5 iterations: fits
    with pytest.raises(UncerdaError, match=r"train.poly_horizon \(5\) is shorter than stage source_only's 6"):
        stage_settings(config, "source_only")


def test_backbone_lr_mult_scales_only_the_backbone_group(data):
    out = data["root"] / "mult" / "checkpoint.pt"
    config = _config(data, train={"backbone_lr_mult": 3.0, "head_lr_mult": 10.0})
    _train(data, "source_only", out, config=config)
    groups = load_checkpoint(out)["optimizers"]["model"]["param_groups"]
    lr, factor = config["train"]["lr"], (1 - 6 / 6) ** 0.9
    assert [g["initial_lr"] for g in groups] == pytest.approx([3.0 * lr, 10.0 * lr])
    assert [g["lr"] for g in groups] == pytest.approx([3.0 * lr * factor, 10.0 * lr * factor])
    assert _losses(out)["lr"].iloc[0] == pytest.approx(3.0 * lr)    # the column is the backbone's rate


def test_adamw_option_builds_adamw_with_both_groups_and_trains(data, capsys):
    config = _config(data, train={"optimizer": "adamw", "adam_betas": [0.8, 0.95], "backbone_lr_mult": 3.0})
    train = config["train"]
    lr, head_mult = train["lr"], train["head_lr_mult"]
    model = build_model(config["model"])
    backbone, heads = model.param_groups()
    opt = build_optimizer((backbone, heads), train)
    assert type(opt) is torch.optim.AdamW
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([3.0 * lr, head_mult * lr])
    assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [[id(p) for p in backbone],
                                                                        [id(p) for p in heads]]
    assert all(g["betas"] == (0.8, 0.95) and g["weight_decay"] == train["weight_decay"] for g in opt.param_groups)
    sgd_config = _config(data, train={"optimizer": "sgd"})
    sgd = build_optimizer((backbone, heads), sgd_config["train"])
    assert type(sgd) is torch.optim.SGD
    assert sgd.param_groups[0]["momentum"] == sgd_config["train"]["momentum"]
    # Training with it: a resume file written under SGD is not taken (the settings digest covers the key),
    # the poly schedule scales AdamW's rates, and the losses stay finite.
    out = data["root"] / "adamw" / "checkpoint.pt"
    _train(data, "source_only", out, config=sgd_config, stop_after=2)
    capsys.readouterr()
    _train(data, "source_only", out, config=config)
    assert "written with other settings: starting over" in capsys.readouterr().err
    table = _losses(out)
    assert np.isfinite(table["seg"]).all() and np.isfinite(table["total"]).all()
    assert table["lr"].tolist() == pytest.approx([3.0 * lr * (1 - k / 6) ** 0.9 for k in range(6)], rel=1e-12)
    state = load_checkpoint(out)["optimizers"]["model"]
    assert [tuple(g["betas"]) for g in state["param_groups"]] == [(0.8, 0.95)] * 2
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(state["state"].values())))


@pytest.mark.parametrize("train,message", [({"optimizer": "adam"}, r"'train.optimizer': 'adam' is not one of"),
                                           ({"adam_betas": [0.9, 1.0]}, r"'train.adam_betas.1': 1.0 is greater than or"),
                                           ({"adam_betas": [0.9]}, r"'train.adam_betas': \[0.9\] is too short")])
def test_optimizer_keys_are_checked_by_the_schema(train, message):
    with pytest.raises(UncerdaError, match=message):
        validate_config({"train": train})


def test_sgd_with_a_tensor_listed_three_times_moves_it_three_times_as_far():
    """Why backbone_lr_mult 3 matches the reference: listing a tensor 3 times in one SGD group with
    momentum (one shared buffer) converges to 3 times the step of listing it once."""
    steps = {}
    for listed in (1, 3):
        p = torch.nn.Parameter(torch.zeros(1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # PyTorch warns about the duplicates
            opt = torch.optim.SGD([{"params": [p] * listed}], lr=0.01, momentum=0.9, foreach=False)
        for _ in range(200):
            opt.zero_grad()
            p.grad = torch.ones(1)
            before = p.detach().clone()
            opt.step()
        steps[listed] = float(before - p.detach())
    assert steps[3] / steps[1] == pytest.approx(3.0, rel=1e-3)


# ---------------------------------------------------------------- BatchNorm through training


def test_train_frozen_affine_keeps_affine_and_moves_running_statistics(data):
    out = data["root"] / "bn_tfa" / "checkpoint.pt"
    config = _config(data, model={"bn_mode": "train_frozen_affine"})
    _train(data, "source_only", out, config=config)
    trained = load_checkpoint(out)["model"]
    torch.manual_seed(0)
    fresh = build_model(config["model"]).state_dict()
    bn_affine = [k for k in trained if k.startswith("backbone") and "bn" in k and k.endswith(("weight", "bias"))]
    running = [k for k in trained if k.endswith("running_mean")]
    assert bn_affine and running
    assert all(torch.equal(trained[k], fresh[k]) for k in bn_affine)          # affine frozen (ones, zeros)
    assert all(not torch.equal(trained[k], fresh[k]) for k in running)        # batch statistics drifted in
    conv = "backbone.layer1.0.conv1.weight"
    assert not torch.equal(trained[conv], fresh[conv])


def test_freeze_bn_in_a_config_names_its_replacement(tmp_path):
    import yaml
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": {"freeze_bn": True}}))
    with pytest.raises(UncerdaError, match=r"old.yaml: model.freeze_bn was replaced by model.bn_mode; "
                                           r"write bn_mode: frozen for freeze_bn: true"):
        load_config(REPO / "config.yaml", path, check_paths=False)


# ---------------------------------------------------------------- self-training as Seg-Uncertainty


@pytest.fixture(scope="module")
def pseudo(data):
    """Pseudo labels for the target train images: random classes, the top rows ignored."""
    folder = data["root"] / "pseudo"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in read_index(data["target"])["name"]:
        label = rng.integers(0, 19, size=(32, 64)).astype(np.uint8)
        label[:4] = 255
        Image.fromarray(label).save(folder / f"{name}.png")
    return folder


def test_target_only_self_training_reads_no_source_batch(data, pseudo, monkeypatch):
    config = _config(data, selftrain={"iterations": 3, "loss": "rectified_seguncertainty", "lambda_aux": 0.5,
                                      "class_balanced": True, "target_only": True})
    settings = stage_settings(config, "st")
    assert settings.target_only and not settings.image_translation and settings.st_class_balanced
    seen = []
    real = losses.rectified_loss_seguncertainty

    def recording(main, aux, labels, lambda_aux, class_weight=None, *, stride=None):
        seen.append((tuple(labels.shape), lambda_aux, class_weight, stride))
        return real(main, aux, labels, lambda_aux, class_weight, stride=stride)

    monkeypatch.setattr(losses, "rectified_loss_seguncertainty", recording)
    monkeypatch.setattr(losses, "segmentation_loss", lambda *a, **k: pytest.fail("a source loss was computed"))
    out = data["root"] / "st_target_only" / "checkpoint.pt"
    _train(data, "st", out, config=config, target_index=data["target"], pseudo_dir=pseudo)
    table = _losses(out)
    assert list(table.columns) == ["iteration", "lr", "st", "total"]
    assert table["st"].tolist() == table["total"].tolist() and np.isfinite(table["st"]).all()
    # the network's output stride reaches the loss, which places the logits on the labels' pixels
    assert len(seen) == 3 and all(lam == 0.5 and stride == config["model"]["output_stride"]
                                  for _, lam, _, stride in seen)
    # Class weights from each batch: 7 for classes under 1/32 of its pixels (19 random classes: all of them
    # hold about 1/19 of the labelled 7/8, above 1/32, so most weights are 1).
    weights = torch.stack([w for _, _, w, _ in seen])
    assert set(weights.unique().tolist()) <= {1.0, 7.0} and (weights == 1.0).any()


def test_class_balanced_needs_the_seguncertainty_loss(tmp_path):
    import yaml
    path = tmp_path / "cb.yaml"
    path.write_text(yaml.safe_dump({"selftrain": {"class_balanced": True}}))
    with pytest.raises(UncerdaError, match="selftrain.class_balanced needs selftrain.loss: rectified_seguncertainty"):
        load_config(REPO / "config.yaml", path, check_paths=False)


# ---------------------------------------------------------------- the deferred finiteness check


def test_non_finite_loss_between_log_points_is_reported_with_its_iteration(data, monkeypatch):
    # 40 iterations: losses are read back every 2nd iteration, so iteration 3 is not a read-back point.
    config = _config(data, source_only={"iterations": 40})
    out = data["root"] / "nan_deferred" / "checkpoint.pt"
    real = losses.segmentation_loss
    calls = {"n": 0}

    def poisoned(logits, labels, **kwargs):
        calls["n"] += 1
        loss = real(logits, labels, **kwargs)
        return loss * math.nan if calls["n"] == 6 else loss      # the aux head at iteration 3

    monkeypatch.setattr(losses, "segmentation_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at iteration 3 \(seg_aux=nan, total=nan\)"):
        _train(data, "source_only", out, config=config)
    assert calls["n"] == 8                                        # stopped at the read-back of iteration 4
    assert load_checkpoint(resume_path(out))["iteration"] == 2     # the last good checkpoint, never a later one


# ---------------------------------------------------------------- the paper's model on the CPU


def _deeplab_init_file(path: Path, config: dict) -> None:
    """A state dict in the DeepLab init's key format (``Scale.*``, COCO classifier in ``Scale.layer5``)
    with sane BatchNorm statistics and weights at a modest (He) scale."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, tensor in build_model(config["model"]).backbone.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        name = "Scale." + key
        if key.endswith("running_var"):
            value = 1.0 + 0.1 * torch.rand(tensor.shape, generator=gen)
        elif key.endswith("running_mean"):
            value = 0.05 * torch.randn(tensor.shape, generator=gen)
        elif tensor.dim() == 1:                                   # BN affine
            value = (1.0 if key.endswith("weight") else 0.0) + 0.01 * torch.randn(tensor.shape, generator=gen)
        else:                                                     # conv: He normal over fan-in
            fan_in = tensor[0].numel()
            value = torch.randn(tensor.shape, generator=gen) * math.sqrt(2.0 / fan_in)
        state[name] = value
    for i in range(4):                                            # the COCO classifier: 21 classes, skipped
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = 0.01 * torch.randn(21, 2048, 3, 3, generator=gen)
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.zeros(21)
    torch.save(state, path)


def test_resnet101_preset_trains_one_iteration_from_a_deeplab_init(data, tmp_path, capsys):
    init = tmp_path / "DeepLab_init.pth"   # written below, from the resolved model config
    config = load_config(REPO / "workflow/presets/gta5_cityscapes.yaml", overrides={
        "device": "cpu", "threads": 1, "model": {"init": str(init)},
        "source": {"root": str(data["root"] / "source"), "resize": [130, 65], "crop": [65, 65]},
        "target": {"root": str(data["root"] / "target")},
        "train": {"num_workers": 0, "checkpoint_every": 10},
        "source_only": {"iterations": 1}}, check_paths=False)
    _deeplab_init_file(init, config)
    out = tmp_path / "r101" / "checkpoint.pt"
    _train(data, "source_only", out, config=config, init=init)
    model = build_model(config["model"])
    n_backbone = sum(not k.endswith("num_batches_tracked") for k in model.backbone.state_dict())
    # Every backbone tensor came from the init; the COCO classifier is skipped, the aux head starts fresh.
    assert f"{n_backbone} matched, 8 skipped (shape), 8 missing, 0 unexpected" in capsys.readouterr().err
    assert model.settings.output_stride == 8 and model.settings.bn_mode == "train_frozen_affine"
    assert sum(p.numel() for p in model.parameters()) == 44_601_560
    row = _losses(out).iloc[0]
    assert np.isfinite(row["seg"]) and np.isfinite(row["total"])
    # A 19-class softmax that knows nothing starts near log(19); a broken init is far off.
    assert 1.5 < row["seg"] < 6.0
    groups = load_checkpoint(out)["optimizers"]["model"]["param_groups"]
    assert groups[0]["initial_lr"] == pytest.approx(3.0 * 2.5e-4)   # the preset's backbone_lr_mult
