"""Loading foreign state dicts: key formats of DeepLab init, ADVENT/AdaptSegNet, our own; refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from uncerda_core.artifacts import UncerdaError
from uncerda_core.models import deeplabv2_resnet101, deeplabv2_small, load_state, map_key

torch.set_num_threads(1)

NUM_CLASSES = 5


class Opaque:
    """Arbitrary picklable object: weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.payload = torch.zeros(2)


def small(**kw):
    kw.setdefault("num_classes", NUM_CLASSES)
    return deeplabv2_small(width=8, **kw)


def to_advent(key: str) -> str:
    """Our key -> AdaptSegNet / ADVENT key (written independently of weights.PREFIX_MAP)."""
    key = re.sub(r"^backbone\.", "", key)
    key = re.sub(r"^head_aux\.branches\.", "layer5.conv2d_list.", key)
    return re.sub(r"^head_main\.branches\.", "layer6.conv2d_list.", key)


def to_deeplab_init(key: str) -> str | None:
    """Our key -> DeepLab init key; the init file has no aux head."""
    if key.startswith("head_aux."):
        return None
    key = re.sub(r"^head_main\.branches\.", "layer5.conv2d_list.", key)
    return "Scale." + re.sub(r"^backbone\.", "", key)


def random_state(model, skip_counters: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items() if not (skip_counters and k.endswith("num_batches_tracked"))}


def n_counters(model) -> int:
    return sum(k.endswith("num_batches_tracked") for k in model.state_dict())


def test_map_key_table():
    assert map_key("Scale.conv1.weight") == "backbone.conv1.weight"
    assert map_key("Scale.layer1.0.downsample.1.running_mean") == "backbone.layer1.0.downsample.1.running_mean"
    assert map_key("Scale.layer5.conv2d_list.3.bias") == "head_main.branches.3.bias"
    assert map_key("layer4.2.conv3.weight") == "backbone.layer4.2.conv3.weight"
    assert map_key("bn1.running_var") == "backbone.bn1.running_var"
    assert map_key("layer5.conv2d_list.0.weight") == "head_aux.branches.0.weight"
    assert map_key("module.layer6.conv2d_list.1.weight") == "head_main.branches.1.weight"
    assert map_key("module.module.head_aux.branches.2.bias") == "head_aux.branches.2.bias"
    assert map_key("fc.weight") is None


@pytest.mark.parametrize("fmt", ["advent", "advent_module", "own_model", "own_state_dict", "own_plain", "own_counters"])
def test_formats_land_in_place(tmp_path, fmt):
    source = small()
    state = random_state(source, skip_counters=fmt != "own_counters")
    if fmt.startswith("advent"):
        prefix = "module." if fmt == "advent_module" else ""
        saved = {prefix + to_advent(k): v for k, v in state.items()}
    elif fmt == "own_model":
        saved = {"model": state, "optimizer": {"lr": torch.tensor(0.1)}, "iteration": 12}
    elif fmt == "own_state_dict":
        saved = {"state_dict": state}
    else:
        saved = state
    path = tmp_path / "w.pth"
    torch.save(saved, path)

    target = small()
    report = load_state(target, path)
    got = target.state_dict()
    for k, v in state.items():
        assert torch.equal(got[k], v), k
    assert len(report.matched) == len(state) == len(got) - (0 if fmt == "own_counters" else n_counters(target))
    assert (report.missing, report.unexpected, report.skipped_shape) == ([], [], [])
    assert str(path) in report.summary() and f"{len(state)} matched" in report.summary()


