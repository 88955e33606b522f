"""Online self-training's pieces (train/online.py) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uncerda_core.pseudo.gmm import GMMFit
from uncerda_core.train import online
from uncerda_core.uncertainty.codes import N_CODES, ONE_CODE, code_values


def test_ema_decay_starts_as_a_copy_and_rises_to_alpha():
    assert [online.ema_decay(i, 0.99) for i in (0, 1, 3, 9)] == [0.0, 0.5, 0.75, 0.9]
    assert online.ema_decay(10_000, 0.99) == 0.99


def test_ema_update_by_hand():
    teacher, student = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.running_mean.fill_(7.0)
    online.ema_update(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.full((2,), 1.5))        # 0.75 * 1 + 0.25 * 3
    assert torch.equal(teacher.running_mean, student.running_mean)      # buffers copied
    online.ema_update(teacher, student, 0.0)
    assert torch.equal(teacher.weight, student.weight)


def test_classmix_pastes_half_the_classes_of_each_source_image_rounded_up():
    labels = torch.tensor([[[0, 2, 5], [5, 255, 2]],       # classes 0, 2, 5 (and unlabelled): 2 chosen
                           [[4, 4, 4], [4, 4, 255]],       # one class: it is chosen
                           [[255, 255, 255], [255, 255, 255]]])
    masks = online.classmix_masks(labels, torch.Generator().manual_seed(0))
    chosen = set(labels[0][masks[0]].tolist())
    assert len(chosen) == 2 and chosen <= {0, 2, 5}
    assert torch.equal(masks[0], torch.isin(labels[0], torch.tensor(sorted(chosen))))
    assert torch.equal(masks[1], labels[1] == 4) and not masks[2].any()
    again = online.classmix_masks(labels, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)                                    # the generator decides
    source, target = torch.ones(3, 3, 2, 3), torch.zeros(3, 3, 2, 3)
    mixed = online.mix(masks, source, target)
    assert torch.equal(mixed[:, 0], masks.float()) and torch.equal(online.mix(masks, labels, labels * 0), labels * masks)


def test_confidence_weights_are_the_batch_share_above_the_threshold():
    max_prob = torch.tensor([[[0.99, 0.5]], [[0.97, 0.968]]])          # 3 of 4 reach 0.968
    assert torch.equal(online.confidence_weights(max_prob, 0.968), torch.full((2, 1, 2), 0.75))


def test_posterior_table_by_hand_and_never_rising_with_the_entropy():
    fit = GMMFit(weights=np.array([0.5, 0.5]), means=np.array([0.1, 0.6]), stds=np.array([0.1, 0.1]),
                 log_likelihood=0.0, n_iter=1, converged=True)
    values = np.array([0.0, 0.1, 0.35, 0.6, 0.9])
    table = online.posterior_table(fit, values)
    # equal weights and widths: the posterior at x is 1 / (1 + exp(((x - 0.1)^2 - (x - 0.6)^2) / 0.02))
    expected = [1 / (1 + math.exp(((x - 0.1) ** 2 - (x - 0.6) ** 2) / 0.02)) for x in values[:4]]
    np.testing.assert_allclose(table[:4], expected, rtol=1e-9)
    assert table[2] == pytest.approx(0.5) and table[4] == 0.0           # midpoint; above the uncertain mean
    # a narrow certain component: the plain posterior falls again near 0; the table does not
    narrow = GMMFit(np.array([0.5, 0.5]), np.array([0.2, 0.6]), np.array([0.02, 0.3]), 0.0, 1, True)
    grid = np.linspace(0, 0.6, 61)
    t = online.posterior_table(narrow, grid)
    assert np.all(np.diff(t) <= 0) and t[0] == t[:25].max()


def test_entropy_record_keeps_each_classes_last_values_and_refits():
    record = online.EntropyRecord(num_classes=3, size=4, per_step=10)
    gen = torch.Generator().manual_seed(0)
    record.push(np.array([0, 0, 0, 1]), np.array([10, 11, 12, 99]), gen)
    record.push(np.array([0, 0]), np.array([13, 14]), gen)             # class 0's ring wraps: 11..14 kept
    assert sorted(np.flatnonzero(record.histogram(0))) == [11, 12, 13, 14]
    assert record.histogram(1)[99] == 1 and record.histogram(2).sum() == 0
    small = online.EntropyRecord(1, 100, per_step=3)
    small.push(np.zeros(50, dtype=int), np.arange(50), gen)             # at most per_step values a batch
    assert small.histogram(0).sum() == 3
    copy = online.EntropyRecord(3, 4, 10)
    copy.load_state_dict(record.state_dict())
    assert np.array_equal(copy.codes, record.codes) and np.array_equal(copy.filled, record.filled)


def test_weight_tables_trust_the_certain_mode_and_nothing_without_evidence():
    values = code_values()
    rng = np.random.default_rng(1)
    certain = rng.normal(0.1, 0.03, 3000).clip(0, 1)
    uncertain = rng.normal(0.7, 0.05, 1000).clip(0, 1)
    codes = np.concatenate([certain, uncertain]).astype(np.float16).view(np.uint16)
    record = online.EntropyRecord(num_classes=3, size=5000, per_step=5000)
    gen = torch.Generator().manual_seed(2)
    record.push(np.zeros(codes.size, dtype=int), codes, gen)
    record.push(np.ones(5, dtype=int), np.full(5, 100), gen)            # class 1: too few values
    record.push(np.full(50, 2), np.full(50, 200), gen)                  # class 2: one value
    tables = online.fit_weight_tables(record.histograms(), min_pixels=20)
    assert tables.shape == (3, N_CODES)
    low, high = np.searchsorted(values, 0.1), np.searchsorted(values, 0.7)
    assert tables[0, low] > 0.99 and tables[0, high] < 0.01
    assert not tables[1].any() and (tables[2] == 1.0).all()
    pred = torch.tensor([[[0, 0, 1, 2]]])
    ent = torch.tensor([[[low, high, 5, 7]]])
    weights = online.gmm_pixel_weights(torch.from_numpy(tables), pred, ent)
    assert weights[0, 0, 0] > 0.99 and weights[0, 0, 1] < 0.01 and weights[0, 0, 2] == 0 and weights[0, 0, 3] == 1


def test_entropy_codes_match_the_offline_quantisation():
    uniform = torch.full((1, 4, 1, 1), 0.25)
    one_hot = torch.tensor([1.0, 0, 0, 0]).reshape(1, 4, 1, 1)
    assert online.entropy_codes(uniform).item() == ONE_CODE and online.entropy_codes(one_hot).item() == 0
    p = torch.tensor([0.7, 0.2, 0.1, 0.0]).reshape(1, 4, 1, 1)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(4)
    assert online.entropy_codes(p).item() == int(np.float16(h).view(np.uint16))


def test_weighted_cross_entropy_averages_over_every_pixel():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])             # (1, 2 classes, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    weights = torch.tensor([[[0.5, 1.0]]])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert online.weighted_cross_entropy(logits, labels, weights).item() == pytest.approx(0.5 * ce0 / 2, rel=1e-6)


def test_strong_augment_draws_once_and_keeps_the_range():
    assert [online.kernel_size(s) for s in (512, 510, 64, 5)] == [51, 51, 7, 1]
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    same = online.strong_augment(images, torch.Generator().manual_seed(1), 0.25, 0.0, 0.0, (0.15, 1.15))
    assert torch.allclose(same, images, atol=1e-4)
    changed = online.strong_augment(images, torch.Generator().manual_seed(1), 0.25, 1.0, 1.0, (0.15, 1.15))
    assert not torch.allclose(changed, images) and changed.min() >= 0 and changed.max() <= 255
    again = online.strong_augment(images, torch.Generator().manual_seed(1), 0.25, 1.0, 1.0, (0.15, 1.15))
    assert torch.equal(changed, again)


def test_mic_masks_keep_blocks_whole_and_mask_about_the_ratio():
    gen = torch.Generator().manual_seed(0)
    assert online.mic_masks((2, 8, 12), 4, 0.0, gen).min() == 1          # ratio 0: nothing masked
    assert online.mic_masks((2, 8, 12), 4, 1.0, gen).max() == 0          # ratio 1: everything masked
    masks = online.mic_masks((1, 64, 64), 4, 0.7, torch.Generator().manual_seed(3))
    assert masks.shape == (1, 1, 64, 64)
    blocks = masks[0, 0].reshape(16, 4, 16, 4)                          # each 4x4 block is all kept or all masked
    assert torch.equal(blocks.amin(dim=(1, 3)), blocks.amax(dim=(1, 3)))
    assert 0.6 < 1 - masks.mean().item() < 0.8                          # 256 blocks, about 70 % masked
    teacher = online.OnlineTeacher(torch.nn.Conv2d(3, 2, 1), {"pixel_weights": "confidence", "jitter": 0.25,
                                                             "jitter_p": 0.0, "blur_p": 0.0, "blur_sigma": [0.15, 1.15],
                                                             "mic_block": 4, "mic_ratio": 0.7}, 2, seed=0)
    images = torch.full((1, 3, 16, 16), 200.0)
    masked = teacher.masked(images, lambda x: x / 100.0 - 1.0)         # normalised: 1.0; masked blocks: 0
    assert set(masked.unique().tolist()) <= {0.0, 1.0} and (masked == 0).any()
