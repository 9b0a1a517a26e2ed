"""Local geometric distortions of the synthetic VENuS products (ground truth for per-patch alignment).

VENuS views each site from a fixed, often oblique angle, Sentinel-2 close to nadir; both are
orthorectified with a DEM, so whatever the DEM misses — its errors over relief, buildings, tree
canopy — appears in VENuS displaced by ``height x tan(zenith)`` along the viewing azimuth. Here the
height field is a smooth random DEM error plus the canopy of the forests and the buildings of the
towns (from the landscape's classes, averaged over 20 m cells), and the displacement field
``D = h * tan(zenith) * (sin(azimuth), cos(azimuth))`` (metres east, north) is written with the
ground truth as a 2-band GeoTIFF on a 20 m grid. Convention: VENuS pixel p shows the ground at
``p - D(p)`` (a feature at g appears at g + D(g)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from .landscape import BUILT_UP, CLASSES, Landscape

FOREST = CLASSES.index("forest")
DISPLACEMENT_FILE = "venus_displacement.tif"
CELL_M = 20.0


@dataclass
class DistortionConfig:
    """Heights the orthorectification misses (metres) and the VENuS viewing geometry."""

    #: ``none`` (no local distortion: the default demo), ``flat``, ``hilly`` or ``urban``
    preset: str = "none"
    dem_error_m: float = 0.0  # standard deviation of the smooth DEM error
    dem_error_scale_m: float = 3000.0  # its correlation length (kilometres for SRTM-like DEMs)
    canopy_height_m: float = 0.0  # forests (not in the DEM)
    building_height_m: float = 0.0  # towns (not in the DEM)
    #: VENuS viewing zenith (degrees); None: the site's zenith of the ground truth
    zenith_deg: float | None = None
    azimuth_deg: float = 100.0  # viewing azimuth, clockwise from north
    #: standard deviation (pixels of each band) of the Sentinel-2 band-to-band offsets: every band of
    #: every product moved by its own constant (dx, dy); the mission's requirement is 0.3 px at 3 sigma
    s2_band_offset_px: float = 0.0


PRESETS = {
    "none": {},
    "flat": dict(dem_error_m=1.0),
    "hilly": dict(dem_error_m=12.0, dem_error_scale_m=3000.0, canopy_height_m=15.0),
    "urban": dict(dem_error_m=4.0, dem_error_scale_m=3000.0, canopy_height_m=10.0, building_height_m=25.0),
}


def distortion_preset(name: str, **overrides) -> DistortionConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown distortion preset {name!r}; choose from {sorted(PRESETS)}")
    return DistortionConfig(preset=name, **{**PRESETS[name], **overrides})


class DisplacementField:
    """The displacement ``D`` (metres) on a 20 m grid over the site, bilinearly interpolated."""

    def __init__(self, cfg: DistortionConfig, landscape: Landscape, bounds, zenith_deg: float, seed: int,
                 device: torch.device | str = "cpu") -> None:
        left, bottom, right, top = bounds
        self.left, self.top = left, top
        self.nx, self.ny = int(math.ceil((right - left) / CELL_M)), int(math.ceil((top - bottom) / CELL_M))
        xs = left + (np.arange(self.nx) + 0.5) * CELL_M
        ys = top - (np.arange(self.ny) + 0.5) * CELL_M
        x, y = np.meshgrid(xs, ys)
        height = _dem_error(x, y, cfg.dem_error_m, cfg.dem_error_scale_m, seed)
        if cfg.canopy_height_m or cfg.building_height_m:
            height = height + _cover_height(landscape, x, y, cfg, torch.device(device))
        zenith = cfg.zenith_deg if cfg.zenith_deg is not None else zenith_deg
        along = height * math.tan(math.radians(zenith))
        az = math.radians(cfg.azimuth_deg)
        self.dx, self.dy = (along * math.sin(az)).astype(np.float32), (along * math.cos(az)).astype(np.float32)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D_east, D_north)`` at points (metres, float64 tensors on the points' device), bilinear
        between cell centres, edges clamped."""
        if x.device not in self._on_device:
            self._on_device[x.device] = tuple(torch.from_numpy(g).to(x.device, torch.float64)
                                              for g in (self.dx, self.dy))
        fc = torch.clamp((x - self.left) / CELL_M - 0.5, 0, self.nx - 1)
        fr = torch.clamp((self.top - y) / CELL_M - 0.5, 0, self.ny - 1)
        c0, r0 = fc.to(torch.int64).clamp(max=self.nx - 2), fr.to(torch.int64).clamp(max=self.ny - 2)
        tc, tr = fc - c0, fr - r0
        out = []
        for grid in self._on_device[x.device]:
            top = grid[r0, c0] * (1 - tc) + grid[r0, c0 + 1] * tc
            bottom = grid[r0 + 1, c0] * (1 - tc) + grid[r0 + 1, c0 + 1] * tc
            out.append(top * (1 - tr) + bottom * tr)
        return out[0], out[1]

    def write(self, path: Path, crs: str) -> None:
        profile = dict(driver="GTiff", width=self.nx, height=self.ny, count=2, dtype="float32", crs=crs,
                       transform=Affine(CELL_M, 0, self.left, 0, -CELL_M, self.top))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.stack([self.dx, self.dy]))
            dst.set_band_description(1, "displacement east (m)")
            dst.set_band_description(2, "displacement north (m)")


