"""The common footprint of a pair and its nested 5 m / 10 m / 20 m grids; reading Sentinel-2 onto them.

The common grid is the intersection of the two footprints, shrunk to whole 20 m cells of the VENuS
grid: its origin is a VENuS pixel corner and its size a multiple of 4 VENuS pixels, so one 10 m pixel
is exactly 2x2 VENuS pixels and one 20 m pixel 4x4. When Sentinel-2 is in another CRS (neighbouring
UTM zone) or its grid is not aligned with these cells, it is resampled onto them on the device
(:func:`~s2v_gpu.resample.sample_at`: the separable cubic at exactly mapped positions, a sample valid
when every tap it uses is), reading only the source window needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from affine import Affine
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from .patches import patch_corners
from .products.product import BandStack, Grid, MaskConfig, TheiaProduct
from .resample import KERNELS, sample_at

CELL_M = 20.0  # the coarsest resolution: the common grid is made of whole 20 m cells


@dataclass(frozen=True)
class CommonGrid:
    """The common footprint on the VENuS grid: CRS, upper-left corner, size in 5 m pixels."""

    crs: object
    left: float
    top: float
    width: int
    height: int

    def at(self, res: float) -> Grid:
        """The grid at ``res`` metres (5, 10 or 20) covering the same footprint."""
        factor = int(round(res / 5.0))
        return Grid(self.crs, Affine(res, 0.0, self.left, 0.0, -res, self.top), self.width // factor,
                    self.height // factor)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.at(5.0).bounds

    def expanded(self, res: float, margin_px: int) -> Grid:
        """The grid at ``res`` grown by ``margin_px`` pixels on every side."""
        g = self.at(res)
        return Grid(self.crs, Affine(res, 0.0, self.left - margin_px * res, 0.0, -res, self.top + margin_px * res),
                    g.width + 2 * margin_px, g.height + 2 * margin_px)


def common_grid(venus: Grid, s2: Grid, min_size_px: int = 4) -> CommonGrid | None:
    """Intersection of a VENuS footprint and a Sentinel-2 footprint, on whole 20 m cells of the VENuS grid.

    Args:
        venus: the VENuS (XS, 5 m) grid.
        s2: a Sentinel-2 grid (any CRS).
        min_size_px: smallest width/height (5 m pixels) worth keeping.

    Returns:
        The common grid, or None when the footprints do not overlap enough.
    """
    sl, sb, sr, st = s2.bounds
    if s2.crs != venus.crs:
        sl, sb, sr, st = transform_bounds(s2.crs, venus.crs, sl, sb, sr, st, densify_pts=21)
    vl, vb, vr, vt = venus.bounds
    left, right = max(vl, sl), min(vr, sr)
    bottom, top = max(vb, sb), min(vt, st)
    # snap inwards to whole 20 m cells counted from the VENuS origin
    left = vl + math.ceil((left - vl) / CELL_M - 1e-9) * CELL_M
    right = vl + math.floor((right - vl) / CELL_M + 1e-9) * CELL_M
    top = vt - math.ceil((vt - top) / CELL_M - 1e-9) * CELL_M
    bottom = vt - math.floor((vt - bottom) / CELL_M + 1e-9) * CELL_M
    width, height = int(round((right - left) / 5.0)), int(round((top - bottom) / 5.0))
    if width < min_size_px or height < min_size_px:
        return None
    return CommonGrid(venus.crs, left, top, width, height)


def translated(grid: Grid, dx_m: float, dy_m: float) -> Grid:
    """The same grid moved by (dx east, dy north) metres."""
    t = grid.transform
    return Grid(grid.crs, Affine(t.a, t.b, t.c + dx_m, t.d, t.e, t.f + dy_m), grid.width, grid.height)


def is_aligned(src: Grid, target: Grid) -> bool:
    """Same CRS and resolution, origins a whole number of pixels apart: a window read, no resampling."""
    if src.crs != target.crs or abs(src.res - target.res) > 1e-9:
        return False
    dx = (target.transform.c - src.transform.c) / src.res
    dy = (src.transform.f - target.transform.f) / src.res
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def read_on_grid(
    product: TheiaProduct, bands: tuple[str, ...], target: Grid, *, kind: str = "FRE",
    masks: MaskConfig | None = None, device: torch.device | str = "cpu", coarse_step: int = 32,
    kernel: str = "lanczos4",
) -> BandStack:
    """Read bands of one resolution group onto ``target`` (any CRS), reading only what is needed.

    Aligned grids are read directly; otherwise the product's own pixels around ``target`` are read
    (:func:`source_window`) and resampled once at the target pixel centres with ``kernel``.

    Returns:
        A :class:`BandStack` on ``target``: ``reflectance`` ``(C, H, W)``, ``valid`` ``(H, W)``.
    """
    if is_aligned(product.grid(product.group_of(bands[0])), target):
        return product.read(bands, target.bounds, kind=kind, masks=masks, device=device)
    return source_window(product, bands, target, kind=kind, masks=masks, device=device, coarse_step=coarse_step,
                         kernel=kernel).sample(kernel)


@dataclass
class SourceWindow:
    """A product's own pixels read around a target grid, and where every target pixel centre falls
    in them: what resamples a Sentinel-2 off the VENuS grid once, from its raw pixels, whether on the
    whole target or patch by patch at extra displacements (the local registration model).

    Attributes:
        stack: the raw window (``reflectance`` ``(C, Hs, Ws)``, ``valid`` ``(Hs, Ws)``).
        cols, rows: ``(H, W)`` float64 positions of the target pixel centres in the window (pixel
            index units: 0 is the centre of its first pixel).
        target: the target grid.
    """

    stack: BandStack
    cols: torch.Tensor
    rows: torch.Tensor
    target: Grid
    #: pixels of the window beyond the taps of the target's own positions, on every side
    pad_px: int = 0

    def sample(self, kernel: str) -> BandStack:
        """The bands resampled on the whole target grid."""
        values, valid = sample_at(self.stack.reflectance[None], self.stack.valid[None], self.cols.float(),
                                  self.rows.float(), method=kernel)
        return BandStack(values[0], valid[0, 0], self.stack.bands, self.target)

    def sample_patches(self, values: torch.Tensor, ids: torch.Tensor, size: int, disp: torch.Tensor,
                       kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches of the target grid resampled at extra displacements.

        Args:
            values: ``(C, Hs, Ws)`` an image on the window (the bands, or a sum of them).
            ids: ``(N,)`` patch numbers, row-major on the target grid cut in ``size`` px patches.
            disp: ``(N, 2, size, size)`` displacement of every target pixel (x right, y down, target
                pixels), mapped into the window by the local Jacobian of the target -> window map.

        Returns:
            ``(patches (N, C, size, size), valid (N,) bool)``: valid when every tap is a valid pixel of
            the window.
        """
        n = ids.numel()
        r0, c0 = patch_corners(ids, size, self.cols.shape[1])
        along = torch.arange(size, device=ids.device)
        rr = (r0[:, None] + along[None])[:, :, None]  # (N, s, 1)
        cc = (c0[:, None] + along[None])[:, None, :]  # (N, 1, s)
        cols, rows = self.cols[rr, cc], self.rows[rr, cc]  # (N, s, s)
        jac = _jacobian(cols, rows)  # (N, 2, 2): d(window col, row) / d(target x, y)
        d = disp.to(cols.dtype)
        cols = cols + jac[:, 0, 0, None, None] * d[:, 0] + jac[:, 0, 1, None, None] * d[:, 1]
        rows = rows + jac[:, 1, 0, None, None] * d[:, 0] + jac[:, 1, 1, None, None] * d[:, 1]
        out, ok = sample_at(values[None], self.stack.valid[None], cols.reshape(n * size, size).float(),
                            rows.reshape(n * size, size).float(), method=kernel)
        out = out[0].view(values.shape[0], n, size, size).transpose(0, 1)
        return out, ok.view(n, size * size).all(1)


