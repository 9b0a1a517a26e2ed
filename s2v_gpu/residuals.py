"""Residual misregistration of every patch: what the registration (global or local) leaves.

For each kept triplet, the translation between the Sentinel-2 patch and the fitted VENuS patch
brought to the Sentinel-2 resolution (the MTF-matched blur), per band group. Batched on the device:
every patch of a pair is solved at once, with no per-patch Python loop and no host sync.

Estimator: a few Gauss-Newton steps on ``s(p) = f(p - r) + o_c`` (one offset per band), with the
efficient second-order linearisation (the mean of both images' gradients), each step re-warping the
VENuS patch by the current estimate with the Lanczos-4 kernel (a per-patch depthwise convolution).
Convention: a feature at ``q`` in VENuS appears at ``q + r`` in the Sentinel-2 patch; in metres
(x east, y north) ``r_m = (r_x * res, -r_y * res)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import check_shape
from .resample import KERNELS

#: the largest residual (pixels) the estimator follows; beyond it the patch is not aligned at all
MAX_RESIDUAL_PX = 2.0
#: pixels left out on every side (gradients, the warp's reach)
BORDER_PX = 6


def _warp_weights(r: torch.Tensor, span: int) -> torch.Tensor:
    """Per-patch taps at integer offsets ``-span..span`` for shifts ``r`` ``(N,)`` (``|r| + reach <=
    span``): out(p) = sum_o w_o f(p + o) samples f at p + r with the pipeline's Lanczos-4 kernel.
    Returns ``(N, 2 * span + 1)``."""
    kernel = KERNELS["lanczos4"]
    whole = torch.floor(r)
    weights = kernel.weights(r - whole)  # (taps, N)
    offsets = torch.tensor(kernel.offsets, device=r.device)[:, None]
    out = torch.zeros((r.shape[0], 2 * span + 1), dtype=weights.dtype, device=r.device)
    return out.scatter_(1, (whole.long()[None] + offsets + span).T, weights.T)


def warp_patches(f: torch.Tensor, r: torch.Tensor, stride: int = 1, border: int = 0) -> torch.Tensor:
    """Each patch ``f`` ``(N, C, H, W)`` sampled at ``p + r_n`` (``r`` ``(N, 2)`` pixels, x then y) for
    p on every ``stride``-th row and column from ``border`` to ``H - border`` (``W - border``),
    separably with Lanczos-4; only the taps those samples reach are convolved, the patch replicated
    where they leave it. Returns ``(N, C, ceil((H - 2 border) / stride), ceil((W - 2 border) / stride))``."""
    n, c, h, w = f.shape
    span = int(MAX_RESIDUAL_PX) + KERNELS["lanczos4"].reach
    wx = _warp_weights(r[:, 0], span).to(f.dtype).repeat_interleave(c, 0)  # (N*C, taps)
    wy = _warp_weights(r[:, 1], span).to(f.dtype).repeat_interleave(c, 0)
    pad = max(0, span - border)
    x = f.reshape(1, n * c, h, w)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate") if pad else x
    lo = border + pad - span  # the first row / column a sample's taps reach
    x = x[:, :, lo:x.shape[2] - lo, lo:x.shape[3] - lo]
    x = F.conv2d(x, wx.view(n * c, 1, 1, -1), stride=(1, stride), groups=n * c)
    x = F.conv2d(x, wy.view(n * c, 1, -1, 1), stride=(stride, 1), groups=n * c)
    return x.view(n, c, x.shape[-2], x.shape[-1])


def _with_gradients(x: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` -> ``(N, 3, H, W)``: values and central differences along x and y."""
    g = torch.empty((x.shape[0], 3) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    g[:, 0] = x
    # the differences written in place and halved there (a division by 2 is exact: the same bits as
    # (a - b) / 2); only the first and last column / row are zeroed, not the whole tensor
    torch.sub(x[:, :, 2:], x[:, :, :-2], out=g[:, 1, :, 1:-1]).div_(2)
    torch.sub(x[:, 2:], x[:, :-2], out=g[:, 2, 1:-1]).div_(2)
    g[:, 1, :, 0] = g[:, 1, :, -1] = 0
    g[:, 2, 0] = g[:, 2, -1] = 0
    return g


def _step(s3: torch.Tensor, f3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One linearised solve for the translation (and an offset) of ``s`` against ``f``, each given as
    values and gradients ``(N, 3, P)`` on the same sample points.

    Returns ``(delta (N, 2), texture (N,), rmse (N,))``: texture is the smallest eigenvalue of the
    gradient normal matrix per sample (how well the patch constrains a translation)."""
    g = (s3[:, 1:] + f3[:, 1:]) / 2  # (N, 2, P): the mean of both gradients (second-order accurate)
    e = s3[:, 0] - f3[:, 0]
    p = e.shape[1]
    gm, em = g.mean(2), e.mean(1)
    # centred sums: the offset between the patches drops out
    a = g @ g.transpose(1, 2) - p * gm.unsqueeze(2) * gm.unsqueeze(1)  # (N, 2, 2)
    b = (g @ e.unsqueeze(2)).squeeze(2) - p * gm * em.unsqueeze(1)  # (N, 2)
    axx, axy, ayy = a[:, 0, 0], a[:, 0, 1], a[:, 1, 1]
    det = (axx * ayy - axy * axy).clamp_min(1e-20)
    # s - f = -grad . r, solved in closed form (2x2)
    delta = -torch.stack([(ayy * b[:, 0] - axy * b[:, 1]) / det, (axx * b[:, 1] - axy * b[:, 0]) / det], 1)
    half_trace, root = (axx + ayy) / 2, (((axx - ayy) / 2) ** 2 + axy**2).sqrt()
    texture = (half_trace - root) / p
    explained = -(delta * b).sum(1) / p
    rmse = ((e * e).mean(1) - em * em - explained).clamp_min(0).sqrt()
    return delta, texture, rmse


#: the normal equations use every SAMPLE_STRIDE-th row and column of patches whose inner region is
#: at least STRIDE_FROM_PX wide (3,000+ samples on a 128 px patch), every pixel of smaller ones
SAMPLE_STRIDE = 2
STRIDE_FROM_PX = 96


def patch_residuals(s: torch.Tensor, f: torch.Tensor, iterations: int = 3) -> dict[str, torch.Tensor]:
    """Residual translation of each Sentinel-2 patch against its VENuS counterpart.

    Args:
        s: ``(N, C, H, W)`` Sentinel-2 patches (reflectance).
        f: ``(N, C, H, W)`` fitted VENuS at the Sentinel-2 resolution (same grid).
        iterations: Gauss-Newton steps (each after re-warping ``f`` by the estimate so far).

    Returns:
        ``{"r": (N, 2) pixels (x right, y down), "texture": (N,), "rmse": (N,), "converged": (N,) bool}``;
        ``converged`` is False where the estimate left :data:`MAX_RESIDUAL_PX` or the last step still
        moved by more than 0.1 px.
    """
    check_shape(s, 4, "s")
    check_shape(f, 4, "f")
    work = s.dtype if s.dtype == torch.float64 else torch.float32
    side = min(f.shape[-2:])
    b = max(2, min(BORDER_PX, side // 8))  # small patches keep most of their pixels
    b = b if side - 2 * b >= 2 else max(1, (side - 2) // 2)  # a 4 px patch (20 m of size_5m=16): 2 x 2 samples
    if side - 2 * b < 1:
        raise ValueError(f"patches of {side} px are too small to measure a residual translation")
    k = SAMPLE_STRIDE if min(f.shape[-2:]) - 2 * b >= STRIDE_FROM_PX else 1
    # one band per group: the sum of its bands (the same geometry; 4x less work than band by band);
    # the gradients of f are warped with it (a translation commutes with the gradient)
    f3 = _with_gradients(f.to(work).sum(1))
    inner = (slice(None), slice(None), slice(b, -b, k), slice(b, -b, k))
    s3 = _with_gradients(s.to(work).sum(1))[inner].flatten(2)
    r = torch.zeros((s.shape[0], 2), dtype=work, device=s.device)
    delta = texture = rmse = None
    for it in range(iterations):
        warped = f3[inner] if it == 0 else warp_patches(f3, -r, k, b)
        delta, texture, rmse = _step(s3, warped.flatten(2))
        # a patch that constrains nothing (too few samples, no texture) must not poison the warps
        delta = torch.where(torch.isfinite(delta), delta, torch.full_like(delta, 2 * MAX_RESIDUAL_PX))
        r = (r + delta).clamp(-MAX_RESIDUAL_PX, MAX_RESIDUAL_PX)
    # the steps contract the error about fourfold: a last step under 0.1 px leaves ~0.02 px
    converged = (r.abs() < MAX_RESIDUAL_PX).all(1) & (delta.norm(dim=1) < 0.1)
    return {"r": r, "texture": texture, "rmse": rmse, "converged": converged}


def to_metres(r: torch.Tensor, res: float) -> torch.Tensor:
    """``(N, 2)`` pixels (x right, y down) -> metres (x east, y north)."""
    return torch.stack([r[:, 0] * res, 0.0 - r[:, 1] * res], 1)  # 0 - y: a zero stays +0.0, not -0.0
