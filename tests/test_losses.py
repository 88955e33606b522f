"""Losses of the training stages against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from uncerda_core.train import losses


def _softmax2(x0: float, x1: float) -> tuple[float, float]:
    z = math.exp(x0) + math.exp(x1)
    return math.exp(x0) / z, math.exp(x1) / z


def test_domain_labels():
    # The reference code's convention: source 0, target 1.
    assert losses.SOURCE_LABEL == 0.0
    assert losses.TARGET_LABEL == 1.0


def test_adversarial_loss_is_bce_with_logits_by_hand():
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])        # sigmoid: 1/2 and 3/4
    # Against label 1: mean(-log 1/2, -log 3/4).
    expected_1 = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    # Against label 0: mean(-log(1 - 1/2), -log(1 - 3/4)).
    expected_0 = (math.log(2.0) + math.log(4.0)) / 2
    assert losses.adversarial_loss(logits, losses.TARGET_LABEL).item() == pytest.approx(expected_1, rel=1e-6)
    assert losses.adversarial_loss(logits, losses.SOURCE_LABEL).item() == pytest.approx(expected_0, rel=1e-6)


def test_adversarial_loss_sign_pushes_logits_towards_the_label():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    losses.adversarial_loss(logits, losses.TARGET_LABEL).backward()
    # d/dx BCE(x, 1) = sigmoid(x) - 1 = -1/2, divided by the 4 outputs of the mean.
    assert torch.allclose(logits.grad, torch.full_like(logits, -0.125))
    logits.grad = None
    losses.adversarial_loss(logits, losses.SOURCE_LABEL).backward()
    assert torch.allclose(logits.grad, torch.full_like(logits, 0.125))


def test_upsample_places_cell_j_on_pixel_stride_j_by_hand():
    x = torch.tensor([[[[1.0, 5.0, 3.0]]]])                   # (1, 1, 1, 3): cells at pixels 0, 2, 4
    # stride 2, width 5: pixel 1 halfway between cells 0 and 1, pixel 3 between cells 1 and 2.
    out = losses.upsample(x, (1, 5), stride=2)
    assert out.flatten().tolist() == pytest.approx([1.0, 3.0, 5.0, 4.0, 3.0])
    # width 6: pixel 5 lies past the last cell centre and keeps its value.
    assert losses.upsample(x, (1, 6), stride=2).flatten().tolist() == pytest.approx([1.0, 3.0, 5.0, 4.0, 3.0, 3.0])
    assert losses.upsample(x, (1, 3)) is x                    # same size: untouched, no stride needed


def test_upsample_without_a_stride_refuses_to_guess():
    with pytest.raises(ValueError, match="needs the network's output stride"):
        losses.upsample(torch.zeros(1, 2, 3, 3), (9, 9))
    with pytest.raises(ValueError, match="needs the network's output stride"):
        losses.segmentation_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 9, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="needs the network's output stride"):
        losses.rectified_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3),
                              torch.zeros(1, 9, 9, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="needs the network's output stride"):
        losses.rectified_loss_seguncertainty(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3),
                                             torch.zeros(1, 9, 9, dtype=torch.long), 0.1)


def test_segmentation_loss_ignores_255_and_upsamples():
    # One logit pixel (0, log 3) -> softmax (1/4, 3/4), upsampled to every 2x2 label pixel.
    logits = torch.tensor([[[[0.0]], [[math.log(3.0)]]]], requires_grad=True)
    labels = torch.tensor([[[0, 1], [255, 0]]])
    expected = (2 * math.log(4.0) + math.log(4.0 / 3.0)) / 3    # 3 labelled pixels
    loss = losses.segmentation_loss(logits, labels, stride=2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logits.grad is not None


def test_segmentation_loss_reads_each_label_at_its_cell():
    # Two cells at stride 2 over 3 pixels: class 0 certain at cell 0 (pixel 0), class 1 at cell 1 (pixel 2);
    # pixel 1 is their even blend (logits 0, 0: probability 1/2 each).
    big = 20.0
    logits = torch.tensor([[[[big, -big]], [[-big, big]]]])     # (1, 2 classes, 1, 2 cells)
    labels = torch.tensor([[[0, 1, 1]]])
    loss = losses.segmentation_loss(logits, labels, stride=2)
    ce_cells = math.log1p(math.exp(-2 * big))                   # -log softmax at a certain cell
    assert loss.item() == pytest.approx((2 * ce_cells + math.log(2.0)) / 3, rel=1e-6)


def test_segmentation_loss_all_ignored_is_zero_with_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = losses.segmentation_loss(logits, torch.full((1, 4, 4), 255), stride=2)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# A 2-class, 2x2 example: per pixel (class 0 logit, class 1 logit).
A = {(0, 0): (0.0, 0.0), (0, 1): (1.0, 0.0), (1, 0): (2.0, 0.0), (1, 1): (0.0, 3.0)}
B = {(0, 0): (1.0, 0.0), (0, 1): (0.0, 0.0), (1, 0): (0.0, 1.0), (1, 1): (0.0, -1.0)}
Y = {(0, 0): 0, (0, 1): 1, (1, 0): 255, (1, 1): 1}


def _tensor(pixels: dict) -> torch.Tensor:
    t = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    for (i, j), (x0, x1) in pixels.items():
        t[0, 0, i, j], t[0, 1, i, j] = x0, x1
    return t


def _labels() -> torch.Tensor:
    y = torch.zeros(1, 2, 2, dtype=torch.long)
    for (i, j), v in Y.items():
        y[0, i, j] = v
    return y


def _hand_rectified(a: dict, b: dict) -> float:
    """mean over labelled pixels of CE(a) * exp(-KL(a || b)), plus the mean KL."""
    weighted, variance = [], []
    for pixel, y in Y.items():
        if y == 255:
            continue
        p, q = _softmax2(*a[pixel]), _softmax2(*b[pixel])
        kl = sum(p[c] * (math.log(p[c]) - math.log(q[c])) for c in range(2))
        ce = -math.log(p[y])
        weighted.append(ce * math.exp(-kl))
        variance.append(kl)
    return sum(weighted) / len(weighted) + sum(variance) / len(variance)


def test_prediction_variance_is_kl_by_hand():
    var = losses.prediction_variance(_tensor(A), _tensor(B))
    assert var.shape == (1, 2, 2)
    for (i, j) in A:
        p, q = _softmax2(*A[(i, j)]), _softmax2(*B[(i, j)])
        kl = sum(p[c] * math.log(p[c] / q[c]) for c in range(2))
        assert var[0, i, j].item() == pytest.approx(kl, rel=1e-12, abs=1e-15)
    assert var[0, 0, 1].item() > 0                       # (1,0) vs (0,0) disagree
    assert losses.prediction_variance(_tensor(A), _tensor(A)).abs().max().item() < 1e-12


def test_rectified_loss_single_by_hand_with_an_ignored_pixel():
    got = losses.rectified_loss_single(_tensor(A), _tensor(B), _labels()).item()
    assert got == pytest.approx(_hand_rectified(A, B), rel=1e-12)
    # The ignored pixel (1, 0) takes part in neither mean: changing its logits changes nothing.
    a2 = dict(A)
    a2[(1, 0)] = (-7.0, 9.0)
    again = losses.rectified_loss_single(_tensor(a2), _tensor(B), _labels()).item()
    assert again == pytest.approx(got, rel=1e-12)


def test_rectified_loss_equal_heads_is_plain_cross_entropy():
    # var = 0: exp(-var) = 1, so the loss is the CE over the labelled pixels.
    ce = [-math.log(_softmax2(*A[px])[y]) for px, y in Y.items() if y != 255]
    got = losses.rectified_loss_single(_tensor(A), _tensor(A), _labels()).item()
    assert got == pytest.approx(sum(ce) / len(ce), rel=1e-12)


def test_rectified_loss_with_the_swapped_aux_term():
    main, aux, y = _tensor(A), _tensor(B), _labels()
    expected = _hand_rectified(A, B) + 0.1 * _hand_rectified(B, A)
    assert losses.rectified_loss(main, aux, y, 0.1).item() == pytest.approx(expected, rel=1e-12)
    assert losses.rectified_loss(main, aux, y, 0.0).item() == pytest.approx(_hand_rectified(A, B), rel=1e-12)
    # KL is not symmetric, so the swapped term is a different number.
    assert _hand_rectified(B, A) != pytest.approx(_hand_rectified(A, B), rel=1e-3)


def test_rectified_loss_upsamples_and_handles_all_ignored():
    # 1x1 logits are upsampled to the 2x2 labels: every pixel gets the same values.
    a = torch.tensor([[[[0.0]], [[1.0]]]], dtype=torch.float64)
    b = torch.tensor([[[[0.5]], [[0.0]]]], dtype=torch.float64)
    labels = torch.tensor([[[0, 1], [1, 255]]])
    p, q = _softmax2(0.0, 1.0), _softmax2(0.5, 0.0)
    kl = sum(p[c] * math.log(p[c] / q[c]) for c in range(2))
    ce = [-math.log(p[0]), -math.log(p[1]), -math.log(p[1])]
    expected = sum(c * math.exp(-kl) for c in ce) / 3 + kl
    assert losses.rectified_loss_single(a, b, labels, stride=2).item() == pytest.approx(expected, rel=1e-12)
    a.requires_grad_(True)
    zero = losses.rectified_loss(a, b, torch.full((1, 2, 2), 255), 0.1, stride=2)
    assert zero.item() == 0.0 and zero.requires_grad


# ------------------------------------------------ the rectified loss as Seg-Uncertainty computes it


def _np_log_softmax(x):
    import numpy as np
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=0, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=0, keepdims=True))


def _np_seguncertainty(main, aux, labels, lambda_aux, weight=None):
    """Seg-Uncertainty's stage-II loss written out pixel by pixel in numpy (one image, logits (C, H, W))."""
    import numpy as np
    main, aux, labels = np.asarray(main, float), np.asarray(aux, float), np.asarray(labels)
    weight = np.ones(main.shape[0]) if weight is None else np.asarray(weight, float)

    def one_head(logits, other):
        lp, lq = _np_log_softmax(logits), _np_log_softmax(other)
        total_ce, total_var = 0.0, 0.0
        for i in range(labels.shape[0]):
            for j in range(labels.shape[1]):
                var = float(np.sum(np.exp(lq[:, i, j]) * (lq[:, i, j] - lp[:, i, j])))   # KL(other || logits)
                y = labels[i, j]
                ce = 0.0 if y == 255 else -weight[y] * lp[y, i, j]
                total_ce += ce * math.exp(-var)
                total_var += var
        n = labels.size                                   # ALL pixels, ignored ones included
        return total_ce / n + total_var / n

    return one_head(main, aux) + lambda_aux * one_head(aux, main)