def _jacobian(cols: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)`` mean derivatives of ``(N, s, s)`` positions along the patch's x and y (the map
    between two UTM grids is affine to far below a millimetre over a patch)."""
    def slope(p: torch.Tensor, dim: int) -> torch.Tensor:
        return p.diff(dim=dim).flatten(1).mean(1)

    return torch.stack([torch.stack([slope(cols, 2), slope(cols, 1)], 1),
                        torch.stack([slope(rows, 2), slope(rows, 1)], 1)], 1)


def source_window(
    product: TheiaProduct, bands: tuple[str, ...], target: Grid, *, kind: str = "FRE",
    masks: MaskConfig | None = None, device: torch.device | str = "cpu", coarse_step: int = 32,
    kernel: str = "lanczos4", pad_px: int = 0,
) -> SourceWindow:
    """The product's pixels that ``kernel`` needs to resample ``target`` (plus ``pad_px`` on every
    side) and the target pixel centres mapped into them (any CRS: exactly on a coarse lattice every
    ``coarse_step`` pixels, bilinearly in between: UTM to UTM is smooth to far below a millimetre at
    that scale)."""
    src = product.grid(product.group_of(bands[0]))
    h, w = target.height, target.width
    rows = np.unique(np.r_[np.arange(0, h, coarse_step), h - 1])
    cols = np.unique(np.r_[np.arange(0, w, coarse_step), w - 1])
    cc, rr = np.meshgrid(cols + 0.5, rows + 0.5)
    x = target.transform.c + cc * target.res
    y = target.transform.f - rr * target.res
    if src.crs != target.crs:
        x, y = (np.asarray(a).reshape(cc.shape) for a in warp_transform(target.crs, src.crs, x.ravel(), y.ravel()))
    # source pixel positions (0 = centre of the first pixel of the source raster)
    sc = (x - src.transform.c) / src.res - 0.5
    sr = (src.transform.f - y) / src.res - 0.5
    coarse = torch.from_numpy(np.stack([sc, sr])).to(device=device, dtype=torch.float64)[None]
    # interpolate the coarse lattice to every target pixel (align_corners: lattice nodes are pixels)
    full = _lattice_to_pixels(coarse, rows, cols, h, w)
    reach = KERNELS[kernel].reach + pad_px  # the taps around each position, one pixel of rounding, the pad
    c0 = int(math.floor(full[0].min().item())) - reach - 1
    r0 = int(math.floor(full[1].min().item())) - reach - 1
    c1 = int(math.ceil(full[0].max().item())) + reach + 2
    r1 = int(math.ceil(full[1].max().item())) + reach + 2
    left = src.transform.c + c0 * src.res
    top = src.transform.f - r0 * src.res
    window = (left, top - (r1 - r0) * src.res, left + (c1 - c0) * src.res, top)
    stack = product.read(bands, window, kind=kind, masks=masks, device=device)
    return SourceWindow(stack, full[0] - c0, full[1] - r0, target, pad_px)


def _lattice_to_pixels(coarse: torch.Tensor, rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> torch.Tensor:
    """Piecewise-linear interpolation of ``(1, 2, len(rows), len(cols))`` lattice values to ``(2, h, w)``."""
    def weights(nodes: np.ndarray, n: int) -> torch.Tensor:
        # (n, len(nodes)) linear interpolation matrix
        m = np.zeros((n, len(nodes)))
        for i in range(n):
            k = min(np.searchsorted(nodes, i, side="right") - 1, len(nodes) - 2)
            t = (i - nodes[k]) / (nodes[k + 1] - nodes[k])
            m[i, k], m[i, k + 1] = 1 - t, t
        return torch.from_numpy(m)

    wr = weights(rows, h).to(coarse)
    wc = weights(cols, w).to(coarse)
    return torch.einsum("ik,bckl,jl->cij", wr, coarse, wc)


__all__ = ["CommonGrid", "SourceWindow", "common_grid", "read_on_grid", "source_window"]
