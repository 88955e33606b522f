"""Evaluation protocols: single scale (main head) and multi-scale + flip with aux fusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uncerda_core.artifacts import UncerdaError
from uncerda_core.data.datasets import IMAGENET_MEAN, IMAGENET_STD, ImageSettings, SegmentationDataset
from uncerda_core.evaluate.evaluate import EvalProtocol, evaluate_checkpoint, protocol_of
from uncerda_core.inference import predict_logits, predict_multiscale_flip

REPO = Path(__file__).resolve().parents[1]
WA = torch.tensor([1.0, -2.0, 0.5])     # aux logits per unit of the first input channel
WM = torch.tensor([-1.0, 0.5, 2.0])     # main logits per unit of the first input channel
RAMP = torch.tensor([0.3, 0.0, -0.4])   # main logits per column index: breaks mirror symmetry


class ToyHeads(torch.nn.Module):
    """A two-head model with logits known in closed form.

    aux[c] = WA[c] * v, main[c] = WM[c] * v + ramp[c] * column, where v is the
    first channel of the normalised input; output at the input's resolution.
    With ``ramp`` zero the model is pointwise, so mirroring the input mirrors
    the logits exactly.
    """

    output_stride = 1

    def __init__(self, ramp: torch.Tensor):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))   # gives the model a device
        self.ramp = ramp

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x[:, :1]
        columns = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, 1, -1)
        aux = v * WA.view(1, -1, 1, 1)
        main = v * WM.view(1, -1, 1, 1) + self.ramp.view(1, -1, 1, 1) * columns
        return aux, main


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _hand_fused_probabilities(red: np.ndarray, aux_weight: float) -> np.ndarray:
    """(C, W) softmax of main + aux_weight * aux for one row of red values, and the mirrored pass flipped back."""
    v = (red - IMAGENET_MEAN[0] * 255) / (IMAGENET_STD[0] * 255)
    width = len(v)
    cols = np.arange(width)
    terms = []
    for mirrored in (False, True):
        seen = v[::-1] if mirrored else v                       # what the model sees at column j
        logits = (np.outer(WM.numpy(), seen) + np.outer(RAMP.numpy(), cols)
                  + aux_weight * np.outer(WA.numpy(), seen))
        probs = _softmax(logits)
        terms.append(probs[:, ::-1] if mirrored else probs)     # flipped back to the image's columns
    return terms[0], terms[1]


def _row_image(red: list[float]) -> torch.Tensor:
    image = torch.zeros(1, 3, 1, len(red))
    image[0, 0, 0] = torch.tensor(red)
    return image


def test_fusion_matches_hand_computation():
    """Mean over views x {image, mirror} of softmax(main + w * aux), computed by hand."""
    model = ToyHeads(RAMP)
    first, second = [10.0, 200.0, 90.0, 140.0], [250.0, 0.0, 30.0, 120.0]
    got = predict_multiscale_flip(model, [_row_image(first), _row_image(second)], "imagenet",
                                  size=(1, 4), aux_weight=0.5)
    terms = [*_hand_fused_probabilities(np.array(first), 0.5), *_hand_fused_probabilities(np.array(second), 0.5)]
    expected = sum(terms) / 4
    assert got.shape == (1, 3, 1, 4)
    np.testing.assert_allclose(got[0, :, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # the aux weight enters: without it the result is another one
    without_aux = predict_multiscale_flip(model, [_row_image(first)], "imagenet", size=(1, 4), aux_weight=0.0)
    np.testing.assert_allclose(without_aux[0, :, 0].numpy(), sum(_hand_fused_probabilities(np.array(first), 0.0)) / 2,
                               rtol=1e-5, atol=1e-6)
    assert not torch.allclose(without_aux, predict_multiscale_flip(model, [_row_image(first)], "imagenet",
                                                                   size=(1, 4), aux_weight=0.5))


def test_mirror_symmetric_model_gives_the_single_view_result():
    """A model whose logits mirror with its input: flip averaging changes nothing."""
    image = torch.tensor(np.random.default_rng(0).uniform(0, 255, (1, 3, 5, 7)), dtype=torch.float32)
    symmetric = ToyHeads(torch.zeros(3))
    fused = predict_multiscale_flip(symmetric, [image], "imagenet", size=(5, 7), aux_weight=0.5)
    single = torch.softmax(predict_logits(symmetric, image, "imagenet", fuse_aux=0.5), dim=1)
    torch.testing.assert_close(fused, single)
    # the same check fails for a model that is not mirror symmetric: the flip is really taken
    ramped = ToyHeads(RAMP)
    fused = predict_multiscale_flip(ramped, [image], "imagenet", size=(5, 7), aux_weight=0.5)
    single = torch.softmax(predict_logits(ramped, image, "imagenet", fuse_aux=0.5), dim=1)
    assert (fused - single).abs().max() > 1e-3


def test_views_of_any_size_are_upsampled_to_the_label():
    model = ToyHeads(RAMP)
    views = [torch.rand(2, 3, 7, 13) * 255, torch.rand(2, 3, 9, 16) * 255]   # 13x7 at scales 1 and 1.25
    probs = predict_multiscale_flip(model, views, "caffe_bgr", size=(14, 26), aux_weight=0.5)
    assert probs.shape == (2, 3, 14, 26)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 14, 26))
    with pytest.raises(UncerdaError, match="at least one scale"):
        predict_multiscale_flip(model, [], "imagenet", size=(14, 26), aux_weight=0.5)


class SubsampledHeads(ToyHeads):
    """ToyHeads read at every ``stride``-th pixel: cell ``j`` is exactly pixel ``stride * j``
    (``ceil(H / stride)`` cells), as the network's cells are centred there."""

    def __init__(self, ramp: torch.Tensor, stride: int):
        super().__init__(ramp)
        self.output_stride = stride

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aux, main = super().forward(x)
        s = self.output_stride
        return aux[..., ::s, ::s], main[..., ::s, ::s]


