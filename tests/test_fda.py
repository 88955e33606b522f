"""Fourier domain adaptation: the low band's amplitude is the target's, the phase the source's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uncerda_core.data.fda import fda_translate, low_frequency_mask


def _window(mask: torch.Tensor) -> tuple[list[int], list[int]]:
    rows = torch.nonzero(mask.any(dim=1)).flatten().tolist()
    cols = torch.nonzero(mask.any(dim=0)).flatten().tolist()
    return rows, cols


def test_mask_window_half_size_is_floor_of_min_side_times_beta():
    # H=8: fft frequencies 0,1,2,3,-4,-3,-2,-1; W=10: 0,1,2,3,4,-5,-4,-3,-2,-1.
    # b = floor(8 * 0.3) = 2 -> |k| <= 2: rows 0,1,2,6,7 and columns 0,1,2,8,9.
    mask = low_frequency_mask(8, 10, 0.3)
    assert mask.dtype == torch.bool and mask.shape == (8, 10)
    rows, cols = _window(mask)
    assert rows == [0, 1, 2, 6, 7]
    assert cols == [0, 1, 2, 8, 9]
    assert int(mask.sum()) == 25                   # a full (2b+1) x (2b+1) rectangle
    # floor, not round: 8 * 0.37 = 2.96 -> b = 2, the same window.
    assert torch.equal(low_frequency_mask(8, 10, 0.37), mask)
    # min(H, W) decides: 10 x 8 with beta 0.3 is the transposed window.
    assert torch.equal(low_frequency_mask(10, 8, 0.3), mask.T)


def test_mask_odd_sizes_and_symmetry():
    # H=7: 0,1,2,3,-3,-2,-1; W=9: 0..4,-4..-1. b = floor(7 * 0.2) = 1.
    mask = low_frequency_mask(7, 9, 0.2)
    rows, cols = _window(mask)
    assert rows == [0, 1, 6] and cols == [0, 1, 8]
    # Symmetric under k -> -k (index i -> (-i) mod N), so a real image stays real.
    for h, w, beta in [(7, 9, 0.2), (8, 10, 0.3), (6, 6, 0.5), (16, 32, 0.01)]:
        m = low_frequency_mask(h, w, beta)
        flipped = m[(-torch.arange(h)) % h][:, (-torch.arange(w)) % w]
        assert torch.equal(m, flipped)


def test_beta_zero_keeps_only_the_dc_term():
    mask = low_frequency_mask(8, 10, 0.0)
    assert mask.sum() == 1 and bool(mask[0, 0])
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.uniform(0, 255, (3, 8, 10)))
    trg = torch.from_numpy(rng.uniform(0, 255, (3, 8, 10)))
    out = fda_translate(src, trg, 0.0)
    # Only the DC amplitude (sum of the pixels) is swapped: every channel's mean
    # becomes the target's and the rest of the image is the source's.
    expected = src - src.mean(dim=(-2, -1), keepdim=True) + trg.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)


def test_two_by_two_by_hand():
    # Source [[1,2],[3,5]]: F00=11, F01=1-2+3-5=-3, F10=1+2-3-5=-5, F11=1-2-3+5=1,
    # phases 0, pi, pi, 0. Target [[4,0],[0,0]]: amplitude 4 at every frequency.
    # beta 0.5 -> b = 1: the whole 2x2 spectrum is low band, mixed = [[4,-4],[-4,4]],
    # and ifft2 of that is [[0,0],[0,4]].
    src = torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float64)
    trg = torch.tensor([[4.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    out = fda_translate(src, trg, 0.5)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [0.0, 4.0]], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    # beta 0 -> only the mean moves: 11/4 -> 4/4.
    out0 = fda_translate(src, trg, 0.0)
    torch.testing.assert_close(out0, src - 2.75 + 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(16, 20), (15, 21)])
def test_low_band_amplitude_is_target_phase_is_source(shape):
    h, w = shape
    beta = 0.15                               # b = floor(15 or 16 * 0.15) = 2
    rng = np.random.default_rng(1)
    src = torch.from_numpy(rng.uniform(0, 255, (2, 3, h, w)))
    trg = torch.from_numpy(rng.uniform(0, 255, (2, 3, h, w)))
    out = fda_translate(src, trg, beta)
    assert out.shape == src.shape and out.dtype == src.dtype
    f_out, f_src, f_trg = torch.fft.fft2(out), torch.fft.fft2(src), torch.fft.fft2(trg)
    mask = low_frequency_mask(h, w, beta)
    assert int(mask.sum()) == 25
    inside, outside = mask.expand_as(f_out), ~mask.expand_as(f_out)
    torch.testing.assert_close(f_out.abs()[inside], f_trg.abs()[inside], rtol=1e-9, atol=1e-6)
    torch.testing.assert_close(f_out.abs()[outside], f_src.abs()[outside], rtol=1e-9, atol=1e-6)
    # Phase: compare unit phasors (no 2*pi wrap), away from near-zero amplitudes.
    solid = (f_src.abs() > 1e-6) & (f_trg.abs() > 1e-6)
    phasor_out = f_out / f_out.abs()
    phasor_src = f_src / f_src.abs()
    assert bool(solid.all())                  # random images: no empty bins to skip here
    torch.testing.assert_close(phasor_out[solid], phasor_src[solid], rtol=0, atol=1e-9)
    # The translated image of a real pair is real: the dropped imaginary part was ~0.
    mixed = torch.polar(torch.where(mask, f_trg.abs(), f_src.abs()), f_src.angle())
    assert float(torch.fft.ifft2(mixed).imag.abs().max()) < 1e-9


def test_batch_is_per_image_and_float32_is_kept():
    rng = np.random.default_rng(2)
    src = torch.from_numpy(rng.uniform(0, 255, (2, 3, 12, 16)).astype(np.float32))
    trg = torch.from_numpy(rng.uniform(0, 255, (2, 3, 12, 16)).astype(np.float32))
    out = fda_translate(src, trg, 0.1)
    assert out.dtype == torch.float32
    for i in range(2):
        torch.testing.assert_close(out[i], fda_translate(src[i], trg[i], 0.1))
    # Swapping with itself is the identity.
    torch.testing.assert_close(fda_translate(src, src, 0.1), src, rtol=0, atol=1e-3)


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="equal image sizes"):
        fda_translate(torch.zeros(3, 8, 8), torch.zeros(3, 8, 10), 0.01)


def test_real_frames_take_the_target_colour_mean(real_samples):
    """A real GTA5 frame translated towards a real Cityscapes frame (downscaled to 64x32)."""
    from PIL import Image

    from uncerda_core.data.readers import read_image
    gta = real_samples / "gta5" / "images" / "00373.png"
    city = sorted((real_samples / "cityscapes" / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    if not gta.is_file() or not city:
        pytest.skip("real GTA5 / Cityscapes frames not available")

    def small(path):
        arr = np.asarray(Image.fromarray(read_image(path)).resize((64, 32), Image.BILINEAR), dtype=np.float64)
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    src, trg = small(gta), small(city[0])
    out = fda_translate(src, trg, 0.01)       # b = floor(32 * 0.01) = 0: the DC term only
    torch.testing.assert_close(out.mean(dim=(-2, -1)), trg.mean(dim=(-2, -1)), rtol=0, atol=1e-9)
    out = fda_translate(src, trg, 0.1)        # b = 3
    # Outside the 7x7 low band the spectrum (amplitude and phase) is the source's.
    outside = ~low_frequency_mask(32, 64, 0.1).expand(3, 32, 64)
    f_out, f_src = torch.fft.fft2(out), torch.fft.fft2(src)
    torch.testing.assert_close(f_out[outside], f_src[outside], rtol=0, atol=1e-6)


@pytest.mark.parametrize("beta", [0.01, 0.05])
def test_float32_transforms_stay_close_to_float64_at_paper_size(beta):
    # 512x1024 images of smooth structure plus pixel noise, as on the GPU at paper scale.
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 16, 32, generator=gen), size=(512, 1024),
                                             mode="bilinear", align_corners=False)
    src = (smooth[:1] * 200 + torch.rand(1, 3, 512, 1024, generator=gen) * 55).float()
    trg = (smooth[1:] * 200 + torch.rand(1, 3, 512, 1024, generator=gen) * 55).float()
    exact = fda_translate(src, trg, beta)
    fast = fda_translate(src, trg, beta, dtype=torch.float32)
    assert fast.dtype == torch.float32
    assert float((exact - fast).abs().max()) < 2e-3          # of a 0-255 pixel level
    assert float((exact - src).abs().max()) > 1.0            # and the translation did change the image


def test_fda_precision_must_be_float32_or_float64():
    with pytest.raises(ValueError, match="float32 or float64"):
        fda_translate(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), 0.1, dtype=torch.float16)
