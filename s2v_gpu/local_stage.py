"""The local registration model in the pipeline (``registration.model=local``): the smooth field of
the residual translations of the 10 m blue tiles around the candidate patches, then each selected
patch resampled once from the raw Sentinel-2 pixels at the global shift plus the field and its own
measured translation, on the VENuS grid (the bands read with a margin) or off it (the raw window
around the shifted grid, the displacement mapped through the reprojection's Jacobian).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .bands import GROUP_10M, GROUP_20M, SWIR_20M
from .errors import PairSkipped
from .grids import SourceWindow, source_window, translated
from .local import field_at_patches, resample_patches, robust_field, sigma_for, tile_measurements, tiles_near
from .patches import patch_corners
from .products.product import BandStack
from .registration import RegistrationResult
from .resample import KERNELS, dense
from .residuals import patch_residuals, to_metres

if TYPE_CHECKING:  # the pipeline imports this module
    from .pipeline import Candidates, PairInputs, PipelineConfig


def off_grid_source(inputs: PairInputs, bands: tuple[str, ...], res: float, reg: RegistrationResult,
                    cfg: PipelineConfig, device: torch.device) -> SourceWindow:
    """The raw Sentinel-2 pixels of ``bands`` around the common grid at ``res`` moved by the global
    shift (off the VENuS grid); with ``model=local`` read with room for the field
    (``local_max_field_m``) and kept in ``inputs.sources`` for the patches' second reading."""
    key = (tuple(bands), res)
    if key in inputs.sources:
        return inputs.sources[key]
    local = cfg.registration.model == "local"
    pad = int(math.ceil(cfg.registration.local_max_field_m / res)) + 1 if local else 0
    win = source_window(inputs.s2, bands, translated(inputs.grid.at(res), *reg.shift_m), kind=cfg.reflectance,
                        masks=cfg.masks, device=device, kernel=cfg.shift_kernel, pad_px=pad)
    if local:
        inputs.sources[key] = win
    return win


