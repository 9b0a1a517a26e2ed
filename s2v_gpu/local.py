"""The local registration model: a smooth displacement field on top of the global translation.

Where the global shift is not enough (parallax of relief, canopy and buildings that the DEM misses,
seen from VENuS's oblique angle), the residual translation is measured on tiles of the common grid
(10 m blue, after the global shift; :func:`s2v_gpu.residuals.patch_residuals`, batched), tiles that
disagree with their neighbours are rejected (clouds, changes), and the field is the robust,
texture-weighted kernel average of the tiles around each place (Nadaraya-Watson with a Gaussian
kernel): smooth, never following a single tile. Each kept patch is then resampled once from the raw
Sentinel-2 pixels at its own translation (global + field at its centre), with the same kernel as the
global shift: never an interpolated image interpolated again. Where too little tile weight supports
the field (clouds, edges), the patch keeps the global translation and is flagged untrusted.

All functions are tensor functions on one device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .resample import KERNELS
from .residuals import patch_residuals


@dataclass
class LocalField:
    """Tile measurements and the field they define (pixels of the 10 m grid).

    Attributes:
        centres: ``(K, 2)`` tile centres (x, y) in pixels.
        shifts: ``(K, 2)`` measured residual translation of each tile (x right, y down, pixels).
        weights: ``(K,)`` texture weight of each tile, 0 for rejected tiles.
        sigma_px: the kernel's standard deviation.
    """

    centres: torch.Tensor
    shifts: torch.Tensor
    weights: torch.Tensor
    sigma_px: float

    def at(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(field (N, 2), support (N,))`` at points ``(N, 2)`` (x, y pixels). ``support`` is the
        kernel weight of the tiles around each point relative to one fully textured tile under the
        kernel's peak: below ~1 the field there rests on too little."""
        d2 = ((points[:, None, :] - self.centres[None]) ** 2).sum(-1)
        k = torch.exp(-d2 / (2 * self.sigma_px**2)) * self.weights[None]
        total = k.sum(1)
        field = (k @ self.shifts) / total.clamp_min(1e-12)[:, None]
        typical = self.weights[self.weights > 0].median() if (self.weights > 0).any() else torch.ones(())
        return torch.where(total[:, None] > 0, field, torch.zeros_like(field)), total / typical


def tile_measurements(reference: torch.Tensor, moving: torch.Tensor, ref_valid: torch.Tensor,
                      mov_valid: torch.Tensor, tile_px: int) -> tuple[torch.Tensor, ...]:
    """The residual translation of every fully valid ``tile_px`` tile of ``moving`` (already shifted
    by the global estimate) against ``reference``, both ``(H, W)``.

    Returns ``(centres (K, 2), shifts (K, 2), texture (K,), rmse (K,))`` of the measured tiles."""
    h, w = reference.shape
    nh, nw = h // tile_px, w // tile_px
    if nh == 0 or nw == 0:
        empty = torch.zeros((0, 2), dtype=torch.float64, device=reference.device)
        return empty, empty, empty[:, 0], empty[:, 0]

    def tiles(x: torch.Tensor) -> torch.Tensor:
        return x[: nh * tile_px, : nw * tile_px].reshape(nh, tile_px, nw, tile_px).permute(0, 2, 1, 3).reshape(
            nh * nw, tile_px, tile_px)

    ok = (tiles(ref_valid) & tiles(mov_valid)).flatten(1).all(1)
    idx = torch.nonzero(ok).flatten()
    rows, cols = idx // nw, idx % nw
    centres = torch.stack([(cols + 0.5) * tile_px - 0.5, (rows + 0.5) * tile_px - 0.5], 1).double()
    if idx.numel() == 0:
        return centres, centres, centres[:, 0], centres[:, 0]
    m = patch_residuals(tiles(moving.float())[idx][:, None], tiles(reference.float())[idx][:, None])
    good = m["converged"]
    return centres[good], m["r"][good].double(), m["texture"][good].double(), m["rmse"][good].double()


def robust_field(centres: torch.Tensor, shifts: torch.Tensor, texture: torch.Tensor, sigma_px: float,
                 max_disagreement_px: float) -> LocalField:
    """The field of the tiles, those that disagree with the field of their neighbours (leave-one-out)
    by more than ``max_disagreement_px`` rejected (twice: a rejected tile no longer pulls others)."""
    weights = texture.clamp_min(0)
    for _ in range(2):
        if shifts.shape[0] < 2:
            break
        d2 = ((centres[:, None] - centres[None]) ** 2).sum(-1)
        k = torch.exp(-d2 / (2 * sigma_px**2)) * weights[None]
        k.fill_diagonal_(0)
        neighbours = (k @ shifts) / k.sum(1).clamp_min(1e-12)[:, None]
        agree = ((shifts - neighbours).norm(dim=1) <= max_disagreement_px) | (k.sum(1) <= 0)
        weights = torch.where(agree, texture.clamp_min(0), torch.zeros_like(weights))
    return LocalField(centres, shifts, weights, sigma_px)


