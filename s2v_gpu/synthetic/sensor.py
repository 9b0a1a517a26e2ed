"""Rendering a sensor's view of the synthetic landscape: clouds, shadows, MTF blur, pixel integration.

Each pixel is the average of ``res / step`` x ``res / step`` fine samples of the continuous landscape,
blurred beforehand by the band's Gaussian PSF (sigma from the MTF at Nyquist, as in sensorsio). Pixel
centres are at ``origin + (j + 0.5) * res``: the 10 m and 20 m grids are exactly centred on 2x2 and
4x4 blocks of 5 m pixels when their origins coincide (no half-pixel trap in the ground truth).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..precision import full_float32
from .landscape import BUILT_UP, HASH_I, HASH_J, WATER, Landscape, hash_draw

#: Maps sensor-CRS coordinates to ground (VENuS CRS) coordinates (float64 tensors).
ToGround = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def value_noise(x: torch.Tensor, y: torch.Tensor, seed: int, scale: float) -> torch.Tensor:
    """Smooth noise in [0, 1] with features of about ``scale`` metres, defined everywhere (float64,
    on the device of ``x``)."""
    total = torch.zeros_like(x)
    weight = 0.0
    for octave, amp in enumerate((1.0, 0.35)):
        s = scale / 2**octave
        gx, gy = x / s, y / s
        i0, j0 = torch.floor(gx), torch.floor(gy)
        fx, fy = gx - i0, gy - j0
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        salt = (seed + 1013 * octave) * 2654435761 % 2**31
        # the four corners' hashes share their coordinate terms ((i + 1) * a = i * a + a, wrapping too)
        ia, jb = i0.to(torch.int64) * HASH_I, j0.to(torch.int64) * HASH_J
        v00, v10 = hash_draw(ia ^ jb, salt), hash_draw((ia + HASH_I) ^ jb, salt)
        v01, v11 = hash_draw(ia ^ (jb + HASH_J), salt), hash_draw((ia + HASH_I) ^ (jb + HASH_J), salt)
        total += amp * ((v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy)
        weight += amp
    return total / weight


@dataclass
class CloudField:
    """Clouds of one product: opacity where noise exceeds a threshold, shadows cast at an offset.

    A fraction of 0 gives no cloud, 1 a fully cloudy product.
    """

    seed: int
    fraction: float
    threshold: float
    scale_m: float = 1200.0
    shadow_offset_m: tuple[float, float] = (180.0, -120.0)

    @classmethod
    def for_area(cls, seed: int, fraction: float, bounds: tuple[float, float, float, float]) -> CloudField:
        """Pick the threshold so that about ``fraction`` of ``bounds`` (ground coords) is cloudy."""
        if fraction <= 0:
            return cls(seed, 0.0, math.inf)
        if fraction >= 1:
            return cls(seed, 1.0, -math.inf)
        left, bottom, right, top = bounds
        gx, gy = np.meshgrid(np.linspace(left, right, 96), np.linspace(bottom, top, 96))
        v = value_noise(torch.from_numpy(gx), torch.from_numpy(gy), seed, cls.scale_m).numpy()
        return cls(seed, fraction, float(np.quantile(v, 1.0 - fraction)))

    def opacity(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cloud opacity, shadow strength), both in [0, 1], at ground points."""
        if self.threshold == math.inf:
            zero = torch.zeros_like(x)
            return zero, zero
        if self.threshold == -math.inf:
            return torch.ones_like(x), torch.zeros_like(x)
        alpha = torch.clamp((value_noise(x, y, self.seed, self.scale_m) - self.threshold) / 0.04, 0, 1)
        sx, sy = self.shadow_offset_m
        beta = torch.clamp((value_noise(x - sx, y - sy, self.seed, self.scale_m) - self.threshold) / 0.04, 0, 1)
        return alpha, beta * (1 - alpha)


