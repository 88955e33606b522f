"""Fourier domain adaptation (FDA): the cheap image translation ("IT" in Table 3).

The low-frequency amplitude spectrum of a source image is replaced by a target
image's; the phase (the content) stays the source's. Works on 0-255 pixel
values, before normalisation.
"""

from __future__ import annotations

import torch


def low_frequency_mask(height: int, width: int, beta: float, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (H, W) mask of the frequencies with ``|ky| <= b`` and ``|kx| <= b``.

    ``b = floor(min(H, W) * beta)``, the window half-size. The window is
    symmetric around frequency zero (both signs of every frequency), so a real
    image's spectrum stays Hermitian after the swap and the translated image is
    real: its low band then has exactly the target's amplitude.
    """
    b = int(min(height, width) * beta)
    ky = torch.fft.fftfreq(height, d=1.0 / height, device=device).abs()
    kx = torch.fft.fftfreq(width, d=1.0 / width, device=device).abs()
    return (ky[:, None] <= b) & (kx[None, :] <= b)


def fda_dtype(device: torch.device) -> torch.dtype:
    """The precision FDA's transforms run in on ``device``: float32 on a GPU (half the memory
    traffic, and GPUs have far less float64 than float32 throughput), float64 elsewhere."""
    return torch.float32 if device.type == "cuda" else torch.float64


def fda_translate(source: torch.Tensor, target: torch.Tensor, beta: float,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Translate ``source`` (..., H, W) towards ``target``'s low-frequency amplitude.

    Returns the real image ``ifft2(|F_mix| * exp(i * angle(F_source)))`` where
    ``|F_mix|`` is the target's amplitude inside the low-frequency window of
    :func:`low_frequency_mask` and the source's outside. No clipping: the
    caller clips to the pixel range.

    Runs on the tensors' device. ``dtype`` is the precision of the transforms
    (:func:`fda_dtype` chooses it per device): float64 (the default) or float32,
    which stays within 2e-3 of a pixel level (0-255) of float64 on 512x1024
    images (see the tests).
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"FDA runs in float32 or float64, got {dtype}")
    if source.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"FDA needs equal image sizes, got {tuple(source.shape)} and {tuple(target.shape)}")
    f_src = torch.fft.fft2(source.to(dtype))
    f_trg = torch.fft.fft2(target.to(dtype))
    mask = low_frequency_mask(source.shape[-2], source.shape[-1], beta, device=source.device)
    amplitude = torch.where(mask, f_trg.abs(), f_src.abs())
    mixed = torch.polar(amplitude, f_src.angle())
    return torch.fft.ifft2(mixed).real.to(source.dtype)
