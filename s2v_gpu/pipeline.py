"""One pair through every stage: read, grids, register, shift, patches, fit, select, outliers.

I/O happens at the start (products in); everything after the reads is a tensor function on one
device. The result holds the four int16-ready tensors of the SEN2VENuS layout and the statistics the
run records.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from .bands import GROUP_10M, GROUP_20M
from .errors import S2VError
from .grids import CommonGrid, common_grid, is_aligned, read_on_grid, translated
from .mtf import band_sigmas_px, mtf_downsample
from .pairing import Pair
from .patches import PatchConfig, patch_bounds, take_patches, valid_triplets
from .products.product import MaskConfig, TheiaProduct
from .radiometry import RadiometryConfig, apply_linear, fit_linear, patch_rmse, sample_pixels, stack_padded
from .registration import RegistrationConfig, RegistrationResult, register
from .resample import apply_shift, downsample_bicubic_x2
from .selection import SelectionConfig, pair_generator, select_random

log = logging.getLogger(__name__)

VENUS_BANDS_READ = ("B3", "B4", "B7", "B8", "B9", "B10", "B11")


class PairSkipped(S2VError, RuntimeError):
    """A pair cannot give patches (no overlap, weak registration, no valid patch...); the reason says why."""


@dataclass
class PipelineConfig:
    """Every threshold of the method; defaults are the paper's values."""

    reflectance: str = "FRE"  # FRE (slope-corrected) or SRE
    masks: MaskConfig = field(default_factory=MaskConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    radiometry: RadiometryConfig = field(default_factory=RadiometryConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    seed: int = 0


@dataclass
class PairResult:
    """Patches and statistics of one pair. Tensors are float reflectance on the pipeline's device:
    ``v05_10`` (n, 4, 256, 256) fitted VENuS for S2 B2 B3 B4 B8, ``s2_10`` (n, 4, 128, 128),
    ``v05_20`` (n, 4, 256, 256) fitted VENuS for S2 B5 B6 B7 B8A, ``s2_20`` (n, 4, 64, 64)."""

    pair: Pair
    v05_10: torch.Tensor
    s2_10: torch.Tensor
    v05_20: torch.Tensor
    s2_20: torch.Tensor
    patch_index: list[int]
    bounds: list[tuple[float, float, float, float]]
    crs: object
    registration: RegistrationResult
    w_10: torch.Tensor
    w_20: torch.Tensor
    stats: dict


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PairInputs:
    """What :func:`load_pair` read for a pair: the VENuS bands on the common 5 m grid and the
    Sentinel-2 bands on the 10 m / 20 m grids grown by ``margin`` pixels, already on the device
    (off the VENuS grid: only Sentinel-2 B2 at 10 m, ``s20`` None)."""

    pair: Pair
    grid: CommonGrid
    margin: int
    v: object
    s10: object
    s20: object
    read_s: float
    #: Sentinel-2 lies on whole pixels of the common grids (same CRS, aligned origin)
    s2_aligned: bool = True
    #: the opened products (metadata parsed once)
    venus: TheiaProduct | None = None
    s2: TheiaProduct | None = None


def load_pair(pair: Pair, cfg: PipelineConfig, device: torch.device | str = "cpu") -> PairInputs:
    """Read one pair's inputs (the I/O part of :func:`process_pair`; the run calls it in a background
    thread for the next pair while the current one is computed).

    Raises:
        PairSkipped: the footprints do not overlap.
        S2VError / OSError: a product is broken.
    """
    device = torch.device(device)
    start = time.perf_counter()
    venus = TheiaProduct(pair.venus)
    s2 = TheiaProduct(pair.s2)
    grid = common_grid(venus.grid("XS"), s2.grid("R1"), min_size_px=cfg.patches.size_5m)
    if grid is None:
        raise PairSkipped(f"{pair.pair_id}: the footprints of {pair.venus.name} and {pair.s2.name} do not overlap "
                          f"by one {cfg.patches.size_5m}-pixel patch")
    margin = int(math.ceil(cfg.registration.max_distance_m / 10.0)) + 3  # 10 m pixels read around the grid
    kind, masks = cfg.reflectance, cfg.masks
    aligned = is_aligned(s2.grid("R1"), grid.at(10.0)) and is_aligned(s2.grid("R2"), grid.at(20.0))
    v = read_on_grid(venus, VENUS_BANDS_READ, grid.at(5.0), kind=kind, masks=masks, device=device)
    # off the VENuS grid only the blue band is needed before the shift is known: every band is then
    # resampled once from its own pixels at the shifted positions
    bands10 = GROUP_10M["s2"] if aligned else GROUP_10M["s2"][:1]
    s10 = read_on_grid(s2, bands10, grid.expanded(10.0, margin), kind=kind, masks=masks, device=device)
    s20 = read_on_grid(s2, GROUP_20M["s2"], grid.expanded(20.0, margin // 2 + 1), kind=kind, masks=masks,
                       device=device) if aligned else None
    _sync(device)
    return PairInputs(pair, grid, margin, v, s10, s20, time.perf_counter() - start, aligned, venus, s2)


def process_pair(pair: Pair, cfg: PipelineConfig, device: torch.device | str = "cpu",
                 inputs: PairInputs | None = None) -> PairResult:
    """Run every stage on one pair (reading it first unless ``inputs`` come from :func:`load_pair`).

    Raises:
        PairSkipped: the pair gives no patch (the message says why).
        S2VError / OSError: a product is broken (missing file, unreadable raster, bad metadata).
    """
    device = torch.device(device)
    inputs = inputs or load_pair(pair, cfg, device)
    timings: dict[str, float] = {"read": inputs.read_s}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        _sync(device)
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    grid, margin, v, s10, s20 = inputs.grid, inputs.margin, inputs.v, inputs.s10, inputs.s20
    if not v.valid.any():
        raise PairSkipped(f"{pair.pair_id}: no valid VENuS pixel in the common footprint ({pair.venus.name})")
    if not s10.valid.any():
        raise PairSkipped(f"{pair.pair_id}: no valid Sentinel-2 pixel in the common footprint ({pair.s2.name})")

    # --- registration on 10 m blue: VENuS B3 (bicubic x2 down) vs Sentinel-2 B2
    ref = downsample_bicubic_x2(v.channels([0])[None])[0, 0]
    ref_valid = v.valid.view(grid.height // 2, 2, grid.width // 2, 2).all(3).all(1)  # whole 2x2 blocks valid
    h10, w10 = grid.height // 2, grid.width // 2
    mov = s10.reflectance[0, margin:margin + h10, margin:margin + w10]
    mov_valid = s10.valid[margin:margin + h10, margin:margin + w10]
    reg = register(ref, mov, ref_valid, mov_valid, 10.0, cfg.registration)
    lap("register")
    if not reg.ok:
        raise PairSkipped(f"{pair.pair_id}: registration refused: {reg.reason}")

    # --- shift Sentinel-2 onto VENuS (10 m and 20 m), then crop the margins
    h20, w20 = grid.height // 4, grid.width // 4
    if inputs.s2_aligned:
        dx, dy = reg.shift_px
        r10, ok10 = apply_shift(s10.reflectance[None], s10.valid[None], (dx, dy))
        m20 = margin // 2 + 1
        r20, ok20 = apply_shift(s20.reflectance[None], s20.valid[None], (dx / 2, dy / 2))
        r10, ok10 = r10[0, :, margin:margin + h10, margin:margin + w10], ok10[0, 0, margin:margin + h10, margin:margin + w10]
        r20, ok20 = r20[0, :, m20:m20 + h20, m20:m20 + w20], ok20[0, 0, m20:m20 + h20, m20:m20 + w20]
    else:
        # Sentinel-2 on another grid (another UTM zone, an offset origin): resample it once from its
        # own pixels at the shifted positions, reprojection and shift in one bicubic pass (reading the
        # windows again, from the page cache) rather than interpolating an interpolated image
        s2 = inputs.s2
        dxm, dym = reg.shift_m
        kind, masks = cfg.reflectance, cfg.masks
        a = read_on_grid(s2, GROUP_10M["s2"], translated(grid.at(10.0), dxm, dym), kind=kind, masks=masks, device=device)
        b = read_on_grid(s2, GROUP_20M["s2"], translated(grid.at(20.0), dxm, dym), kind=kind, masks=masks, device=device)
        r10, ok10, r20, ok20 = a.reflectance, a.valid, b.reflectance, b.valid
    lap("shift")

    # --- patches and their validity; the valid ones are cut out (VENuS at 5 m only once selected)
    size = cfg.patches.size_5m
    valid = valid_triplets(v.valid, ok10, ok20, size)
    n_total = int(valid.numel())
    candidates = torch.nonzero(valid).flatten()
    if candidates.numel() == 0:
        raise PairSkipped(f"{pair.pair_id}: no valid patch out of {n_total}")
    sp10 = take_patches(r10, size // 2, candidates)
    sp20 = take_patches(r20, size // 4, candidates)
    lap("patchify")

    # --- MTF-matched downsampling of VENuS to S2 resolution, on the whole common grid (normalised
    # by the validity, so patch borders see their true neighbours), then cut into the same patches
    i10 = [VENUS_BANDS_READ.index(b) for b in GROUP_10M["venus"]]
    i20 = [VENUS_BANDS_READ.index(b) for b in GROUP_20M["venus"]]
    sig10 = band_sigmas_px(GROUP_10M["s2"], 10.0)
    sig20 = band_sigmas_px(GROUP_20M["s2"], 20.0)
    # (on the stored int16, scaled afterwards: the blur is linear)
    vs, q = v.scaled()
    v10 = take_patches(mtf_downsample(vs[None], sig10, 2, v.valid[None], channels=i10)[0], size // 2, candidates)
    v20 = take_patches(mtf_downsample(vs[None], sig20, 4, v.valid[None], channels=i20)[0], size // 4, candidates)
    v10, v20 = v10.div_(q), v20.div_(q)
    lap("mtf")

    # --- radiometric fit, both groups in one batched lstsq
    rc = cfg.radiometry
    pre = torch.sqrt((patch_rmse(v10, sp10) ** 2 * 4 + patch_rmse(v20, sp20) ** 2 * 4) / 8)
    fit_keep = pre <= rc.fit_max_rmse
    if not fit_keep.any():
        raise PairSkipped(f"{pair.pair_id}: every valid patch has RMSE > {rc.fit_max_rmse} before the fit")
    gen = pair_generator(cfg.seed, pair.pair_id)
    a10, b10 = sample_pixels(v10, sp10, fit_keep, rc.n_pixels, gen)
    a20, b20 = sample_pixels(v20, sp20, fit_keep, rc.n_pixels, gen)
    try:
        w = fit_linear(*stack_padded([a10, a20], [b10, b20]), rc)
    except S2VError as exc:
        raise PairSkipped(f"{pair.pair_id}: {exc}") from exc
    w10, w20 = w[0], w[1]
    lap("fit")

    # --- random selection, then outlier removal on the 10 m group
    sc = cfg.selection
    chosen = select_random(torch.arange(candidates.numel(), device=device), sc.max_patches, gen)
    # the fit is linear and the normalised blur preserves constants: blur(W v) = W blur(v)
    rmse = patch_rmse(apply_linear(v10[chosen], w10), sp10[chosen])
    keep = rmse <= sc.outlier_rmse
    final = chosen[keep]
    lap("select")
    if final.numel() == 0:
        raise PairSkipped(f"{pair.pair_id}: every selected patch is an outlier (RMSE > {sc.outlier_rmse})")
    # the kept patches are valid throughout: their reflectance is values / q
    fitted10 = apply_linear(take_patches(vs, size, candidates[final], i10), w10, q)
    fitted20 = apply_linear(take_patches(vs, size, candidates[final], i20), w20, q)
    lap("fit")
    patch_ids = candidates[final].tolist()
    all_bounds = patch_bounds(grid.left, grid.top, grid.height, grid.width, size)
    stats = {
        "patches_total": n_total,
        "patches_valid": int(candidates.numel()),
        "dropped_invalid": n_total - int(candidates.numel()),
        "fit_excluded": int((~fit_keep).sum()),
        "dropped_selection": int(candidates.numel() - chosen.numel()),
        "dropped_outlier": int((~keep).sum()),
        "patches_kept": int(final.numel()),
        "fit_pixels_10m": int(a10.shape[0]),
        "fit_pixels_20m": int(a20.shape[0]),
        "common_grid": [grid.left, grid.top, grid.width, grid.height],
        "venus_zenith": inputs.venus.metadata.mean_viewing_zenith,
        "timings": timings,
    }
    return PairResult(
        pair=pair, v05_10=fitted10, s2_10=sp10[final], v05_20=fitted20, s2_20=sp20[final],
        patch_index=patch_ids, bounds=[all_bounds[i] for i in patch_ids], crs=grid.crs, registration=reg,
        w_10=w10, w_20=w20, stats=stats,
    )


__all__ = ["CommonGrid", "PairResult", "PairSkipped", "PipelineConfig", "process_pair"]
