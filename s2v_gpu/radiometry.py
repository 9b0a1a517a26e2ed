"""Radiometric harmonisation of VENuS to Sentinel-2 (paper section 2.5.4), batched over band groups.

For each pair and band group, ``S = V W`` with ``V = [1, VENuS bands at S2 resolution]`` (n x 5) for n
random valid pixels and ``S`` the Sentinel-2 bands (n x 4); ``W`` (5 x 4) is solved with
``torch.linalg.lstsq`` (driver ``gels`` on every device, so CPU and CUDA solve the same problem;
degenerate systems are refused beforehand). Patches whose RMSE exceeds ``fit_max_rmse`` are left out
of the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import S2VError, check_shape


@dataclass
class RadiometryConfig:
    fit_max_rmse: float = 0.2  # paper: patches with a global RMSE above this are not fitted
    n_pixels: int = 100_000  # random valid pixels per fit
    min_pixels: int = 1000  # fewer: the fit is refused
    min_band_std: float = 1e-4  # a (nearly) constant band makes the system rank-deficient


class FitError(S2VError, RuntimeError):
    """The radiometric fit is degenerate (too few pixels, constant bands)."""


def patch_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMSE over channels and pixels of each patch: ``(N, C, H, W)`` x2 -> ``(N,)``."""
    check_shape(a, 4, "a")
    return (a - b).flatten(1).pow_(2).mean(1).sqrt_()  # squared in place: one temporary, the same bits


