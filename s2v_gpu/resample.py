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
    image: torch.Tensor, valid: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor, method: str = "keys"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an image at fractional pixel positions.

    Args:
        image: ``(B, C, H, W)`` float.
        valid: ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        cols, rows: ``(h, w)`` positions (pixel index units: 0 is the centre of the first pixel),
            shared by the batch.
        method: ``"keys"`` (default): the 4x4 Keys cubic (a = -0.5, as :func:`apply_shift`), a sample
            being valid when its 16 taps are valid and inside the image; ``"grid_sample"``: PyTorch's
            bicubic ``grid_sample`` (a = -0.75), validity sampled with nearest from the invalid pixels
            dilated by 2.

    Returns:
        ``(samples (B, C, h, w), valid (B, 1, h, w) bool)``; invalid samples hold 0.
    """
    check_shape(image, 4, "image")
    if valid.dim() == 3:
        valid = valid[:, None]
    b, c, h, w = image.shape
    filled = torch.where(valid, image, torch.zeros((), device=image.device, dtype=image.dtype))
    if method == "keys":
        c0, r0 = torch.floor(cols), torch.floor(rows)
        wx, wy = _keys(cols - c0), _keys(rows - r0)  # (4, h, w) each
        c0, r0 = c0.long(), r0.long()
        out = torch.zeros((b, c) + tuple(cols.shape), device=image.device, dtype=image.dtype)
        ok = torch.ones((b, 1) + tuple(cols.shape), device=image.device, dtype=torch.bool)
        for j in range(4):
            rr = r0 + j - 1
            rin = (rr >= 0) & (rr < h)
            rr = rr.clamp(0, h - 1)
            for i in range(4):
                cc = c0 + i - 1
                inside = rin & (cc >= 0) & (cc < w)
                cc = cc.clamp(0, w - 1)
                out = out + (wy[j] * wx[i]).to(image.dtype) * filled[:, :, rr, cc]
                ok &= inside & valid[:, :, rr, cc]
        return out * ok, ok
    if method != "grid_sample":
        raise ValueError(f"unknown resampling method {method!r} (expected 'keys' or 'grid_sample')")
    grid = torch.stack(((cols + 0.5) * (2.0 / w) - 1.0, (rows + 0.5) * (2.0 / h) - 1.0), dim=-1)
    grid = grid.to(image.dtype).expand(b, *cols.shape, 2)
    out = F.grid_sample(filled, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    # the bicubic support of a sample is the 4 nearest pixels along each axis: dilate the invalid
    # pixels by 2 and sample that with nearest
    invalid = F.max_pool2d((~valid).to(image.dtype), kernel_size=5, stride=1, padding=2)
    ok = F.grid_sample(1.0 - invalid, grid, mode="nearest", padding_mode="zeros", align_corners=False) > 0.5
    inside = (cols >= 1) & (cols <= w - 2) & (rows >= 1) & (rows <= h - 2)
    ok &= inside.to(ok.device)[None, None]
    return out * ok, ok


def _keys(t: torch.Tensor, a: float = -0.5, derivative: bool = False) -> torch.Tensor:
    """Keys cubic weights of the taps at offsets -1, 0, 1, 2 for fractions t: ``(4, *t.shape)``.

    ``a = -0.5`` (Keys 1981) reproduces polynomials up to degree 2; PyTorch's and OpenCV's bicubic use
    ``a = -0.75``, which does not reproduce a linear ramp (0.04 px error at t = 0.3). With
    ``derivative`` the weights give the derivative of the interpolant with respect to t instead.
    """
    out = []
    for o in (-1, 0, 1, 2):
        u = t - o
        x = u.abs()
        if derivative:
            near = (3 * (a + 2) * x - 2 * (a + 3)) * x
            far = (3 * a * x - 10 * a) * x + 8 * a
            out.append(torch.sign(u) * torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x))))
        else:
            near = (a + 2) * x**3 - (a + 3) * x**2 + 1
            far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
            out.append(torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x))))
    return torch.stack(out)


def sample_points(image: torch.Tensor, valid: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys cubic value and gradient of one image at scattered points (one 16-tap gather).

    Args:
        image: ``(H, W)`` float.
        valid: ``(H, W)`` bool.
        cols, rows: ``(N,)`` positions (0 = centre of the first pixel).

    Returns:
        ``(value, d/dx, d/dy, ok)``, each ``(N,)``: the interpolant and its exact derivatives; ``ok``
        is True where the 16 taps are all valid and inside (values elsewhere are meaningless).
    """
    h, w = image.shape
    c0, r0 = torch.floor(cols), torch.floor(rows)
    tx, ty = cols - c0, rows - r0
    c0, r0 = c0.long(), r0.long()
    inside = (c0 >= 1) & (c0 <= w - 3) & (r0 >= 1) & (r0 <= h - 3)
    c0, r0 = c0.clamp(1, w - 3), r0.clamp(1, h - 3)
    offsets = torch.arange(-1, 3, device=image.device)
    idx = (r0[None, None] + offsets[:, None, None]) * w + (c0[None, None] + offsets[None, :, None])  # 4, 4, N
    ok = inside & valid.reshape(-1)[idx].flatten(0, 1).all(0)
    taps = image.reshape(-1)[idx].to(cols.dtype)  # rows j, columns i
    wx, wy = _keys(tx), _keys(ty)
    dwx, dwy = _keys(tx, derivative=True), _keys(ty, derivative=True)
    along_x = (taps * wx[None]).sum(1)  # 4 (rows), N
    value = (along_x * wy).sum(0)
    dy = (along_x * dwy).sum(0)
    dx = ((taps * dwx[None]).sum(1) * wy).sum(0)
    return value, dx, dy, ok