def test_predict_logits_puts_each_cell_back_on_its_pixel():
    """On a ramp image a pointwise model's logits are linear in the pixel position, so placing the
    cells right gives back the full-resolution logits exactly (up to the last cell centre)."""
    rows, columns = torch.meshgrid(torch.arange(13.0), torch.arange(21.0), indexing="ij")
    image = torch.zeros(1, 3, 13, 21)
    image[0, 0] = 5 * rows + 3 * columns
    full = predict_logits(ToyHeads(torch.zeros(3)), image, "imagenet")
    got = predict_logits(SubsampledHeads(torch.zeros(3), 4), image, "imagenet")    # cells at pixels 0, 4, .., 20
    torch.testing.assert_close(got, full)
    # at 14x22 the last row and column lie past the last centre: they repeat the one before
    image = torch.nn.functional.pad(image, (0, 1, 0, 1), mode="replicate")
    torch.testing.assert_close(predict_logits(SubsampledHeads(torch.zeros(3), 4), image, "imagenet"),
                               torch.nn.functional.pad(full, (0, 1, 0, 1), mode="replicate"))
    # another output size: placed on the input's pixels, then resized as an image
    resized = predict_logits(SubsampledHeads(torch.zeros(3), 4), image[..., :13, :21], "imagenet", size=(26, 42))
    torch.testing.assert_close(resized, torch.nn.functional.interpolate(full, size=(26, 42), mode="bilinear",
                                                                        align_corners=False))