def sample_pixels(v: torch.Tensor, s: torch.Tensor, keep: torch.Tensor,
                  n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random pixels (without replacement) of the kept patches.

    Args:
        v, s: ``(N, C, H, W)`` VENuS at S2 resolution and Sentinel-2.
        keep: ``(N,)`` bool.
        generator: a CPU generator (the same draw on every device).

    Returns:
        ``(v (n', C), s (n', C))`` with n' = min(n, available pixels).
    """
    kept = torch.nonzero(keep).flatten()
    _, c, h, w = v.shape
    total = kept.numel() * h * w
    # the draw numbers the kept patches' pixels patch by patch, row-major
    idx = torch.randperm(total, generator=generator)[: min(n, total)].to(v.device)
    if 4 * idx.numel() > total:  # most pixels drawn: one copy of the patches, then a gather of rows
        return tuple(x[kept].permute(0, 2, 3, 1).reshape(-1, c)[idx] for x in (v, s))
    # few drawn: only they are read, at their flat positions in every channel (n, C)
    flat = (kept[idx // (h * w)] * (c * h * w) + idx % (h * w))[:, None] + torch.arange(c, device=v.device) * (h * w)
    return v.reshape(-1)[flat], s.reshape(-1)[flat]


def stack_padded(vs: list[torch.Tensor], ss: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack fits of different pixel counts into one batch: rows of zeros are appended (a zero row of
    ``[1, v]`` and ``s`` is left out by :func:`fit_linear` through ``counts``).

    Returns:
        ``(v (B, n_max, C), s (B, n_max, D), counts (B,))``.
    """
    n = max(v.shape[0] for v in vs)
    counts = torch.tensor([v.shape[0] for v in vs])
    pad = lambda t: torch.cat([t, t.new_zeros((n - t.shape[0], t.shape[1]))])  # noqa: E731
    return torch.stack([pad(v) for v in vs]), torch.stack([pad(s) for s in ss]), counts


def fit_linear(v: torch.Tensor, s: torch.Tensor, counts: torch.Tensor | None, cfg: RadiometryConfig) -> torch.Tensor:
    """Least squares ``[1, v] W = s``, batched.

    Args:
        v: ``(B, n, C)`` source (VENuS) pixels; s: ``(B, n, D)`` target (Sentinel-2) pixels.
        counts: ``(B,)`` number of real rows of each fit (the rest is zero padding), None: all n.

    Returns:
        ``W`` of shape ``(B, C + 1, D)``, float64: row 0 is the bias.

    Raises:
        FitError: fewer than ``min_pixels`` pixels or a (nearly) constant band.
    """
    check_shape(v, 3, "v")
    b, n, _ = v.shape
    counts = torch.full((b,), n) if counts is None else counts
    if int(counts.min()) < cfg.min_pixels:
        raise FitError(f"radiometric fit on {int(counts.min())} pixels, fewer than {cfg.min_pixels}")
    rows = (torch.arange(n)[None, :] < counts[:, None]).to(v.device)  # B, n
    for i in range(b):
        both = torch.cat([v[i], s[i]], dim=1)
        std = (both if int(counts[i]) == n else both[rows[i]]).double().std(dim=0)  # every row real: no gather
        if (std < cfg.min_band_std).any():
            raise FitError(f"radiometric fit with a constant band (std {std.min().item():.2e})")
    # padded rows are all zeros, bias included: they add nothing to ||[1, v] W - s||
    a = torch.cat([rows[..., None].to(v.dtype), v], dim=2).double()
    return torch.linalg.lstsq(a, s.double(), driver="gels").solution


def apply_linear(v: torch.Tensor, w: torch.Tensor, divisor: float = 1.0, index: torch.Tensor | None = None,
                 encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Apply ``W`` (C+1, D) to ``(N, C, H, W)`` images ``v / divisor`` (those of ``index`` ``(K,)`` only)
    -> ``(N or K, D, H, W)`` float32 (float64 for float64 input; ``out_dtype`` when given).

    Batched matrix products over the flattened pixels (no layout change), a few images at a time (the
    stored integers converted in cache, not as a copy of them all), the bias added in place; the
    divisor (e.g. the quantification of stored integers) is folded into the weights. Each output is
    the same arithmetic whatever the chunk. ``encode``: applied to each chunk's result (which it may
    overwrite) before it is stored as ``out_dtype`` (e.g. the int16 of the files, without a float copy
    of every image).
    """
    n, c, h, width = v.shape
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    gain = (w[1:].double() / divisor).to(dtype)
    bias = w[0].to(dtype)[None, :, None]
    k = n if index is None else index.numel()
    out = torch.empty((k, gain.shape[1], h * width), dtype=out_dtype or dtype, device=v.device)
    step = max(1, LINEAR_CHUNK.get(v.device.type, LINEAR_CHUNK["cuda"]) // max(1, c * h * width))
    flat = v.reshape(n, c, h * width)
    buffer = torch.empty((min(step, k), c, h * width), dtype=dtype, device=v.device)
    # encoded: each chunk's float result in one reused buffer (it stays in cache for the encoding)
    result = torch.empty((min(step, k), gain.shape[1], h * width), dtype=dtype, device=v.device) if encode else None
    for i in range(0, k, step):
        j = min(i + step, k)
        x = _converted(flat, i, j, index, buffer)
        y = torch.matmul(gain.T, x, out=out[i:j] if encode is None else result[:j - i])
        y += bias
        if encode is not None:
            out[i:j] = encode(y)
    return out.view(-1, gain.shape[1], h, width)


def _converted(flat: torch.Tensor, i: int, j: int, index: torch.Tensor | None, buffer: torch.Tensor) -> torch.Tensor:
    """Images ``i:j`` of ``flat`` ``(N, C, P)`` (or of ``index``) in ``buffer``'s type: on the CPU copied
    one by one into the reused buffer (the gather and the conversion in one pass), elsewhere gathered."""
    if flat.device.type != "cpu":
        return (flat[i:j] if index is None else flat[index[i:j]]).to(buffer.dtype)
    x = buffer[:j - i]
    if index is None:
        return x.copy_(flat[i:j])
    for slot, image in enumerate(index[i:j].tolist()):
        x[slot].copy_(flat[image])
    return x


#: Input elements converted at a time by :func:`apply_linear`, per device type: on the CPU a chunk's
#: buffers stay in a core's L2 cache through the passes (2**19: 0.08 against 0.11 CPU-s for a full
#: site's 5 m int16 at 2**21); on a GPU fewer, larger launches
LINEAR_CHUNK = {"cpu": 2**19, "cuda": 2**21}