def test_seguncertainty_loss_by_hand_with_an_ignored_pixel():
    # Two classes, 1x3 pixels; the last pixel is ignored but keeps its variance term.
    main = [[[0.0, 1.0, -1.0]], [[math.log(3.0), 0.0, 2.0]]]
    aux = [[[1.0, 0.5, 0.0]], [[0.0, 0.5, 1.0]]]
    labels = [[1, 0, 255]]

    # Pixel by pixel with the closed forms of a two-class softmax, main term only:
    def head(a, b, pixel_labels):
        ce_sum = var_sum = 0.0
        for (a0, a1), (b0, b1), y in pixel_labels:
            p = _softmax2(a0, a1)
            q = _softmax2(b0, b1)
            var = q[0] * math.log(q[0] / p[0]) + q[1] * math.log(q[1] / p[1])
            ce_sum += (0.0 if y == 255 else -math.log(p[y])) * math.exp(-var)
            var_sum += var
        return ce_sum / 3 + var_sum / 3

    px_main = [(0.0, math.log(3.0)), (1.0, 0.0), (-1.0, 2.0)]
    px_aux = [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    ys = [1, 0, 255]
    expected = head(px_main, px_aux, list(zip(px_main, px_aux, ys))) \
        + 0.5 * head(px_aux, px_main, list(zip(px_aux, px_main, ys)))
    got = losses.rectified_loss_seguncertainty(torch.tensor([main]), torch.tensor([aux]), torch.tensor([labels]), 0.5)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(_np_seguncertainty(main, aux, labels, 0.5), rel=1e-12)
    # Not today's rectified loss: other KL direction and means over labelled pixels only.
    ours = losses.rectified_loss(torch.tensor([main]), torch.tensor([aux]), torch.tensor([labels]), 0.5)
    assert abs(ours.item() - expected) > 1e-3


def test_seguncertainty_loss_random_batch_with_class_weights_against_numpy():
    import numpy as np
    rng = np.random.default_rng(0)
    main = rng.normal(size=(2, 4, 3, 5)) * 2
    aux = rng.normal(size=(2, 4, 3, 5)) * 2
    labels = rng.integers(0, 4, size=(2, 3, 5))
    labels[0, 0, :2] = 255
    weight = [1.0, 7.0, 1.0, 2.5]
    got = losses.rectified_loss_seguncertainty(torch.tensor(main, dtype=torch.float32),
                                               torch.tensor(aux, dtype=torch.float32), torch.tensor(labels), 0.5,
                                               torch.tensor(weight))
    # The batch mean is the mean of the per-image means (same number of pixels each).
    expected = np.mean([_np_seguncertainty(main[b], aux[b], labels[b], 0.5, weight) for b in range(2)])
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_seguncertainty_loss_all_ignored_is_the_variance_alone():
    main = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]]], requires_grad=True)
    aux = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    labels = torch.full((1, 1, 2), 255)
    var_main = losses.prediction_variance(aux, main).mean()    # KL(aux || main)
    var_aux = losses.prediction_variance(main, aux).mean()     # KL(main || aux)
    got = losses.rectified_loss_seguncertainty(main, aux, labels, 0.5)
    assert got.item() == pytest.approx((var_main + 0.5 * var_aux).item(), rel=1e-6) and got.item() > 0
    got.backward()
    assert torch.isfinite(main.grad).all() and main.grad.abs().sum() > 0


