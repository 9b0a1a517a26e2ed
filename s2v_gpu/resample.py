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


def sample_at(
    image: torch.Tensor, valid: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an image at fractional pixel positions: bicubic ``grid_sample`` for the values,
    nearest for the validity.

    A sample is valid only if the 4x4 bicubic support it draws from lies inside the image and holds
    only valid pixels (pixels pulled in from outside become invalid).

    Args:
        image: ``(B, C, H, W)`` float.
        valid: ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        cols, rows: ``(h, w)`` positions (pixel index units: 0 is the centre of the first pixel),
            shared by the batch.

    Returns:
        ``(samples (B, C, h, w), valid (B, 1, h, w) bool)``; invalid samples hold 0.
    """
    check_shape(image, 4, "image")
    if valid.dim() == 3:
        valid = valid[:, None]
    b, _, h, w = image.shape
    grid = torch.stack(((cols + 0.5) * (2.0 / w) - 1.0, (rows + 0.5) * (2.0 / h) - 1.0), dim=-1)
    grid = grid.to(image.dtype).expand(b, *cols.shape, 2)
    filled = torch.where(valid, image, torch.zeros((), device=image.device, dtype=image.dtype))
    out = F.grid_sample(filled, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    # the bicubic support of a sample is the 4 nearest pixels along each axis: dilate the invalid
    # pixels by 2 and sample that with nearest
    invalid = F.max_pool2d((~valid).to(image.dtype), kernel_size=5, stride=1, padding=2)
    ok = F.grid_sample(1.0 - invalid, grid, mode="nearest", padding_mode="zeros", align_corners=False) > 0.5
    inside = (cols >= 1) & (cols <= w - 2) & (rows >= 1) & (rows <= h - 2)
    ok &= inside.to(ok.device)[None, None]
    return out * ok, ok


def apply_shift(
    image: torch.Tensor, valid: torch.Tensor, shift_px: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an image at ``p + shift`` (bicubic ``grid_sample``; validity with nearest).

    Args:
        image: ``(B, C, H, W)`` float.
        valid: ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        shift_px: (dx, dy) in pixels (see the module convention).

    Returns:
        ``(shifted (B, C, H, W), valid (B, 1, H, W) bool)``; see :func:`sample_at`.
    """
    check_shape(image, 4, "image")
    h, w = image.shape[-2:]
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    rows = torch.arange(h, device=image.device, dtype=dtype) + shift_px[1]
    cols = torch.arange(w, device=image.device, dtype=dtype) + shift_px[0]
    rr, cc = torch.meshgrid(rows, cols, indexing="ij")
    return sample_at(image, valid, cc, rr)


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
