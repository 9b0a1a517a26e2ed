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

from .patches import all_valid_patches, patch_corners
from .resample import KERNELS
from .residuals import patch_residuals


@dataclass
class LocalField:
    """Tile measurements and the field they define (pixels of the 10 m grid).

    The tiles sit on the lattice of ``tile_px`` tiles of the grid (tile (r, c) centred at
    ``((c + 0.5) t - 0.5, (r + 0.5) t - 0.5)``), so the kernel sums over them are separable
    convolutions of the lattice (:meth:`on_lattice`), not a (tiles x tiles) matrix: a full site has
    7,000 tiles.

    Attributes:
        centres: ``(K, 2)`` tile centres (x, y) in pixels.
        shifts: ``(K, 2)`` measured residual translation of each tile (x right, y down, pixels).
        weights: ``(K,)`` texture weight of each tile, 0 for rejected tiles.
        sigma_px: the kernel's standard deviation.
        tile_px: the lattice step.
    """

    centres: torch.Tensor
    shifts: torch.Tensor
    weights: torch.Tensor
    sigma_px: float
    tile_px: int

    def _typical(self) -> torch.Tensor:
        positive = self.weights > 0
        return self.weights[positive].median() if positive.any() else torch.ones((), dtype=self.weights.dtype)

    def at(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(field (N, 2), support (N,))`` at any points ``(N, 2)`` (x, y pixels). ``support`` is the
        kernel weight of the tiles around each point relative to one fully textured tile under the
        kernel's peak: below ~1 the field there rests on too little."""
        d2 = ((points[:, None, :] - self.centres[None]) ** 2).sum(-1)
        k = torch.exp(-d2 / (2 * self.sigma_px**2)) * self.weights[None]
        total = k.sum(1)
        field = (k @ self.shifts) / total.clamp_min(1e-12)[:, None]
        return torch.where(total[:, None] > 0, field, torch.zeros_like(field)), total / self._typical()

    def on_lattice(self, nh: int, nw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`at` on every node of the ``nh x nw`` tile lattice: ``(field (2, nh, nw), support (nh, nw))``."""
        rows, cols = lattice_index(self.centres, self.tile_px)
        inside = (rows < nh) & (cols < nw)
        w = self.weights * inside
        grids = torch.zeros((3, nh, nw), dtype=self.shifts.dtype, device=self.shifts.device)
        grids[:, rows[inside], cols[inside]] = torch.cat([self.shifts * w[:, None], w[:, None]], 1)[inside].T
        sums = gaussian_sums(grids, self.sigma_px / self.tile_px)
        total = sums[2]
        field = torch.where(total > 0, sums[:2] / total.clamp_min(1e-12), torch.zeros_like(sums[:2]))
        return field, total / self._typical()


def lattice_index(centres: torch.Tensor, tile_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) on the tile lattice of tile centres ``(K, 2)`` (x, y pixels)."""
    rc = torch.round((centres + 0.5) / tile_px - 0.5).long()
    return rc[:, 1], rc[:, 0]


def gaussian_sums(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sum_j exp(-|i - j|^2 / (2 sigma^2)) x_j`` at every node i of ``x`` ``(C, H, W)`` (lattice
    units; zero beyond the lattice): two 1-D convolutions (the Gaussian is separable), cut where its
    weight falls below 1e-12."""
    c = x.shape[0]
    r = max(1, int(sigma * 7.44) + 1)  # exp(-7.44^2 / 2) < 1e-12
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    y = F.conv2d(x[None], g.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)[0]


def tile_measurements(reference: torch.Tensor, moving: torch.Tensor, ref_valid: torch.Tensor,
                      mov_valid: torch.Tensor, tile_px: int, wanted: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, ...]:
    """The residual translation of every fully valid ``tile_px`` tile of ``moving`` (already shifted
    by the global estimate) against ``reference``, both ``(H, W)``; ``wanted``: ``(H // tile_px,
    W // tile_px)`` bool, the tiles to measure (default all).

    Returns ``(centres (K, 2), shifts (K, 2), texture (K,), rmse (K,))`` of the measured tiles."""
    h, w = reference.shape
    nh, nw = h // tile_px, w // tile_px
    if nh == 0 or nw == 0:
        empty = torch.zeros((0, 2), dtype=torch.float64, device=reference.device)
        return empty, empty, empty[:, 0], empty[:, 0]

    def blocks(x: torch.Tensor) -> torch.Tensor:  # (nh, tile, nw, tile): a view
        return x[: nh * tile_px, : nw * tile_px].reshape(nh, tile_px, nw, tile_px)

    ok = all_valid_patches(ref_valid & mov_valid, tile_px).view(nh, nw)
    ok = (ok if wanted is None else ok & wanted).flatten()
    idx = torch.nonzero(ok).flatten()
    rows, cols = idx // nw, idx % nw
    centres = torch.stack([(cols + 0.5) * tile_px - 0.5, (rows + 0.5) * tile_px - 0.5], 1).double()
    if idx.numel() == 0:
        return centres, centres, centres[:, 0], centres[:, 0]
    # the measured tiles gathered once each, (K, 1, tile, tile)
    m = patch_residuals(blocks(moving.float())[rows, :, cols][:, None],
                        blocks(reference.float())[rows, :, cols][:, None])
    good = m["converged"]
    return centres[good], m["r"][good].double(), m["texture"][good].double(), m["rmse"][good].double()


def tiles_near(boxes: torch.Tensor, nh: int, nw: int, tile_px: int, reach_px: float) -> torch.Tensor:
    """``(nh, nw)`` bool: the tiles of the lattice whose box comes within ``reach_px`` of one of the
    ``boxes`` ``(N, 4)`` (row0, row1, col0, col1 in pixels, ends excluded)."""
    starts = lambda n: torch.arange(n, device=boxes.device) * tile_px  # noqa: E731
    rows = (starts(nh)[None] < boxes[:, 1:2] + reach_px) & (starts(nh)[None] + tile_px > boxes[:, 0:1] - reach_px)
    cols = (starts(nw)[None] < boxes[:, 3:4] + reach_px) & (starts(nw)[None] + tile_px > boxes[:, 2:3] - reach_px)
    return (rows.T.float() @ cols.float()) > 0


def robust_field(centres: torch.Tensor, shifts: torch.Tensor, texture: torch.Tensor, sigma_px: float,
                 max_disagreement_px: float, tile_px: int) -> LocalField:
    """The field of the tiles (on the ``tile_px`` lattice), those that disagree with the field of their
    neighbours (leave-one-out) by more than ``max_disagreement_px`` rejected (twice: a rejected tile
    no longer pulls others)."""
    weights = texture.clamp_min(0)
    if shifts.shape[0] >= 2:
        rows, cols = lattice_index(centres, tile_px)
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
        for _ in range(2):
            grids = torch.zeros((3,) + shape, dtype=shifts.dtype, device=shifts.device)
            grids[:, rows, cols] = torch.cat([shifts * weights[:, None], weights[:, None]], 1).T
            sums = gaussian_sums(grids, sigma_px / tile_px)[:, rows, cols].T  # (K, 3)
            # leave one out: the tile's own term (kernel weight 1) taken back out
            others = sums[:, 2] - weights
            neighbours = (sums[:, :2] - shifts * weights[:, None]) / others.clamp_min(1e-12)[:, None]
            agree = ((shifts - neighbours).norm(dim=1) <= max_disagreement_px) | (others <= 1e-12)
            weights = torch.where(agree, texture.clamp_min(0), torch.zeros_like(weights))
    return LocalField(centres, shifts, weights, sigma_px, tile_px)


def field_at_patches(field: LocalField, h: int, w: int, ids: torch.Tensor, size: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The field and its support on every pixel of some ``size``-pixel patches of an ``h x w`` grid:
    evaluated at the tile centres (a lattice), then bilinearly interpolated as ``F.interpolate`` would
    upsample the whole lattice (``align_corners=False``, the last tile's values past the lattice), for
    the patches' pixels only (the field is smooth at the tile scale).

    Returns ``(field (N, 2, size, size) pixels, support (N, size, size))``."""
    t = field.tile_px
    nh, nw = max(1, h // t), max(1, w // t)
    values, support = field.on_lattice(nh, nw)
    lattice = torch.cat([values, support[None]]).float()  # (3, nh, nw)
    r0, c0 = patch_corners(ids, size, w)
    m = (size - 1) // t + 4  # the nodes around a patch: one before, those it spans, one after
    wr, nr = _bilinear_weights(r0, size, t, nh, m)  # (N, size, m), (N, m) node rows
    wc, nc = _bilinear_weights(c0, size, t, nw, m)
    sub = lattice[:, nr[:, :, None], nc[:, None, :]].transpose(0, 1)  # (N, 3, m, m)
    up = wr[:, None] @ sub @ wc[:, None].transpose(-1, -2)  # (N, 3, size, size)
    return up[:, :2], up[:, 2]


def _bilinear_weights(start: torch.Tensor, size: int, t: int, nodes: int, m: int) -> tuple[torch.Tensor, ...]:
    """Weights ``(N, size, m)`` of the ``m`` lattice nodes from ``start // t - 1`` (clamped to the
    lattice, ``(N, m)`` returned too) at pixels ``start .. start + size - 1``: node k at pixel
    ``(k + 0.5) t - 0.5``, constant before the first node and past the last."""
    first = start // t - 1
    node = (first[:, None] + torch.arange(m, device=start.device)).clamp(0, nodes - 1)  # (N, m)
    pixel = (start[:, None] + torch.arange(size, device=start.device)).float()
    src = ((pixel + 0.5) / t - 0.5).clamp(0, nodes - 1)
    i0 = src.floor()
    lam = src - i0
    i0 = i0.long() - first[:, None]  # position among the m nodes
    i1 = (i0 + 1).clamp(max=m - 1)
    weights = torch.zeros((start.numel(), size, m), device=start.device)
    weights.scatter_add_(2, i0[..., None], (1 - lam)[..., None]).scatter_add_(2, i1[..., None], lam[..., None])
    return weights, node


def resample_patches(raw: torch.Tensor, raw_valid: torch.Tensor, margin: int, size: int, ids: torch.Tensor,
                     disp: torch.Tensor, kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches of a raw image read with ``margin`` pixels around the grid, each resampled once at its
    own per-pixel displacement.

    Args:
        raw: ``(C, H + 2m, W + 2m)`` the raw Sentinel-2 bands around the grid; ``raw_valid`` ``(H+2m, W+2m)``
            (None: the patches' validity is not wanted, None returned for it).
        margin: m (at least the largest displacement plus the kernel's reach).
        size: patch size at this resolution; ``ids``: ``(N,)`` patch numbers (row-major on the grid).
        disp: ``(N, 2, size, size)`` displacement of every pixel (x right, y down, pixels):
            out(p) = raw(p + disp(p)), by two separable passes (rows then columns: exact for a
            translation, second-order for a smooth field).
        kernel: a kernel of :data:`s2v_gpu.resample.KERNELS` (no prefilter).

    Returns:
        ``(patches (N, C, size, size), valid (N,) bool)``: valid when every raw pixel in the box that
        the taps of the patch's pixels span is valid (the box of a smooth field is its footprint).
    """
    r0, c0 = patch_corners(ids, size, raw.shape[2] - 2 * margin)
    k = KERNELS[kernel]
    disp = disp.clamp(-margin + k.reach + 0.5, margin - k.reach - 0.5)
    chunks = [_resample_chunk(raw, r0[i:i + PATCH_CHUNK], c0[i:i + PATCH_CHUNK], disp[i:i + PATCH_CHUNK], margin, k)
              for i in range(0, ids.numel(), PATCH_CHUNK)]
    out = torch.cat(chunks) if chunks else raw.new_zeros((0, raw.shape[0], size, size))
    if raw_valid is None:
        return out, None
    ext = size + 2 * margin
    invalid = ~_windows(raw_valid[None], r0, c0, ext)[:, 0]  # (N, ext, ext)
    return out, ~(invalid & _footprint(disp, margin, ext, kernel)).flatten(1).any(1)


def _windows(x: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor, size: int) -> torch.Tensor:
    """``(n, C, size, size)``: the windows of ``x`` ``(C, H, W)`` at rows ``r0``, columns ``c0``
    ``(n,)``, copied as slices (a gather of every pixel costs several times more)."""
    if r0.numel() == 0:
        return x.new_zeros((0, x.shape[0], size, size))
    return torch.stack([x[:, r:r + size, c:c + size] for r, c in zip(r0.tolist(), c0.tolist())])


def _footprint(disp: torch.Tensor, margin: int, ext: int, kernel: str) -> torch.Tensor:
    """``(N, ext, ext)`` bool: the box of window pixels the taps of a patch's pixels reach."""
    k = KERNELS[kernel]
    s = disp.shape[-1]
    along = torch.arange(s, device=disp.device, dtype=disp.dtype)
    box = []
    for pos in (along[None, :] + disp[:, 0], along[:, None] + disp[:, 1]):  # columns (x), then rows (y)
        lo = torch.floor(pos.flatten(1).amin(1) + margin).long() + min(k.offsets)
        hi = torch.floor(pos.flatten(1).amax(1) + margin).long() + max(k.offsets)
        i = torch.arange(ext, device=disp.device)[None]
        box.append((i >= lo[:, None]) & (i <= hi[:, None]))
    return box[1][:, :, None] & box[0][:, None, :]


#: patches resampled together (bounds the memory of the scattered weights: ~50 MB per 64 patches of 128 px)
PATCH_CHUNK = 64


def _resample_chunk(raw: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor, disp: torch.Tensor, margin: int,
                    k) -> torch.Tensor:
    """The patches at grid rows/columns ``r0``, ``c0`` ``(n,)`` sampled at ``p + disp(p)``: each patch's
    window is read from its whole-pixel displacement (the floor of its smallest one), so that every
    tap of every pixel is a plain slice of the window, weighted per pixel."""
    s, dev = disp.shape[-1], raw.device
    lo = torch.floor(disp.flatten(2).amin(2)).long()  # (n, 2): x, y
    t = disp - lo[:, :, None, None].to(disp.dtype)  # >= 0: the displacement beyond the window's start
    span = int(t.max().floor()) + len(k.offsets)  # slices per pass
    start = margin + k.offsets[0] + lo  # window start in the raw, relative to the patch's corner
    win = _windows(raw, r0 + start[:, 1], c0 + start[:, 0], s + span - 1)  # (n, C, L, L)
    # pass 1, along x, on every window row (the x displacement of the output row it feeds, about)
    rows = (torch.arange(win.shape[2], device=dev) + k.offsets[0]).clamp(0, s - 1)
    tmp = _slide_axis(win, t[:, 0][:, rows], -1, span, k)  # (n, C, L, s)
    return _slide_axis(tmp, t[:, 1], -2, span, k)


def _slide_axis(x: torch.Tensor, t: torch.Tensor, dim: int, span: int, k) -> torch.Tensor:
    """``x`` ``(n, C, A, B)`` interpolated along ``dim``: output i reads x[i + floor(t) + j] with the
    kernel's j-th weight for the fraction of ``t`` (``(n, *out)``, >= 0), as ``span`` slices."""
    w = k.spread(t.to(x.dtype), span)  # (span, n, *out)
    n_out = t.shape[-1] if dim == -1 else t.shape[-2]
    out = None
    for j in range(span):
        piece = x[..., j:j + n_out] if dim == -1 else x[:, :, j:j + n_out]
        out = piece * w[j][:, None] if out is None else out.addcmul_(piece, w[j][:, None])
    return out


def sigma_for(tile_px: int, smoothing_tiles: float) -> float:
    """The kernel's standard deviation in pixels."""
    return float(smoothing_tiles) * tile_px