def test_small_class_weights_by_hand():
    # 2 images x 4x4 = 32 pixels; fraction 1/8 -> a class with fewer than 4 pixels is small.
    labels = torch.full((2, 4, 4), 0)
    labels[0, 0, :3] = 1          # class 1: 3 pixels -> small
    labels[1, :, :] = 2           # class 2: 16 pixels -> not small
    labels[0, 3, :] = 255         # ignored pixels count in the total, not in any class
    # class 3: 0 pixels -> small (weight irrelevant: no pixel carries it)
    w = losses.small_class_weights(labels, 4, 7.0, fraction=1 / 8)
    assert w.tolist() == [1.0, 7.0, 1.0, 7.0]
    assert losses.SMALL_CLASS_FRACTION == 1 / 32                 # 64x64 pixels of a 512x256 crop


def test_focal_loss_by_hand_with_an_ignored_pixel():
    # Pixel 0: logits (2, 0), class 0 -> p_t = e^2 / (e^2 + 1); pixel 1 ignored.
    logits = torch.tensor([[[[2.0, 0.3]], [[0.0, -1.0]]]])     # (1, 2 classes, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    p_t = math.exp(2) / (math.exp(2) + 1)
    expected = (1 - p_t) ** 2 * -math.log(p_t)
    assert losses.focal_cross_entropy(logits, labels, 2.0).item() == pytest.approx(expected, rel=1e-5)
    # gamma 0 is the cross-entropy, and segmentation_loss routes to it only for gamma > 0.
    ce = losses.segmentation_loss(logits, labels)
    assert losses.focal_cross_entropy(logits, labels, 0.0).item() == pytest.approx(ce.item(), rel=1e-5)
    assert losses.segmentation_loss(logits, labels, focal_gamma=2.0).item() == pytest.approx(expected, rel=1e-5)
    # A well-classified pixel weighs less under the focal loss than under the cross-entropy.
    assert expected < -math.log(p_t)
    all_ignored = torch.full((1, 1, 2), 255)
    zero = losses.segmentation_loss(logits.requires_grad_(), all_ignored, focal_gamma=2.0)
    assert zero.item() == 0.0 and zero.requires_grad


