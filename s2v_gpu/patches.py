"""Patchification (paper section 2.5.3): triplets of 256 / 128 / 64 pixel patches on the common grid.

Patches do not overlap and are numbered row by row from the upper-left corner of the common grid;
a triplet is kept only if every pixel of its three patches is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ShapeError, check_shape


@dataclass
class PatchConfig:
    size_5m: int = 256  # VENuS patch (paper); the 10 m and 20 m patches are 1/2 and 1/4 of it


def to_patches(image: torch.Tensor, size: int) -> torch.Tensor:
    """Cut ``(C, H, W)`` into non-overlapping ``size`` patches, row by row; a remainder is dropped.

    Returns:
        ``(N, C, size, size)`` with N = (H // size) * (W // size).
    """
    check_shape(image, 3, "image")
    c, h, w = image.shape
    nh, nw = h // size, w // size
    x = image[:, : nh * size, : nw * size].reshape(c, nh, size, nw, size)
    return x.permute(1, 3, 0, 2, 4).reshape(nh * nw, c, size, size)


def channel_runs(channels: list[int]) -> list[tuple[int, int, int]]:
    """``(j0, j1, i0)``: outputs ``j0:j1`` are the consecutive input channels from ``i0`` (one copy each)."""
    runs: list[tuple[int, int, int]] = []
    for j, i in enumerate(channels):
        if runs and runs[-1][1] == j and runs[-1][2] + j - runs[-1][0] == i:
            runs[-1] = (runs[-1][0], j + 1, runs[-1][2])
        else:
            runs.append((j, j + 1, i))
    return runs


def take_patches(image: torch.Tensor, size: int, ids: torch.Tensor, channels: list[int] | None = None) -> torch.Tensor:
    """Copy out some patches of :func:`to_patches`'s numbering (and some channels): on a GPU in one
    gather, on the CPU patch by patch as slices (plain row copies: half the CPU time of a gather).

    Args:
        image: ``(C, H, W)``.
        size: patch size.
        ids: ``(K,)`` patch numbers (row by row).
        channels: channels to keep (default all).

    Returns:
        ``(K, C', size, size)`` contiguous.

    Raises:
        IndexError: a patch number outside the grid.
    """
    check_shape(image, 3, "image")
    nh, nw = image.shape[1] // size, image.shape[2] // size
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < nh * nw):
        raise IndexError(f"patch numbers {int(ids.min())}..{int(ids.max())} outside a grid of {nh} x {nw} patches")
    if channels is not None and not all(0 <= i < image.shape[0] for i in channels):
        raise IndexError(f"channels {list(channels)} outside an image of {image.shape[0]}")
    ch = None if channels is None else torch.as_tensor(channels, device=image.device, dtype=torch.long)
    if image.device.type == "cpu":
        runs = channel_runs(list(range(image.shape[0])) if channels is None else list(channels))
        out = torch.empty((ids.numel(), runs[-1][1] if runs else 0, size, size), dtype=image.dtype)
        for k, (r, c) in enumerate(zip(*(t.tolist() for t in patch_corners(ids, size, image.shape[2])))):
            for j0, j1, i0 in runs:  # consecutive channels in one copy
                out[k, j0:j1].copy_(image[i0:i0 + j1 - j0, r:r + size, c:c + size])
        return out
    grid = image.unfold(1, size, size).unfold(2, size, size).permute(1, 2, 0, 3, 4)  # nh, nw, C, s, s (a view)
    r, c = ids // nw, ids % nw
    if ch is None:
        return grid[r, c]
    return grid[r[:, None], c[:, None], ch[None, :]]


def patch_corners(ids: torch.Tensor, size: int, grid_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` ``(N,)``: the top-left pixel of patches ``ids`` of :func:`to_patches`'s numbering
    (``size``-pixel patches, row by row, on a grid ``grid_width`` pixels wide)."""
    nw = grid_width // size
    return (ids // nw) * size, (ids % nw) * size


def patch_grid_shape(height_5m: int, width_5m: int, size_5m: int) -> tuple[int, int]:
    return height_5m // size_5m, width_5m // size_5m


def valid_triplets(valid_5m: torch.Tensor, valid_10m: torch.Tensor, valid_20m: torch.Tensor,
                   size_5m: int) -> torch.Tensor:
    """Which triplets hold only valid pixels.

    Args:
        valid_5m: ``(H, W)`` bool; valid_10m ``(H/2, W/2)``; valid_20m ``(H/4, W/4)``.
        size_5m: the 5 m patch size (a multiple of 4).

    Returns:
        ``(N,)`` bool, in patch order.
    """
    if size_5m % 4:
        raise ShapeError(f"the 5 m patch size must be a multiple of 4, got {size_5m}")
    h, w = valid_5m.shape
    if valid_10m.shape != (h // 2, w // 2) or valid_20m.shape != (h // 4, w // 4):
        raise ShapeError(f"validity masks {tuple(valid_5m.shape)}, {tuple(valid_10m.shape)}, "
                         f"{tuple(valid_20m.shape)} are not nested 5/10/20 m grids")
    ok = all_valid_patches(valid_5m, size_5m)
    ok &= all_valid_patches(valid_10m, size_5m // 2)
    ok &= all_valid_patches(valid_20m, size_5m // 4)
    return ok


def all_valid_patches(valid: torch.Tensor, size: int) -> torch.Tensor:
    """``(N,)`` bool: every pixel of each ``size`` patch of :func:`to_patches`'s numbering is valid, for
    ``valid`` ``(H, W)`` bool. Reduced in place as bytes, rows of a patch then its columns (no copy of
    the mask into patches: 30x faster than ``to_patches(...).all``, the same answer)."""
    h, w = valid.shape
    nh, nw = h // size, w // size
    blocks = valid[: nh * size, : nw * size].reshape(nh, size, nw, size).view(torch.uint8)
    return blocks.amin(dim=3).amin(dim=1).flatten().bool()


def any_valid(valid: torch.Tensor) -> bool:
    """Whether a bool mask holds one True (its bytes' maximum: a reduction 20x cheaper than ``any``)."""
    return bool(valid.numel()) and bool(valid.view(torch.uint8).max())


def patch_bounds(left: float, top: float, height_5m: int, width_5m: int,
                 size_5m: int) -> list[tuple[float, float, float, float]]:
    """(left, bottom, right, top) of every patch, in patch order, in the common grid's CRS."""
    nh, nw = patch_grid_shape(height_5m, width_5m, size_5m)
    side = size_5m * 5.0
    return [(left + j * side, top - (i + 1) * side, left + (j + 1) * side, top - i * side)
            for i in range(nh) for j in range(nw)]
