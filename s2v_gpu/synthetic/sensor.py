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

from .landscape import BUILT_UP, WATER, Landscape

#: Maps sensor-CRS coordinates to ground (VENuS CRS) coordinates.
ToGround = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _lattice_hash(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (seed * 2654435761 % 2**31)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(np.float64) / float(0x1000000)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int, scale: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features of about ``scale`` metres, defined everywhere."""
    total = np.zeros(np.shape(x))
    weight = 0.0
    for octave, amp in enumerate((1.0, 0.35)):
        s = scale / 2**octave
        gx, gy = x / s, y / s
        i0, j0 = np.floor(gx), np.floor(gy)
        fx, fy = gx - i0, gy - j0
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        seed_o = seed + 1013 * octave
        v00 = _lattice_hash(i0, j0, seed_o)
        v10 = _lattice_hash(i0 + 1, j0, seed_o)
        v01 = _lattice_hash(i0, j0 + 1, seed_o)
        v11 = _lattice_hash(i0 + 1, j0 + 1, seed_o)
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
        v = value_noise(gx, gy, seed, cls.scale_m)
        return cls(seed, fraction, float(np.quantile(v, 1.0 - fraction)))

    def opacity(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cloud opacity, shadow strength), both in [0, 1], at ground points."""
        if self.threshold == math.inf:
            zero = np.zeros(np.shape(x))
            return zero, zero
        if self.threshold == -math.inf:
            return np.ones(np.shape(x)), np.zeros(np.shape(x))
        alpha = np.clip((value_noise(x, y, self.seed, self.scale_m) - self.threshold) / 0.04, 0, 1)
        sx, sy = self.shadow_offset_m
        beta = np.clip((value_noise(x - sx, y - sy, self.seed, self.scale_m) - self.threshold) / 0.04, 0, 1)
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


def render(
    landscape: Landscape,
    band_values: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    sigmas_m: list[float],
    origin: tuple[float, float],
    res: float,
    shape: tuple[int, int],
    step: float,
    shift_m: tuple[float, float] = (0.0, 0.0),
    clouds: CloudField | None = None,
    to_ground: ToGround | None = None,
    strip_rows: int = 128,
    displacement: ToGround | None = None,
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
        strip_rows: output rows rendered at a time (bounds memory for full-size sites).
        displacement: a local geolocation error field (x, y) -> (dx, dy) metres: position p shows the
            ground at p - shift - displacement(p) (see :mod:`s2v_gpu.synthetic.distortion`).
    """
    nf = int(round(res / step))
    if abs(nf * step - res) > 1e-9:
        raise ValueError(f"resolution {res} is not a multiple of the render step {step}")
    h, w = shape
    margin = max(int(math.ceil(4.0 * s / step)) for s in sigmas_m) + 1
    taps = _psf_taps(sigmas_m, step)
    out = Rendered(np.empty((len(sigmas_m), h, w), np.float32), *(np.zeros((h, w), bool) for _ in range(4)))
    x0, y0 = origin
    cols = x0 + (np.arange(-margin, w * nf + margin) + 0.5) * step
    for r0 in range(0, h, strip_rows):
        r1 = min(h, r0 + strip_rows)
        rows = y0 - (np.arange(r0 * nf - margin, r1 * nf + margin) + 0.5) * step
        xs, ys = np.meshgrid(cols, rows)
        if to_ground is not None:
            xs, ys = to_ground(xs, ys)
        gx, gy = _ground(xs, ys, shift_m, displacement)
        values, cls = band_values(gx, gy)
        values, alpha, beta = _under_clouds(values, clouds, gx, gy)
        out.refl[:, r0:r1] = _integrate(values, taps, margin, nf, r1 - r0, w)
        blocks = {"margin": margin, "nf": nf, "shape": (r1 - r0, w)}
        out.cloud[r0:r1] = _block(alpha, "max", **blocks) > 0.01
        out.shadow[r0:r1] = _block(beta, "max", **blocks) > 0.01
        out.water[r0:r1] = _block((cls == WATER).astype(np.float64), "mean", **blocks) > 0.5
        out.built[r0:r1] = _block((cls == BUILT_UP).astype(np.float64), "mean", **blocks) > 0.5
    # the PSF spreads clouds over neighbouring pixels: flag them too (as MAJA's dilation does)
    out.cloud = _dilate(out.cloud)
    out.shadow = _dilate(out.shadow) & ~out.cloud
    return out


def _ground(xs: np.ndarray, ys: np.ndarray, shift_m, displacement) -> tuple[np.ndarray, np.ndarray]:
    """The ground a product shows at positions (xs, ys): moved by the global shift and the local field."""
    gx, gy = xs - shift_m[0], ys - shift_m[1]
    if displacement is None:
        return gx, gy
    ddx, ddy = displacement(xs, ys)
    return gx - ddx, gy - ddy


def _block(a: np.ndarray, reduce: str, margin: int, nf: int, shape: tuple[int, int]) -> np.ndarray:
    """Fine samples (margin cropped) -> one value per pixel: the max or the mean of its block."""
    t = torch.from_numpy(np.ascontiguousarray(a[margin:-margin, margin:-margin], dtype=np.float64))
    t = F.max_pool2d(t[None, None], nf) if reduce == "max" else F.avg_pool2d(t[None, None], nf)
    return t.squeeze().numpy().reshape(shape)


def _under_clouds(values: np.ndarray, clouds: CloudField | None, gx: np.ndarray, gy: np.ndarray):
    """Reflectance seen through the clouds (bright, opacity alpha) and their shadows (darker, beta)."""
    if clouds is None:
        return values, np.zeros(gx.shape), np.zeros(gx.shape)
    alpha, beta = clouds.opacity(gx, gy)
    values = values * (1 - alpha) + alpha * 0.55
    return values * (1 - 0.65 * beta), alpha, beta


def _psf_taps(sigmas_m: list[float], step: float) -> torch.Tensor:
    """``(C, size)`` Gaussian PSF kernels at the fine step, zero-padded to one odd length (centred)."""
    kernels = [gaussian_kernel_1d(s / step) for s in sigmas_m]
    size = max(k.numel() for k in kernels)
    return torch.stack([F.pad(k, ((size - k.numel()) // 2, (size - k.numel()) // 2)) for k in kernels])


def _integrate(values: np.ndarray, taps: torch.Tensor, margin: int, nf: int, rows: int, w: int) -> np.ndarray:
    """Fine samples ``(C, ...)`` -> pixels ``(C, rows, w)``: every band blurred by its PSF in one
    depthwise convolution (channels_last: the fast kernels), the margin left by the valid convolutions
    cropped, then each pixel integrated (mean of its ``nf x nf`` fine samples)."""
    c, size = taps.shape
    fine = torch.from_numpy(values.astype(np.float32))[None].contiguous(memory_format=torch.channels_last)
    img = F.conv2d(fine, taps.view(c, 1, 1, -1), groups=c)
    img = F.conv2d(img, taps.view(c, 1, -1, 1), groups=c)
    off = margin - (size - 1) // 2
    img = img[..., off: off + rows * nf, off: off + w * nf]
    return F.avg_pool2d(img, nf)[0].numpy()


def _dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius).squeeze().numpy().reshape(mask.shape) > 0