def test_multiscale_flip_flips_back_on_the_pixels_not_the_cells():
    """Width 12 at stride 4: the image's cells sit on columns 0, 4, 8, its mirror's (flipped back) on
    11, 7, 3. Each pass's probabilities are interpolated between its own centres, by hand."""
    model = SubsampledHeads(RAMP, 4)
    red = np.random.default_rng(2).uniform(0, 255, 12)
    got = predict_multiscale_flip(model, [_row_image(list(red))], "imagenet", size=(1, 12), aux_weight=0.5)
    v = (red - IMAGENET_MEAN[0] * 255) / (IMAGENET_STD[0] * 255)
    cols = np.arange(12)
    expected = np.zeros((3, 12))
    for mirrored in (False, True):
        seen = v[::-1] if mirrored else v
        centres = np.arange(0, 12, 4)                                # cell j at column 4j of what the model sees
        logits = (np.outer(WM.numpy(), seen[centres]) + np.outer(RAMP.numpy(), centres)
                  + 0.5 * np.outer(WA.numpy(), seen[centres]))
        probs = _softmax(logits)
        at = 11 - centres if mirrored else centres                   # the centres in the image's columns
        order = np.argsort(at)
        expected += np.stack([np.interp(cols, at[order], p[order]) for p in probs]) / 2
    np.testing.assert_allclose(got[0, :, 0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_scaled_input_size():
    assert ImageSettings(resize=(1024, 512), scale=1.25).input_size(2048, 1024) == (1280, 640)
    assert ImageSettings(resize=(1024, 512)).input_size(2048, 1024) == (1024, 512)
    assert ImageSettings().input_size(2048, 1024) is None                      # decoded size kept
    assert ImageSettings(scale=1.25).input_size(13, 7) == (16, 9)              # 16.25, 8.75 rounded
    assert ImageSettings(scale=0.5).input_size(13, 7) == (6, 4)                # 6.5 -> 6 (half to even), 3.5 -> 4


def test_scaled_dataset_resamples_from_the_decoded_image(tmp_path):
    from fixtures_data import random_rgb, write_rgb
    import pandas as pd
    rgb = random_rgb(np.random.default_rng(1), (40, 20))
    path = write_rgb(tmp_path / "a.png", rgb)
    table = pd.DataFrame({"name": ["a"], "image": [str(path)], "label": [""]})
    item = SegmentationDataset("cityscapes", table, ImageSettings(resize=(16, 8), scale=1.25), label_source=None)[0]
    once = np.asarray(Image.fromarray(rgb).resize((20, 10), Image.BICUBIC))       # 40x20 -> 20x10
    twice = np.asarray(Image.fromarray(rgb).resize((16, 8), Image.BICUBIC).resize((20, 10), Image.BICUBIC))
    assert item["image"].shape == (3, 10, 20)
    np.testing.assert_array_equal(item["image"].numpy().transpose(1, 2, 0), once)
    assert not np.array_equal(once, twice)


def test_protocol_from_config_and_its_record():
    single = EvalProtocol.from_config({"protocol": "single", "scales": [1.0, 1.25], "aux_weight": 0.5})
    assert single == EvalProtocol("single", (1.0,), 0.0)
    msf = EvalProtocol.from_config({"protocol": "multiscale_flip", "scales": [1.0, 1.25], "aux_weight": 0.5})
    assert msf.record() == {"name": "multiscale_flip", "scales": [1.0, 1.25], "aux_weight": 0.5,
                            "description": "scales 1, 1.25 + flip, main + 0.5 aux"}
    assert protocol_of({"protocol": msf.record()}) == "scales 1, 1.25 + flip, main + 0.5 aux"
    assert protocol_of({"miou": 0.1}) == "single scale, main head"    # metrics from before the key existed


def _demo_checkpoint(tmp_path: Path, overrides: dict) -> tuple[dict, Path, Path]:
    from fixtures_data import demo_val_setup
    from uncerda_core.models import build_model
    from uncerda_core.train.checkpoint import save_checkpoint
    config, index = demo_val_setup(tmp_path, 2, {"target": {"resize": [48, 24]}, **overrides})
    torch.manual_seed(0)
    model = build_model(config["model"])
    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "model_config": config["model"]})
    return config, ckpt, index