def test_memory_regularisation_by_hand():
    """One pixel, two classes. main logits (1, 0), aux (0, 0), aux weight 0.5: the fused prediction is
    softmax(1, 0); the main head already equals it (KL 0), the aux head is uniform."""
    main = torch.tensor([[[[1.0]], [[0.0]]]], requires_grad=True)   # (1, 2, 1, 1)
    aux = torch.tensor([[[[0.0]], [[0.0]]]], requires_grad=True)
    m1 = math.exp(1) / (math.exp(1) + 1)
    m = (m1, 1 - m1)
    kl_aux = sum(mi * math.log(mi / 0.5) for mi in m)
    value = losses.memory_regularisation(main, aux, 0.5)
    assert value.item() == pytest.approx(kl_aux, rel=1e-6)
    # The fused prediction is a constant: the main head, already on it, gets no gradient; the aux head is pulled
    # towards class 0 (d KL / d aux_0 = q_0 - m_0 = 0.5 - m1 < 0).
    value.backward()
    assert main.grad.abs().max().item() == pytest.approx(0.0, abs=1e-7)
    assert aux.grad[0, 0, 0, 0].item() == pytest.approx(0.5 - m1, rel=1e-6)
    # Heads that agree (with the fusion weight's scale folded in) give 0; the mean runs over pixels.
    same = torch.tensor([[[[0.4, -2.0]], [[1.0, 3.0]]]])
    assert losses.memory_regularisation(same, same, 0.0).item() == pytest.approx(0.0, abs=1e-7)
    two = torch.cat([main.detach(), same[..., :1]], dim=-1)
    two_aux = torch.cat([aux.detach(), same[..., :1]], dim=-1)
    assert losses.memory_regularisation(two, two_aux, 0.0).item() == pytest.approx(
        (losses.memory_regularisation(main.detach(), aux.detach(), 0.0).item()
         + losses.memory_regularisation(same[..., :1], same[..., :1], 0.0).item()) / 2, rel=1e-6)