def band_offsets(cfg: DistortionConfig, bands: list[str], seed: int) -> dict[str, tuple[float, float]]:
    """Each Sentinel-2 band's constant offset (dx right, dy down, pixels of the band): band b shows the
    ground at p - o_b (a feature appears o_b further). Empty when ``s2_band_offset_px`` is 0."""
    if cfg.s2_band_offset_px <= 0:
        return {}
    rng = np.random.default_rng(seed + 104729)
    return {b: tuple(float(v) for v in rng.normal(0.0, cfg.s2_band_offset_px, 2)) for b in bands}


def shift_band(image: np.ndarray, offset: tuple[float, float], pad: int = 32) -> np.ndarray:
    """``image`` with its content moved by ``offset`` (dx right, dy down, pixels): an exact Fourier
    shift of the band-limited rendering, on a mirror-padded copy (no wrap-around at the edges)."""
    h, w = image.shape
    x = np.pad(image.astype(np.float64), pad, mode="symmetric")
    ky, kx = np.fft.fftfreq(x.shape[0])[:, None], np.fft.fftfreq(x.shape[1])[None, :]
    moved = np.fft.ifft2(np.fft.fft2(x) * np.exp(-2j * np.pi * (kx * offset[0] + ky * offset[1]))).real
    return moved[pad:pad + h, pad:pad + w].astype(image.dtype)


def _dem_error(x: np.ndarray, y: np.ndarray, std: float, scale: float, seed: int) -> np.ndarray:
    """A smooth random field of standard deviation ``std``: a sum of random plane waves."""
    if std <= 0:
        return np.zeros_like(x)
    rng = np.random.default_rng(seed + 7919)
    out = np.zeros_like(x)
    waves = 24
    for _ in range(waves):
        k = 2 * math.pi / (scale * rng.uniform(0.6, 2.5))
        a = rng.uniform(0, 2 * math.pi)
        out += np.cos(k * (x * math.cos(a) + y * math.sin(a)) + rng.uniform(0, 2 * math.pi))
    return out * std * math.sqrt(2.0 / waves)


def _cover_height(landscape: Landscape, x: np.ndarray, y: np.ndarray, cfg: DistortionConfig,
                  device: torch.device) -> np.ndarray:
    """Canopy and building heights averaged over each 20 m cell (4 x 4 samples per cell)."""
    offsets = (np.arange(4) + 0.5) * CELL_M / 4 - CELL_M / 2
    xt, yt = (torch.from_numpy(a).to(device) for a in (x, y))
    total = torch.zeros_like(xt)
    for ox in offsets:
        for oy in offsets:
            cls, _, _ = landscape.sample(xt + ox, yt + oy)
            # float64 throughout, as the numpy version (a where() of two Python floats is float32)
            total += (cls == FOREST).to(total.dtype) * cfg.canopy_height_m
            total += (cls == BUILT_UP).to(total.dtype) * cfg.building_height_m
    return (total / offsets.size**2).cpu().numpy()