def _shift_axis(x: torch.Tensor, ok: torch.Tensor, d: float, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """out(p) = x(p + d) along ``dim`` with the 4-tap Keys cubic; ok = every tap used valid and inside."""
    n = int(torch.floor(torch.tensor(d)).item())
    weights = _keys(torch.tensor(d - n, dtype=torch.float64)).tolist()
    size = x.shape[dim]
    pad = abs(n) + 3
    pads = [0, 0] * (x.dim() - 1 - dim) + [pad, pad]
    xp = F.pad(x, pads)
    okp = F.pad(ok, pads)  # False outside
    out = None
    good = None
    for w, o in zip(weights, (-1, 0, 1, 2)):
        if w == 0.0:
            continue
        start = pad + n + o
        tap = xp.narrow(dim, start, size)
        out = tap * w if out is None else out.add_(tap, alpha=w)
        good = okp.narrow(dim, start, size).clone() if good is None else good.logical_and_(okp.narrow(dim, start, size))
    return out, good


def apply_shift(
    image: torch.Tensor, valid: torch.Tensor, shift_px: tuple[float, float], method: str = "keys"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an image at ``p + shift``, i.e. bring a moving image onto its reference.

    Args:
        image: ``(B, C, H, W)`` float.
        valid: ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        shift_px: (dx, dy) in pixels (see the module convention).
        method: ``"keys"`` (default): separable 4-tap bicubic (Keys, a = -0.5), exact for integer
            shifts and for linear ramps; a sample is valid when every tap it uses is valid and inside.
            ``"grid_sample"``: PyTorch's bicubic ``grid_sample`` (a = -0.75) through :func:`sample_at`.

    Returns:
        ``(shifted (B, C, H, W), valid (B, 1, H, W) bool)``; invalid samples hold 0.
    """
    check_shape(image, 4, "image")
    if valid.dim() == 3:
        valid = valid[:, None]
    if method == "grid_sample":
        h, w = image.shape[-2:]
        dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        rows = torch.arange(h, device=image.device, dtype=dtype) + shift_px[1]
        cols = torch.arange(w, device=image.device, dtype=dtype) + shift_px[0]
        rr, cc = torch.meshgrid(rows, cols, indexing="ij")
        return sample_at(image, valid, cc, rr, method="grid_sample")
    if method != "keys":
        raise ValueError(f"unknown shift method {method!r} (expected 'keys' or 'grid_sample')")
    x = torch.where(valid, image, torch.zeros((), device=image.device, dtype=image.dtype))
    x, ok = _shift_axis(x, valid, float(shift_px[0]), dim=3)
    x, ok = _shift_axis(x, ok, float(shift_px[1]), dim=2)
    return x * ok, ok


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