def test_evaluate_multiscale_flip_end_to_end(tmp_path):
    """The stage's predictions are the argmax of the fused views: scale 1.25 of 48x24 is 60x30, from the file."""
    from uncerda_core.data.index import read_index
    from uncerda_core.inference import load_model
    config, ckpt, index = _demo_checkpoint(tmp_path, {"evaluate": {"protocol": "multiscale_flip"}})
    assert config["evaluate"] == {"protocol": "multiscale_flip", "scales": [1.0, 1.25], "aux_weight": 0.5}
    result = evaluate_checkpoint(config, ckpt, index, tmp_path / "m.json", pred_dir=tmp_path / "pred", progress=False)
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["protocol"]["name"] == "multiscale_flip" and written["protocol"]["scales"] == [1.0, 1.25]
    assert written["miou"] == pytest.approx(result["miou"])
    model = load_model(ckpt, torch.device("cpu"))
    for _, row in read_index(index).iterrows():
        decoded = Image.open(row["image"]).convert("RGB")
        views = [torch.from_numpy(np.asarray(decoded.resize(size, Image.BICUBIC)).transpose(2, 0, 1).copy())
                 .float()[None] for size in ((48, 24), (60, 30))]
        probs = predict_multiscale_flip(model, views, config["train"]["normalize"], (32, 64), 0.5)
        expected = probs.argmax(dim=1)[0].numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "pred" / f"{row['name']}.png")), expected)
    single = evaluate_checkpoint({**config, "evaluate": {**config["evaluate"], "protocol": "single"}}, ckpt, index,
                                 tmp_path / "s.json", progress=False)
    assert single["protocol"] == {"name": "single", "scales": [1.0], "aux_weight": 0.0,
                                  "description": "single scale, main head"}


def _metrics(path: Path, miou: float, protocol: EvalProtocol | None) -> Path:
    from uncerda_core.data.labels import CLASS_NAMES
    record = {"miou": miou, "per_class_iou": {name: miou for name in CLASS_NAMES}}
    if protocol is not None:
        record["protocol"] = protocol.record()
    path.write_text(json.dumps(record))
    return path


def test_tables_say_which_protocol_made_each_number(tmp_path):
    from uncerda_core.report.tables import ablation_ladder, chain_summary, pseudo_label_comparison
    msf = EvalProtocol("multiscale_flip", (1.0, 1.25), 0.5)
    single = EvalProtocol("single", (1.0,), 0.0)
    a = _metrics(tmp_path / "a.json", 0.2, None)               # written before protocols were recorded
    b = _metrics(tmp_path / "b.json", 0.3, single)
    c = _metrics(tmp_path / "c.json", 0.4, msf)
    markdown, frame = chain_summary({"Source only": a, "+AA": b}, "gta5")
    assert "Evaluation protocol: single scale, main head." in markdown
    assert frame["protocol"].tolist() == ["single scale, main head"] * 2
    markdown, frame = chain_summary({"Source only": a, "+AA": c}, "gta5")
    assert "they differ" in markdown and "- +AA: scales 1, 1.25 + flip, main + 0.5 aux" in markdown
    ladder = ablation_ladder([("Source only", "rung", 0, a), ("Source only", "rung", 1, b),
                              ("+AA", "rung", 0, c), ("+AA", "rung", 1, b)])
    assert ladder["protocol"].tolist() == ["single scale, main head",
                                           "scales 1, 1.25 + flip, main + 0.5 aux; single scale, main head"]
    methods = pseudo_label_comparison([("gmm", 0, "", c), ("gmm", 1, "", c)])
    assert methods["protocol"].tolist() == ["scales 1, 1.25 + flip, main + 0.5 aux"]


def test_table5_row_without_self_training_reports_precision_only(tmp_path):
    """CBST at the GMM's coverage is compared on its labels only: no mIoU, its seeds still counted."""
    import json as _json
    from uncerda_core.report.tables import pseudo_label_comparison
    quality = []
    for seed, (p, c) in enumerate([(0.8, 0.4), (0.7, 0.5)]):
        q = tmp_path / f"q{seed}.json"
        q.write_text(_json.dumps({"precision": p, "coverage": c}))
        quality.append(q)
    df = pseudo_label_comparison([("cbst at gmm's coverage", 0, str(quality[0]), ""),
                                  ("cbst at gmm's coverage", 1, str(quality[1]), "")])
    row = df.iloc[0]
    assert row["precision_mean"] == pytest.approx(0.75) and row["coverage_mean"] == pytest.approx(0.45)
    assert row["n_seeds"] == 2 and row["miou_mean"] != row["miou_mean"]  # NaN: not self-trained