def test_deeplab_init_format_skips_coco_classifier(tmp_path):
    source = deeplabv2_small(num_classes=21, width=8)  # COCO-sized classifier on layer4
    state = random_state(source)
    saved = {to_deeplab_init(k): v for k, v in state.items() if to_deeplab_init(k)}
    saved["Scale.fc.weight"] = torch.zeros(3, 3)
    path = tmp_path / "DeepLab_resnet_pretrained_init.pth"
    torch.save(saved, path)

    target = small()
    init_heads = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("head_")}
    report = load_state(target, path)
    got = target.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    for k in backbone:
        assert torch.equal(got[k], state[k]), k
    for k, v in init_heads.items():  # heads untouched
        assert torch.equal(got[k], v), k
    assert sorted(report.matched) == sorted(backbone)
    assert sorted(report.skipped_shape) == sorted(f"head_main.branches.{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    assert sorted(report.missing) == sorted(f"head_aux.branches.{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    assert report.unexpected == ["Scale.fc.weight"]
    summary = report.summary()
    assert "8 skipped (shape)" in summary and "8 missing" in summary and "1 unexpected" in summary
    assert "(file (21, 128, 3, 3), model (5, 128, 3, 3))" in summary


def test_resnet101_loads_deeplab_init_keys_in_memory():
    from uncerda_core.models.weights import load_state_dict_into

    model = deeplabv2_resnet101(num_classes=19)
    ours = model.state_dict()
    # only a few tensors need values: the key set decides the mapping
    fake = {to_deeplab_init(k): torch.full_like(v, 0.5) if v.is_floating_point() else v
            for k, v in ours.items() if to_deeplab_init(k) and not k.endswith("num_batches_tracked")}
    fake["Scale.layer5.conv2d_list.0.weight"] = torch.zeros(21, 2048, 3, 3)
    report = load_state_dict_into(model, fake, "init")
    backbone = [k for k in ours if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    assert len(report.matched) == len(backbone) + 7  # 3 weights + 4 biases of head_main fit
    assert report.skipped_shape == ["head_main.branches.0.weight"]
    assert torch.equal(model.backbone.layer3[22].conv2.weight, torch.full((256, 256, 3, 3), 0.5))


def test_other_architecture_is_refused(tmp_path):
    path = tmp_path / "small.pth"
    torch.save({"model": small().state_dict()}, path)
    # a few 1-D BatchNorm tensors coincide in shape by chance; the backbone as a whole does not
    with pytest.raises(UncerdaError, match=r"small\.pth: only \d+ of the model's 520 backbone tensors") as err:
        load_state(deeplabv2_resnet101(num_classes=NUM_CLASSES), path)
    assert "another architecture" in str(err.value) and "wrong shape" in str(err.value)

    heads_only = {k: v for k, v in small(num_classes=3).state_dict().items() if k.startswith("head_")}
    torch.save(heads_only, tmp_path / "heads.pth")
    with pytest.raises(UncerdaError, match="no tensor fits"):
        load_state(small(), tmp_path / "heads.pth")

    # same depth, other expansion: the stem fits, most backbone tensors do not
    with pytest.raises(UncerdaError, match="backbone tensors") as err:
        load_state(small(expansion=4), path)
    assert re.search(r"\d+ wrong shape", str(err.value))

    # only the heads and the stem: backbone mostly missing
    partial = {k: v for k, v in small().state_dict().items() if k.startswith(("head_", "backbone.conv1", "backbone.bn1"))}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(UncerdaError, match=r"only 5 of the model's \d+ backbone tensors"):
        load_state(small(), tmp_path / "partial.pth")


def test_strict_shapes_off_skips_backbone_mismatch(tmp_path):
    state = random_state(small())
    state["backbone.layer4.0.conv2.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(UncerdaError, match="1 backbone tensors have other shapes"):
        load_state(small(), tmp_path / "w.pth")
    report = load_state(small(), tmp_path / "w.pth", strict_shapes=False)
    assert report.skipped_shape == ["backbone.layer4.0.conv2.weight"]
    assert len(report.matched) == len(state) - 1


@pytest.mark.parametrize("obj,match", [
    ([1, 2, 3], "expected a state dict"),
    ({"a": 1, "b": torch.zeros(1)}, "not named tensors"),
    ({}, "expected a state dict"),
])
def test_non_state_dict_refused(tmp_path, obj, match):
    path = tmp_path / "odd.pth"
    torch.save(obj, path)
    with pytest.raises(UncerdaError, match=match) as err:
        load_state(small(), path)
    assert str(path) in str(err.value)


def test_pickled_object_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": Opaque()}, path)
    with pytest.raises(UncerdaError, match="weights_only=True") as err:
        load_state(small(), path)
    assert str(path) in str(err.value)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(UncerdaError, match="not found"):
        load_state(small(), tmp_path / "absent.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(UncerdaError, match="text.pth: not a loadable weights file"):
        load_state(small(), tmp_path / "text.pth")


def test_duplicate_mapping_refused(tmp_path):
    state = random_state(small())
    state["module.backbone.conv1.weight"] = state["backbone.conv1.weight"]
    torch.save(state, tmp_path / "dup.pth")
    with pytest.raises(UncerdaError, match="both map to 'backbone.conv1.weight'"):
        load_state(small(), tmp_path / "dup.pth")


def test_import_model_writes_an_adaptsegnet_file_as_our_checkpoint(tmp_path, capsys):
    """A trained model in AdaptSegNet / ADVENT keys becomes a checkpoint every stage reads (load_model) with the
    same tensors; a file without its aux head is refused, nothing written."""
    from uncerda_core.cli import main
    from uncerda_core.config import load_config
    from uncerda_core.inference import load_model
    from uncerda_core.models import build_model
    from uncerda_core.runtime import load_checkpoint

    config = load_config(Path(__file__).resolve().parent.parent / "workflow/presets/smoke.yaml", check_paths=False)
    torch.manual_seed(3)
    trained = build_model(config["model"])
    for tensor in trained.state_dict().values():   # every tensor off its initial value
        if tensor.is_floating_point():
            tensor.add_(torch.rand_like(tensor))
    foreign = tmp_path / "GTA5_25000.pth"
    torch.save({"module." + to_advent(k): v for k, v in trained.state_dict().items()}, foreign)
    out = tmp_path / "ext" / "checkpoint.pt"
    assert main(["import-model", "--config", str(Path(__file__).resolve().parent.parent / "workflow/presets/smoke.yaml"),
                 "--weights", str(foreign), "--out", str(out)]) == 0
    state = load_checkpoint(out)
    assert state["stage"] == "import" and state["provenance"]["inputs"]["weights"]["path"].endswith("GTA5_25000.pth")
    loaded = load_model(out, torch.device("cpu"), config["model"]).state_dict()
    for key, tensor in trained.state_dict().items():
        assert torch.equal(loaded[key], tensor), key
    no_aux = tmp_path / "no_aux.pth"
    torch.save({to_advent(k): v for k, v in trained.state_dict().items() if not k.startswith("head_aux.")}, no_aux)
    refused = tmp_path / "refused" / "checkpoint.pt"
    assert main(["import-model", "--config", str(Path(__file__).resolve().parent.parent / "workflow/presets/smoke.yaml"),
                 "--weights", str(no_aux), "--out", str(refused)]) != 0
    assert re.search(r"no_aux.pth: not a whole trained model .* 8 of its tensors are missing .* head_aux",
                     capsys.readouterr().err)
    assert not refused.parent.exists() or not any(refused.parent.iterdir())