def local_field(blue, s2_blue: torch.Tensor, s2_ok: torch.Tensor, inputs: PairInputs, reg, cfg: PipelineConfig,
                ids: torch.Tensor):
    """``registration.model=local``: the smooth field of the residual translations of the 10 m blue
    tiles after the global shift (None for the translation model), measured on the tiles that weigh
    on the candidate patches ``ids`` (those within :data:`LOCAL_REACH_SIGMAS` of them)."""
    rc = cfg.registration
    if rc.model != "local":
        return None
    ref, _, ref_valid, _ = blue
    ref = dense(ref)  # the tiles near the candidates read it almost whole
    sigma, tile = sigma_for(rc.local_tile_px, rc.local_smoothing_tiles), rc.local_tile_px
    size = cfg.patches.size_5m // 2
    r0, c0 = patch_corners(ids, size, ref.shape[1])
    boxes = torch.stack([r0, r0 + size, c0, c0 + size], 1).to(ref.device)
    wanted = tiles_near(boxes, ref.shape[0] // tile, ref.shape[1] // tile, tile, LOCAL_REACH_SIGMAS * sigma)
    centres, shifts, texture, _ = tile_measurements(ref, s2_blue, ref_valid, s2_ok, tile, wanted)
    reg.mode = f"{reg.mode}+local"
    reg.extra["local_tiles"] = int(centres.shape[0])
    return robust_field(centres, shifts, texture, sigma, rc.local_max_disagreement_px, tile)


#: Tiles farther than this many kernel sigmas from every candidate patch are not measured: their
#: kernel weight there is below exp(-8) = 3e-4 of a tile's at the patch (the field moves by less than
#: 1e-3 px without them).
LOCAL_REACH_SIGMAS = 4.0


@dataclass
class PatchSource:
    """Where the local model reads one Sentinel-2 stack's patches again: ``values`` ``(C, Hs, Ws)``
    on its raw pixels, ``room`` the displacement (pixels at its resolution) its window holds beyond
    the global shift, and ``sample(values, ids, size, disp, valid=True)`` -> ``(patches, valid)``
    resampling ``values`` once at the global shift plus ``disp`` ``(N, 2, size, size)`` (``valid``
    False: the validity may be left out, None)."""

    values: torch.Tensor
    room: float
    sample: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def patch_source(inputs: PairInputs, stack: BandStack | None, bands: tuple[str, ...], res: float,
                 reg: RegistrationResult, cfg: PipelineConfig) -> PatchSource:
    """On the VENuS grid: the raw bands read with a margin, displaced by the global shift plus the
    field; off it: the raw window around the shifted grid (:func:`off_grid_source`), the field mapped
    into it by the local Jacobian of the reprojection."""
    k, device = cfg.shift_kernel, inputs.s10.valid.device
    if not inputs.s2_aligned:
        win = off_grid_source(inputs, bands, res, reg, cfg, device)
        return PatchSource(win.stack.reflectance, win.pad_px - 1.0,
                           lambda v, ids, size, disp, valid=True: win.sample_patches(v, ids, size, disp, k))
    scale, margin = res / 10.0, inputs.margin if res == 10.0 else inputs.margin20
    d = torch.tensor(reg.shift_px, dtype=torch.float32, device=device).view(1, 2, 1, 1) / scale
    return PatchSource(stack.reflectance, margin - KERNELS[k].reach - 1.0 - float(d.abs().max()),
                       lambda v, ids, size, disp, valid=True: resample_patches(v, stack.valid if valid else None,
                                                                               margin, size, ids, d + disp, k))


def apply_local_field(pid: str, field, inputs: PairInputs, reg, cand: Candidates, selected: torch.Tensor,
                      cfg: PipelineConfig, fitted10: torch.Tensor | None = None
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each selected patch resampled once from the raw Sentinel-2 at the global shift plus the field,
    pixel by pixel (where the field is supported by enough tiles and within the read margin;
    elsewhere the patch keeps the global shift and is flagged untrusted), the field's mean over the
    patch set to the patch's own measured translation where they agree (``local_per_patch``, against
    ``fitted10``, the fitted VENuS at 10 m of every candidate). Returns the mean field applied to
    each patch (metres), the per-patch part of it, its trust flag, and the patches still valid."""
    n = selected.numel()
    if field is None:
        zeros = torch.zeros(n, dtype=torch.float64)
        return {"local_dx_m": zeros, "local_dy_m": zeros, "local_patch_dx_m": zeros, "local_patch_dy_m": zeros,
                "local_trusted": torch.ones(n, dtype=torch.bool)}, selected
    size, rc, ids = cfg.patches.size_5m, cfg.registration, cand.ids[selected]
    f10, support = field_at_patches(field, inputs.grid.height // 2, inputs.grid.width // 2, ids, size // 2)
    low = support.flatten(1).mean(1)  # f10: (N, 2, s, s)
    src10 = patch_source(inputs, inputs.s10, GROUP_10M["s2"], 10.0, reg, cfg)
    src20 = patch_source(inputs, inputs.s20, GROUP_20M["s2"], 20.0, reg, cfg)
    reach = f10.flatten(1).abs().amax(1)  # pixels at 10 m, along x or y
    # the documented bound (on the VENuS grid the read margin may hold more; off it, exactly that)
    # and what the windows hold
    trusted = (low >= rc.local_min_support) & (reach * 10.0 <= rc.local_max_field_m)
    trusted &= (reach <= src10.room) & (reach / 2 <= src20.room)
    f10 = torch.where(trusted.view(-1, 1, 1, 1), f10, 0.0)  # untrusted: exactly 0 (a product keeps -0.0)
    own = torch.zeros((n, 2), dtype=f10.dtype, device=f10.device)
    if rc.local_per_patch and fitted10 is not None:
        # the estimator sums a group's bands, and resampling is linear: the sum of the bands is probed
        probe, _ = src10.sample(src10.values.sum(0, keepdim=True), ids, size // 2, f10, valid=False)
        own = _patch_offsets(probe, fitted10[selected], trusted, cfg).to(f10.dtype)
        f10 = f10 + own.view(-1, 2, 1, 1)
    # every band resampled once from the raw pixels, at the global shift + the field (+ the patch's own)
    s10, ok10 = src10.sample(src10.values, ids, size // 2, f10)
    f20 = F.avg_pool2d(f10, 2) / 2
    s20, ok20 = src20.sample(src20.values, ids, size // 4, f20)
    ok = ok10 & ok20
    if not ok.any():
        raise PairSkipped(f"{pid}: no selected patch stays valid under the local field")
    cand.s10[selected], cand.s20[selected] = s10.to(cand.s10.dtype), s20.to(cand.s20.dtype)
    if cand.swir is not None:
        src = patch_source(inputs, inputs.swir, SWIR_20M, 20.0, reg, cfg)
        cand.swir[selected] = src.sample(src.values, ids, size // 4, f20)[0].to(cand.swir.dtype)
    mean, own = to_metres(f10.mean((2, 3)).double().cpu(), 10.0), to_metres(own.double().cpu(), 10.0)
    out = {"local_dx_m": mean[:, 0], "local_dy_m": mean[:, 1], "local_patch_dx_m": own[:, 0],
           "local_patch_dy_m": own[:, 1], "local_trusted": trusted.cpu()}
    return {key: value[ok.cpu()] for key, value in out.items()}, selected[ok]


def _patch_offsets(s10: torch.Tensor, fitted10: torch.Tensor, trusted: torch.Tensor,
                   cfg: PipelineConfig) -> torch.Tensor:
    """``(N, 2)`` pixels added to the field of each patch: the residual translation left by the field
    (the estimator of step 9, on the resampled 10 m patch and the fitted VENuS), where the
    measurement converged, the patch is trusted and the residual is at most
    ``local_max_disagreement_px`` (a cloud or a change the fit did not catch moves a patch's estimate
    further than that); 0 elsewhere."""
    m = patch_residuals(s10.to(fitted10.dtype), fitted10, cfg.residual_iterations)
    offset = m["r"]
    agree = m["converged"] & trusted & (offset.norm(dim=1) <= cfg.registration.local_max_disagreement_px)
    return torch.where(agree[:, None], offset, 0.0)
