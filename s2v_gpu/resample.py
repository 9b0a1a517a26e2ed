"""Sub-pixel shifts and the bicubic 2x downsampling used by registration.

Convention (pixel coordinates, x = column to the right, y = row downwards): a shift ``(dx, dy)`` of a
*moving* image with respect to a *reference* means a feature at pixel p of the reference appears at
p + (dx, dy) in the moving image. :func:`apply_shift` returns ``out(p) = moving(p + shift)``, i.e. the
moving image brought onto the reference. In metres (x east, y north): ``dx_m = dx * res``,
``dy_m = -dy * res``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import check_shape


def _shift_grid(b: int, h: int, w: int, shift_px: tuple[float, float], device, dtype) -> torch.Tensor:
    """Sampling grid (B, H, W, 2) of ``grid_sample`` (align_corners=False) for out(p) = in(p + shift)."""
    dx, dy = shift_px
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5 + dx) * (2.0 / w) - 1.0
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5 + dy) * (2.0 / h) - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).expand(b, h, w, 2)


def apply_shift(
    image: torch.Tensor, valid: torch.Tensor, shift_px: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an image at ``p + shift`` with bicubic ``grid_sample``; its validity with nearest.

    A pixel is valid only if every pixel of the 4x4 bicubic support it draws from is valid and inside
    the image (pixels pulled in from outside become invalid).

    Args:
        image: ``(B, C, H, W)`` float.
        valid: ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        shift_px: (dx, dy) in pixels (see the module convention).

    Returns:
        ``(shifted (B, C, H, W), valid (B, 1, H, W) bool)``.
    """
    check_shape(image, 4, "image")
    if valid.dim() == 3:
        valid = valid[:, None]
    b, _, h, w = image.shape
    grid = _shift_grid(b, h, w, shift_px, image.device, image.dtype)
    filled = torch.where(valid, image, torch.zeros((), device=image.device, dtype=image.dtype))
    out = F.grid_sample(filled, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    # invalid pixels spread over the 4x4 support of the bicubic kernel: dilate them by 2 px, then
    # sample with nearest (padding zeros = invalid outside the image)
    invalid = F.max_pool2d((~valid).to(image.dtype), kernel_size=5, stride=1, padding=2)
    # the support of a sample at fractional position is the 4 nearest pixels in each direction: a
    # 5x5 dilation sampled at the nearest pixel covers it
    ok = F.grid_sample(1.0 - invalid, grid, mode="nearest", padding_mode="zeros", align_corners=False) > 0.5
    # pixels closer than 2 px to the border draw from outside the image
    ok &= _inside(h, w, shift_px, image.device)[None, None]
    return out * ok, ok


def _inside(h: int, w: int, shift_px: tuple[float, float], device) -> torch.Tensor:
    dx, dy = shift_px
    xs = torch.arange(w, device=device, dtype=torch.float64) + dx
    ys = torch.arange(h, device=device, dtype=torch.float64) + dy
    okx = (xs >= 1) & (xs <= w - 2)
    oky = (ys >= 1) & (ys <= h - 2)
    return oky[:, None] & okx[None, :]


def downsample_bicubic_x2(image: torch.Tensor) -> torch.Tensor:
    """Halve the resolution with an antialiased bicubic kernel, sampling the centre of each 2x2 block.

    Args:
        image: ``(B, C, H, W)`` with even H and W.

    Returns:
        ``(B, C, H/2, W/2)``: output pixel i sits at input coordinate 2i + 0.5, the centre of the
        block it covers (no half-pixel offset between the 5 m and 10 m grids).
    """
    check_shape(image, 4, "image")
    return F.interpolate(image, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
