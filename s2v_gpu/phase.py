"""Phase correlation of image tiles (``torch.fft``): a cheap registration seed.

The refinement of :mod:`s2v_gpu.registration` only needs a seed within about a pixel of the shift;
on the CPU, Kornia's SIFT costs several times the rest of the registration for that, while the
normalised cross-power spectrum of the same few tiles gives it in milliseconds. Where the tiles do
not agree or their peaks are weak, the registration falls back to SIFT.
"""

from __future__ import annotations

import torch

from .errors import check_shape


def _prepared(tiles: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Invalid pixels set to the mean of the valid ones, the mean removed, a Hann window applied
    (no wrap-around edge in the spectrum)."""
    m = masks.to(tiles.dtype)
    mean = (tiles * m).sum((-2, -1), keepdim=True) / m.sum((-2, -1), keepdim=True).clamp_min(1)
    x = torch.where(masks, tiles, mean) - mean
    h, w = x.shape[-2:]
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device),
                         torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device))
    return x * window


def _subpixel(c: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    """Parabola through the peak and its two neighbours along ``dim`` (circularly): the offset in [-0.5, 0.5]."""
    n = c.shape[dim]
    t = torch.arange(c.shape[0], device=c.device)
    r, q = idx
    if dim == 1:
        lo, mid, hi = c[t, (r - 1) % n, q], c[t, r, q], c[t, (r + 1) % n, q]
    else:
        lo, mid, hi = c[t, r, (q - 1) % n], c[t, r, q], c[t, r, (q + 1) % n]
    den = lo - 2 * mid + hi
    return torch.where(den < 0, 0.5 * (lo - hi) / den.where(den < 0, torch.ones_like(den)), torch.zeros_like(den)
                       ).clamp(-0.5, 0.5)


def phase_correlation(reference: torch.Tensor, moving: torch.Tensor, ref_valid: torch.Tensor,
                      mov_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Translation of each ``moving`` tile relative to its ``reference`` tile.

    Args:
        reference, moving: ``(T, S, S)`` tiles.
        ref_valid, mov_valid: ``(T, S, S)`` bool.

    Returns:
        ``(T, 2)`` shifts in pixels (x right, y down: a feature at q in the reference is at q + d in the
        moving tile) and ``(T,)`` peak heights of the normalised correlation (1: identical up to the
        shift; unrelated images give about 4.5 / S).
    """
    check_shape(reference, 3, "reference")
    if reference.shape != moving.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and moving {tuple(moving.shape)} differ in shape")
    a = torch.fft.rfft2(_prepared(reference.double(), ref_valid))
    b = torch.fft.rfft2(_prepared(moving.double(), mov_valid))
    cross = b * a.conj()
    c = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-12), s=reference.shape[-2:])
    t, h, w = c.shape
    peak, flat = c.reshape(t, -1).max(dim=1)
    r, q = flat // w, flat % w
    dy = torch.where(r > h // 2, r - h, r).double() + _subpixel(c, (r, q), 1)
    dx = torch.where(q > w // 2, q - w, q).double() + _subpixel(c, (r, q), 2)
    return torch.stack([dx, dy], dim=1), peak