def gaussian_kernel_1d(sigma_px: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length 2*ceil(4 sigma)+1 (float32)."""
    radius = max(1, int(math.ceil(4.0 * sigma_px)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    return k / k.sum()


@dataclass
class Rendered:
    """A product's pixels before quantisation: ``refl`` (C, H, W) reflectance and per-pixel flags."""

    refl: np.ndarray
    cloud: np.ndarray
    shadow: np.ndarray
    water: np.ndarray
    built: np.ndarray


@full_float32
def render(
    landscape: Landscape,
    band_values: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    sigmas_m: list[float],
    origin: tuple[float, float],
    res: float,
    shape: tuple[int, int],
    step: float,
    shift_m: tuple[float, float] = (0.0, 0.0),
    clouds: CloudField | None = None,
    to_ground: ToGround | None = None,
    strip_rows: int | None = None,
    displacement: ToGround | None = None,
    device: torch.device | str = "cpu",
) -> Rendered:
    """Render ``len(sigmas_m)`` bands of a sensor grid.

    Args:
        landscape: the ground truth.
        band_values: ground (x, y) -> ``(refl (C, ...), class)``, the surface reflectance of the bands.
        sigmas_m: PSF standard deviation of each band, metres.
        origin: upper-left corner of the grid (sensor CRS).
        res: pixel size (metres); a multiple of ``step``.
        shape: (H, W) in pixels.
        step: fine sampling step (metres).
        shift_m: geolocation error: the product shows ground position p - shift at position p.
        clouds: the product's clouds (None: clear sky).
        to_ground: sensor CRS -> ground CRS, when they differ.
        strip_rows: output rows rendered at a time (bounds memory for full-size sites); None: 128 on
            the CPU, 512 on a GPU (fewer, larger kernels).
        displacement: a local geolocation error field (x, y) -> (dx, dy) metres: position p shows the
            ground at p - shift - displacement(p) (see :mod:`s2v_gpu.synthetic.distortion`).
        device: where the landscape is sampled, blurred and integrated (float64 sampling: the same
            products on every device, up to the last bit of a few pixels).
    """
    nf = int(round(res / step))
    if abs(nf * step - res) > 1e-9:
        raise ValueError(f"resolution {res} is not a multiple of the render step {step}")
    device = torch.device(device)
    strip_rows = strip_rows or (512 if device.type == "cuda" else 128)
    h, w = shape
    margin = max(int(math.ceil(4.0 * s / step)) for s in sigmas_m) + 1
    taps = _psf_taps(sigmas_m, step).to(device)
    out = Rendered(np.empty((len(sigmas_m), h, w), np.float32), *(np.zeros((h, w), bool) for _ in range(4)))
    x0, y0 = origin
    f64 = dict(dtype=torch.float64, device=device)
    cols = x0 + (torch.arange(-margin, w * nf + margin, **f64) + 0.5) * step
    for r0 in range(0, h, strip_rows):
        r1 = min(h, r0 + strip_rows)
        rows = y0 - (torch.arange(r0 * nf - margin, r1 * nf + margin, **f64) + 0.5) * step
        ys, xs = torch.meshgrid(rows, cols, indexing="ij")
        if to_ground is not None:
            xs, ys = to_ground(xs, ys)
        gx, gy = _ground(xs, ys, shift_m, displacement)
        _render_strip(out, slice(r0, r1), band_values(gx, gy), clouds, gx, gy, taps, margin, nf)
    # the PSF spreads clouds over neighbouring pixels: flag them too (as MAJA's dilation does)
    out.cloud = _dilate(out.cloud)
    out.shadow = _dilate(out.shadow) & ~out.cloud
    return out


def _render_strip(out: Rendered, rows: slice, sampled, clouds, gx, gy, taps, margin: int, nf: int) -> None:
    """Output rows ``rows`` of ``out`` from the fine samples ``sampled`` = (values, classes) at ground
    points (gx, gy): clouds, PSF, pixel integration and the per-pixel flags (copied to the host)."""
    values, cls = sampled
    values, alpha, beta = _under_clouds(values, clouds, gx, gy)
    blocks = {"margin": margin, "nf": nf, "shape": (rows.stop - rows.start, out.refl.shape[-1])}
    out.refl[:, rows] = _integrate(values, taps, margin, nf, *blocks["shape"])
    out.cloud[rows] = _block(alpha, "max", **blocks) > 0.01
    out.shadow[rows] = _block(beta, "max", **blocks) > 0.01
    out.water[rows] = _block((cls == WATER).to(torch.float64), "mean", **blocks) > 0.5
    out.built[rows] = _block((cls == BUILT_UP).to(torch.float64), "mean", **blocks) > 0.5


def _ground(xs: torch.Tensor, ys: torch.Tensor, shift_m, displacement) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground a product shows at positions (xs, ys): moved by the global shift and the local field."""
    gx, gy = xs - shift_m[0], ys - shift_m[1]
    if displacement is None:
        return gx, gy
    ddx, ddy = displacement(xs, ys)
    return gx - ddx, gy - ddy


def _block(a: torch.Tensor, reduce: str, margin: int, nf: int, shape: tuple[int, int]) -> np.ndarray:
    """Fine samples (margin cropped) -> one value per pixel (host): the max or the mean of its block."""
    t = a[margin:-margin, margin:-margin].to(torch.float64)[None, None]
    t = F.max_pool2d(t, nf) if reduce == "max" else F.avg_pool2d(t, nf)
    return t.squeeze().cpu().numpy().reshape(shape)


def _under_clouds(values: torch.Tensor, clouds: CloudField | None, gx: torch.Tensor, gy: torch.Tensor):
    """Reflectance seen through the clouds (bright, opacity alpha) and their shadows (darker, beta)."""
    if clouds is None:
        return values, torch.zeros_like(gx), torch.zeros_like(gx)
    alpha, beta = clouds.opacity(gx, gy)
    values = values * (1 - alpha) + alpha * 0.55
    return values * (1 - 0.65 * beta), alpha, beta


def _psf_taps(sigmas_m: list[float], step: float) -> torch.Tensor:
    """``(C, size)`` Gaussian PSF kernels at the fine step, zero-padded to one odd length (centred)."""
    kernels = [gaussian_kernel_1d(s / step) for s in sigmas_m]
    size = max(k.numel() for k in kernels)
    return torch.stack([F.pad(k, ((size - k.numel()) // 2, (size - k.numel()) // 2)) for k in kernels])


def _integrate(values: torch.Tensor, taps: torch.Tensor, margin: int, nf: int, rows: int, w: int) -> np.ndarray:
    """Fine samples ``(C, ...)`` -> pixels ``(C, rows, w)`` (host): every band blurred by its PSF in one
    depthwise convolution (channels_last: the fast kernels), the margin left by the valid convolutions
    cropped, then each pixel integrated (mean of its ``nf x nf`` fine samples)."""
    c, size = taps.shape
    fine = values.to(torch.float32)[None].contiguous(memory_format=torch.channels_last)
    img = F.conv2d(fine, taps.view(c, 1, 1, -1), groups=c)
    img = F.conv2d(img, taps.view(c, 1, -1, 1), groups=c)
    off = margin - (size - 1) // 2
    img = img[..., off: off + rows * nf, off: off + w * nf]
    return F.avg_pool2d(img, nf)[0].cpu().numpy()


def _dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius).squeeze().numpy().reshape(mask.shape) > 0