def field_image(field: LocalField, h: int, w: int, tile_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The field and its support on every pixel of an ``h x w`` grid: evaluated at the tile centres
    (a lattice), then bilinearly interpolated (the field is smooth at the tile scale).

    Returns ``(field (2, h, w) pixels, support (h, w))``."""
    nh, nw = max(1, h // tile_px), max(1, w // tile_px)
    ys = (torch.arange(nh, dtype=torch.float64) + 0.5) * tile_px - 0.5
    xs = (torch.arange(nw, dtype=torch.float64) + 0.5) * tile_px - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1).to(field.centres.device)
    values, support = field.at(pts)
    lattice = torch.cat([values.T.reshape(2, nh, nw), support.reshape(1, nh, nw)]).float()
    # lattice node k sits at (k + 0.5) * tile - 0.5: the centres of a tile_px upsampling
    up = F.interpolate(lattice[None], size=(nh * tile_px, nw * tile_px), mode="bilinear", align_corners=False)[0]
    up = F.pad(up[None], (0, w - nw * tile_px, 0, h - nh * tile_px), mode="replicate")[0]
    return up[:2], up[2]


def resample_patches(raw: torch.Tensor, raw_valid: torch.Tensor, margin: int, size: int, ids: torch.Tensor,
                     disp: torch.Tensor, kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches of a raw image read with ``margin`` pixels around the grid, each resampled once at its
    own per-pixel displacement.

    Args:
        raw: ``(C, H + 2m, W + 2m)`` the raw Sentinel-2 bands around the grid; ``raw_valid`` ``(H+2m, W+2m)``.
        margin: m (at least the largest displacement plus the kernel's reach).
        size: patch size at this resolution; ``ids``: ``(N,)`` patch numbers (row-major on the grid).
        disp: ``(N, 2, size, size)`` displacement of every pixel (x right, y down, pixels):
            out(p) = raw(p + disp(p)), by two separable passes (rows then columns: exact for a
            translation, second-order for a smooth field).
        kernel: a kernel of :data:`s2v_gpu.resample.KERNELS` (no prefilter).

    Returns:
        ``(patches (N, C, size, size), valid (N,) bool)``: valid when every tap of every pixel is valid.
    """
    nw = (raw.shape[2] - 2 * margin) // size
    r0, c0 = (ids // nw) * size, (ids % nw) * size
    ext = size + 2 * margin
    rr = r0[:, None] + torch.arange(ext, device=raw.device)[None]
    cc = c0[:, None] + torch.arange(ext, device=raw.device)[None]
    windows = raw[:, rr[:, :, None], cc[:, None, :]].permute(1, 0, 2, 3)  # (N, C, ext, ext)
    invalid = (~raw_valid[rr[:, :, None], cc[:, None, :]]).to(raw.dtype)[:, None]
    disp = disp.clamp(-margin + KERNELS[kernel].reach + 0.5, margin - KERNELS[kernel].reach - 0.5)
    out = _two_pass(windows, disp, margin, kernel, absolute=False)
    bad = _two_pass(invalid, disp, margin, kernel, absolute=True)
    return out, (bad.flatten(1) <= 0).all(1)


def _two_pass(x: torch.Tensor, disp: torch.Tensor, margin: int, kernel: str, absolute: bool) -> torch.Tensor:
    """``(N, C, E, E)`` windows -> ``(N, C, S, S)`` sampled at (i + m + dy, j + m + dx). ``absolute``:
    sum |weights| != 0 instead (where an invalid pixel reaches)."""
    k = KERNELS[kernel]
    n, c, e, _ = x.shape
    s = e - 2 * margin
    # pass 1, along x, on every window row (the x displacement of the output row it will feed)
    rows = (torch.arange(e, device=x.device) - margin).clamp(0, s - 1)
    dx = disp[:, 0][:, rows]  # (N, E, S)
    xpos = torch.arange(s, device=x.device, dtype=disp.dtype)[None, None] + margin + dx
    tmp = _gather_axis(x, xpos, -1, k, absolute)  # (N, C, E, S)
    ypos = torch.arange(s, device=x.device, dtype=disp.dtype)[None, :, None] + margin + disp[:, 1]  # (N, S, S)
    return _gather_axis(tmp, ypos, -2, k, absolute)


def _gather_axis(x: torch.Tensor, pos: torch.Tensor, dim: int, k, absolute: bool) -> torch.Tensor:
    """Interpolate ``x`` ``(N, C, A, B)`` along ``dim`` at per-sample positions ``pos`` (shaped like the
    output without C) with the kernel's taps."""
    base = torch.floor(pos)
    w = k.weights((pos - base).double())  # (taps, *pos.shape)
    base = base.long()
    size = x.shape[dim]
    out = None
    for j, o in enumerate(k.offsets):
        idx = (base + o).clamp(0, size - 1)[:, None].expand(-1, x.shape[1], *pos.shape[1:])
        if dim == -1:
            tap = torch.gather(x, -1, idx)
        else:
            tap = torch.gather(x, -2, idx)
        wj = w[j][:, None].to(x.dtype)
        term = tap * ((wj != 0).to(x.dtype) if absolute else wj)
        out = term if out is None else out + term
    return out


def patch_centres(ids: torch.Tensor, size: int, grid_width: int) -> torch.Tensor:
    """``(N, 2)`` centres (x, y pixels) of patches of ``size`` numbered row-major on a grid ``grid_width`` wide."""
    nw = grid_width // size
    return torch.stack([(ids % nw) * size + (size - 1) / 2, (ids // nw) * size + (size - 1) / 2], 1).double()


def sigma_for(tile_px: int, smoothing_tiles: float) -> float:
    """The kernel's standard deviation in pixels."""
    return float(smoothing_tiles) * tile_px
