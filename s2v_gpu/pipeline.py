"""One pair through every stage: read, grids, register, shift, patches, MTF, fit, select (the local
registration model's stage: :mod:`s2v_gpu.local_stage`).

I/O happens at the start (products in, :func:`load_pair`); every step after the reads is a tensor
function on one device, except the re-read of an off-grid Sentinel-2 (see :func:`shift_sentinel2`).
The result holds the four int16-ready tensors of the SEN2VENuS layout and the statistics the run
records.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial

import torch

from .bands import GROUP_10M, GROUP_20M, SWIR_20M
from .errors import PairSkipped, S2VError
from .grids import CommonGrid, common_grid, is_aligned, read_on_grid
from .layout import encode_int16, to_int16
from .local_stage import apply_local_field, local_field, off_grid_source
from .mtf import band_sigmas_px, mtf_downsample, mtf_downsample_patches
from .pairing import Pair
from .patches import PatchConfig, any_valid, patch_bounds, take_patches, valid_triplets
from .precision import full_float32
from .products.product import BandStack, MaskConfig, TheiaProduct
from .radiometry import RadiometryConfig, apply_linear, fit_linear, patch_rmse, sample_pixels, stack_padded
from .registration import RegistrationConfig, RegistrationResult, register
from .resample import KERNELS, HalfResolution, ShiftKernel, shift_patches, shift_window, shift_window_valid
from .residuals import patch_residuals, to_metres
from .selection import SelectionConfig, pair_generator, select_random

log = logging.getLogger(__name__)

VENUS_BANDS_READ = ("B3", "B4", "B7", "B8", "B9", "B10", "B11")


class Reflectance(enum.StrEnum):
    """``FRE``: flat reflectance (slope-corrected, the paper's); ``SRE``: surface reflectance."""

    FRE = "FRE"
    SRE = "SRE"


@dataclass
class PipelineConfig:
    """Every threshold of the method; defaults are the paper's values or ours where we depart."""

    reflectance: Reflectance = Reflectance.FRE
    #: The kernel that resamples Sentinel-2 (shift, reprojection) and through which the refinement
    #: samples it: ``lanczos4`` (ours: 0.004 px positional bias on real texture), ``keys`` (a = -0.5,
    #: the paper preset and the previous default: 0.038 px), ``lanczos3``, ``bicubic`` (a = -0.75)
    shift_kernel: ShiftKernel = ShiftKernel.lanczos4
    #: Sentinel-2 pixels read around the common grid beyond ``registration.max_distance_m`` and the
    #: kernel's reach (one pixel of rounding)
    read_margin_extra_px: int = 1
    #: Gauss-Newton steps of the per-patch residual measurement (3: 0.004 px on real texture)
    residual_iterations: int = 3
    #: also Sentinel-2 B11 and B12 at 20 m, shifted like the other bands and cut into the same patches
    #: (no VENuS counterpart; set by format=v2, whose layout carries them)
    swir_20m: bool = False
    masks: MaskConfig = field(default_factory=MaskConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    radiometry: RadiometryConfig = field(default_factory=RadiometryConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    seed: int = 0


@dataclass
class FittedVenus:
    """The kept triplets' 5 m VENuS, fitted when asked: ``v5`` the drawn candidates' values of each group
    ``(N, 4, size, size)`` (reflectance = values / ``q``), ``w`` each group's fit, ``index`` ``(K,)``
    the kept ones among them (increasing, distinct: a selection). The files take the int16 straight
    from the fit, a few patches at a time (no float copy of every patch); the float reflectance is
    computed once, on first use."""

    v5: tuple[torch.Tensor, torch.Tensor]
    w: tuple[torch.Tensor, torch.Tensor]
    q: float
    index: torch.Tensor
    _reflectance: dict = field(default_factory=dict, repr=False)

    def reflectance(self, group: int) -> torch.Tensor:
        """``(K, 4, size, size)`` float fitted reflectance of group 0 (10 m bands) or 1 (20 m bands)."""
        if group not in self._reflectance:
            self._reflectance[group] = apply_linear(self.v5[group], self.w[group], self.q, self._index(group))
        return self._reflectance[group]

    def _index(self, group: int) -> torch.Tensor | None:
        """The kept patches of ``v5[group]`` (:func:`index_or_all`: read in order, without a gather,
        when they are all of them)."""
        return index_or_all(self.index, self.v5[group].shape[0])

    def int16(self, group: int) -> torch.Tensor:
        """The same as the files store it (:func:`~s2v_gpu.layout.to_int16` of :meth:`reflectance`, the
        same bytes), on the CPU."""
        if group in self._reflectance:
            return to_int16(self._reflectance[group])
        return apply_linear(self.v5[group], self.w[group], self.q, self._index(group), out_dtype=torch.int16,
                            encode=partial(encode_int16, in_place=True)).cpu().contiguous()


@dataclass
class PairResult:
    """Patches and statistics of one pair. Tensors are float reflectance on the pipeline's device:
    ``v05_10`` (n, 4, 256, 256) fitted VENuS for S2 B2 B3 B4 B8, ``s2_10`` (n, 4, 128, 128),
    ``v05_20`` (n, 4, 256, 256) fitted VENuS for S2 B5 B6 B7 B8A, ``s2_20`` (n, 4, 64, 64); the VENuS
    ones are computed on first use (:class:`FittedVenus`; the writer takes their int16 directly)."""

    pair: Pair
    venus: FittedVenus
    s2_10: torch.Tensor
    s2_20: torch.Tensor
    patch_index: list[int]
    bounds: list[tuple[float, float, float, float]]
    crs: object
    registration: RegistrationResult
    w_10: torch.Tensor
    w_20: torch.Tensor
    stats: dict
    #: ``swir_20m``: Sentinel-2 B11 B12 ``(n, 2, 64, 64)``
    s2_swir: torch.Tensor | None = None
    #: per kept patch, on the CPU: the residual misregistration of each group (``res10_dx_m``,
    #: ``res10_dy_m``, ``res20_...``, metres east/north), its texture, RMSE and convergence
    patches: dict = field(default_factory=dict)

    @property
    def v05_10(self) -> torch.Tensor:
        return self.venus.reflectance(0)

    @property
    def v05_20(self) -> torch.Tensor:
        return self.venus.reflectance(1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PairInputs:
    """What :func:`load_pair` read for a pair: the VENuS bands on the common 5 m grid and the
    Sentinel-2 bands on the 10 m / 20 m grids grown by ``margin`` / ``margin20`` pixels, already on
    the device (off the VENuS grid: only Sentinel-2 B2 at 10 m, ``s20`` None)."""

    pair: Pair
    grid: CommonGrid
    margin: int
    margin20: int
    v: BandStack
    s10: BandStack
    s20: BandStack | None
    read_s: float
    #: Sentinel-2 lies on whole pixels of the common grids (same CRS, aligned origin)
    s2_aligned: bool = True
    #: the opened products (metadata parsed once)
    venus: TheiaProduct | None = None
    s2: TheiaProduct | None = None
    #: ``swir_20m``: Sentinel-2 B11 B12 on the 20 m grid grown by ``margin20`` (on the VENuS grid only)
    swir: BandStack | None = None
    #: off the VENuS grid with ``model=local``: the raw Sentinel-2 windows read at the global shift,
    #: by (bands, resolution), kept until the local field resamples the patches from them
    sources: dict = field(default_factory=dict)


#: The widest common grid read (5 m pixels a side). A VENuS tile is 5560 px (27.8 km); a larger one is
#: a malformed or hostile header (a sparse GeoTIFF can declare 10^5 px a side in a few kB), whose
#: buffers would exhaust the memory and get the process killed without a message.
MAX_GRID_PX = 16384


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
    vgrid = venus.grid("XS")
    grid = common_grid(vgrid, s2.grid("R1"), min_size_px=cfg.patches.size_5m)
    if grid is None:
        raise PairSkipped(f"{pair.pair_id}: the footprints of {pair.venus.name} and {pair.s2.name} do not overlap "
                          f"by one {cfg.patches.size_5m}-pixel patch")
    if max(grid.width, grid.height) > MAX_GRID_PX:  # before any pixel is read or any buffer allocated
        raise PairSkipped(f"{pair.pair_id}: the common grid is {grid.width} x {grid.height} pixels at 5 m (more than "
                          f"{MAX_GRID_PX} on a side): not a VENuS tile ({pair.venus.name}'s header declares "
                          f"{vgrid.width} x {vgrid.height}); refused before reading it")
    # Sentinel-2 pixels read around the grid: the largest shift accepted plus the kernel's reach
    extra = KERNELS[cfg.shift_kernel].reach + cfg.read_margin_extra_px
    reach_m = cfg.registration.max_distance_m + (cfg.registration.local_max_field_m
                                                 if cfg.registration.model == "local" else 0.0)
    margin = int(math.ceil(reach_m / 10.0)) + extra
    margin20 = int(math.ceil(reach_m / 20.0)) + extra
    kw = {"kind": cfg.reflectance, "masks": cfg.masks, "device": device, "kernel": cfg.shift_kernel}
    aligned = is_aligned(s2.grid("R1"), grid.at(10.0)) and is_aligned(s2.grid("R2"), grid.at(20.0))
    v = read_on_grid(venus, VENUS_BANDS_READ, grid.at(5.0), **kw)
    # off the VENuS grid only the blue band is needed before the shift is known: every band is then
    # resampled once from its own pixels at the shifted positions
    bands10 = GROUP_10M["s2"] if aligned else GROUP_10M["s2"][:1]
    s10 = read_on_grid(s2, bands10, grid.expanded(10.0, margin), **kw)
    s20 = read_on_grid(s2, GROUP_20M["s2"], grid.expanded(20.0, margin20), **kw) if aligned else None
    # a stack of its own: the masks of B11 / B12 (their saturation) do not decide which patches are valid
    swir = read_on_grid(s2, SWIR_20M, grid.expanded(20.0, margin20), **kw) if aligned and cfg.swir_20m else None
    _sync(device)
    return PairInputs(pair, grid, margin, margin20, v, s10, s20, time.perf_counter() - start, aligned, venus, s2,
                      swir)


def registration_inputs(inputs: PairInputs) -> tuple[HalfResolution, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 10 m blue images registered: VENuS B3 bicubic-downsampled x2 (a
    :class:`~s2v_gpu.resample.HalfResolution`: computed where the registration reads it) and its
    validity (whole 2x2 blocks valid), Sentinel-2 B2 over the same footprint and its validity; each
    ``(H/2, W/2)``."""
    grid, margin, v, s10 = inputs.grid, inputs.margin, inputs.v, inputs.s10
    h10, w10 = grid.height // 2, grid.width // 2
    values, divisor = v.scaled()
    ref = HalfResolution(values[0], v.valid, divisor)
    ref_valid = v.valid[0::2, 0::2] & v.valid[0::2, 1::2]  # whole 2x2 blocks valid (strided: one pass each)
    ref_valid &= v.valid[1::2, 0::2]
    ref_valid &= v.valid[1::2, 1::2]
    mov = s10.channels([0])[0, margin:margin + h10, margin:margin + w10]  # the blue band alone
    mov_valid = s10.valid[margin:margin + h10, margin:margin + w10]
    return ref, mov, ref_valid, mov_valid


def shift_sentinel2(inputs: PairInputs, reg: RegistrationResult, cfg: PipelineConfig,
                    device: torch.device) -> tuple[torch.Tensor, ...]:
    """Sentinel-2 at 10 m and 20 m moved onto VENuS by the registration shift, cropped to the common
    grid: ``(4, H/2, W/2)``, its validity ``(H/2, W/2)``, ``(4, H/4, W/4)``, ``(H/4, W/4)``.

    On the VENuS grid the shift is applied to the tensors read with a margin. Off the grid (another
    UTM zone, an offset origin) this step is *not* a pure tensor function: it reads the Sentinel-2
    windows again (from the page cache) and resamples them once, from their own pixels, at the shifted
    positions (reprojection and shift in one pass), rather than interpolating an interpolated image.
    """
    r10, ok10 = _moved(inputs, inputs.s10, GROUP_10M["s2"], 10.0, inputs.margin, reg, cfg, device)
    r20, ok20 = _moved(inputs, inputs.s20, GROUP_20M["s2"], 20.0, inputs.margin20, reg, cfg, device)
    return r10, ok10, r20, ok20


def swir_patches(inputs: PairInputs, reg: RegistrationResult, cfg: PipelineConfig, device: torch.device,
                 ids: torch.Tensor) -> torch.Tensor:
    """Sentinel-2 B11 B12 of the candidate patches ``ids``, moved like the other 20 m bands (on the
    VENuS grid only those patches, :func:`moved_candidates`), ``(N, 2, s/4, s/4)``; their own validity
    is not used (it does not decide the patches)."""
    size = cfg.patches.size_5m // 4
    if not inputs.s2_aligned:
        return take_patches(_moved(inputs, inputs.swir, SWIR_20M, 20.0, inputs.margin20, reg, cfg, device)[0],
                            size, ids)
    return _moved_patches(inputs.swir, _on_grid(inputs.grid, 20.0, inputs.margin20, reg), cfg.shift_kernel, size, ids)


def _moved(inputs: PairInputs, stack: BandStack | None, bands: tuple[str, ...], res: float, margin: int,
           reg: RegistrationResult, cfg: PipelineConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One Sentinel-2 stack at ``res`` moved by the registration shift onto the common grid:
    ``(C, h, w)`` and its validity ``(h, w)`` (off the grid: read again at the shifted positions)."""
    grid = inputs.grid
    if not inputs.s2_aligned:
        b = off_grid_source(inputs, bands, res, reg, cfg, device).sample(cfg.shift_kernel)
        return b.reflectance, b.valid
    # only the common grid is computed (the margins are read for the taps, never shifted themselves)
    shift, window = _on_grid(grid, res, margin, reg)
    r, ok = shift_window(stack.reflectance[None], stack.valid[None], shift, cfg.shift_kernel, window)
    return r[0], ok[0, 0]


def _on_grid(grid: CommonGrid, res: float, margin: int, reg: RegistrationResult):
    """The shift in pixels at ``res`` and the common grid's window in the stack read with ``margin``."""
    factor, scale = int(res // 5), res / 10.0
    h, w = grid.height // factor, grid.width // factor
    dx, dy = reg.shift_px
    return (dx / scale, dy / scale), (margin, margin + h, margin, margin + w)


def _moved_patches(stack: BandStack, at: tuple, kernel: str, size: int, ids: torch.Tensor,
                   valid_taps: bool = False) -> torch.Tensor:
    """The patches ``ids`` of a stack on the VENuS grid moved by the registration shift, computing
    only them (``at``: :func:`_on_grid`'s shift and window), ``(N, C, size, size)``; ``valid_taps``:
    ``ids`` are candidates of this stack's moved validity (see :func:`~s2v_gpu.resample.shift_patches`)."""
    shift, (r0, r1, c0, c1) = at
    # the stored integers, converted to reflectance only where the patches' taps read them
    values, divisor = stack.scaled()
    return shift_patches(values, stack.valid, shift, kernel, (r0, c0), size, ids, c1 - c0,
                         divisor=None if stack.dn is None else divisor, valid_taps=valid_taps)


def moved_candidates(pid: str, inputs: PairInputs, reg: RegistrationResult, cfg: PipelineConfig,
                     device: torch.device) -> tuple[Candidates, torch.Tensor | None, torch.Tensor]:
    """The valid triplets after the registration shift with their Sentinel-2 patches, the moved blue
    band ``(H/2, W/2)`` for the local model (else None) and the moved 10 m validity.

    On the VENuS grid the validity is moved over the whole common grid but the reflectance only over
    the candidate patches (the same bits as cutting the whole moved grid: the same taps per output);
    off the grid every band is resampled once (:func:`shift_sentinel2`)."""
    size, v_valid = cfg.patches.size_5m, inputs.v.valid
    if not inputs.s2_aligned:
        r10, ok10, r20, ok20 = shift_sentinel2(inputs, reg, cfg, device)
        return valid_candidates(pid, v_valid, r10, ok10, r20, ok20, size), r10[0], ok10
    at10 = _on_grid(inputs.grid, 10.0, inputs.margin, reg)
    at20 = _on_grid(inputs.grid, 20.0, inputs.margin20, reg)
    ok10, ok20 = (shift_window_valid(stack.valid[None, None], shift, cfg.shift_kernel, window)[0, 0]
                  for stack, (shift, window) in ((inputs.s10, at10), (inputs.s20, at20)))
    ids, n_total = candidate_ids(pid, v_valid, ok10, ok20, size)
    # the candidates were chosen on these moved validities: each of their samples reads valid pixels
    patches = [_moved_patches(inputs.s10, at10, cfg.shift_kernel, size // 2, ids, valid_taps=True),
               _moved_patches(inputs.s20, at20, cfg.shift_kernel, size // 4, ids, valid_taps=True)]
    blue = None
    if cfg.registration.model == "local":  # the local field measures the whole moved blue band
        blue = shift_window(inputs.s10.reflectance[None, :1], inputs.s10.valid[None], at10[0], cfg.shift_kernel,
                            at10[1])[0][0, 0]
    return Candidates(ids, n_total, *patches), blue, ok10


@dataclass
class Candidates:
    """The valid patch triplets of a pair: their indices in the row-major patch grid, the
    Sentinel-2 patches and the MTF-downsampled VENuS patches (reflectance, ``(N, 4, s, s)``)."""

    ids: torch.Tensor
    n_total: int
    s10: torch.Tensor
    s20: torch.Tensor
    v10: torch.Tensor | None = None
    v20: torch.Tensor | None = None
    #: ``swir_20m``: Sentinel-2 B11 B12 patches ``(N, 2, s/4, s/4)``
    swir: torch.Tensor | None = None


def valid_candidates(pid: str, v_valid, r10, ok10, r20, ok20, size: int) -> Candidates:
    """Triplets with no invalid pixel in any of the three (paper section 2.6), Sentinel-2 cut out."""
    ids, n_total = candidate_ids(pid, v_valid, ok10, ok20, size)
    return Candidates(ids, n_total, take_patches(r10, size // 2, ids), take_patches(r20, size // 4, ids))


def candidate_ids(pid: str, v_valid, ok10, ok20, size: int) -> tuple[torch.Tensor, int]:
    """The numbers of the triplets with no invalid pixel in any of the three (paper section 2.6), and
    how many triplets the grid holds."""
    valid = valid_triplets(v_valid, ok10, ok20, size)
    ids = torch.nonzero(valid).flatten()
    if ids.numel() == 0:
        raise PairSkipped(f"{pid}: no valid patch out of {valid.numel()}")
    return ids, int(valid.numel())


def venus_at_s2_resolution(v, cand: Candidates, size: int) -> None:
    """MTF-matched downsampling of VENuS to 10 m and 20 m (normalised by the validity, so patch borders
    see their true neighbours) of the candidates' patches (on the stored int16, scaled afterwards: the
    blur is linear): only the candidates' windows are blurred when they cover less than the common
    grid, else the whole grid by strips, then cut (the same bits either way)."""
    vs, q = v.scaled()
    for attr, group, res, factor in (("v10", GROUP_10M, 10.0, 2), ("v20", GROUP_20M, 20.0, 4)):
        channels = [VENUS_BANDS_READ.index(b) for b in group["venus"]]
        sigmas = band_sigmas_px(group["s2"], res)
        window = size + 2 * MTF_WINDOW_MARGIN_PX  # a patch and the pixels its kernels reach, about
        if cand.ids.numel() * window**2 < vs.shape[-2] * vs.shape[-1]:
            low = mtf_downsample_patches(vs[None], v.valid[None], sigmas, factor, cand.ids, size, channels)
        else:
            whole = mtf_downsample(vs[None], sigmas, factor, v.valid[None], channels=channels)[0]
            low = take_patches(whole, size // factor, cand.ids)
        setattr(cand, attr, low.div_(q))


#: the 5 m pixels around a patch that its MTF kernels read (10 at 20 m), for the choice above
MTF_WINDOW_MARGIN_PX = 10


def fit_radiometry(pid: str, cand: Candidates, rc: RadiometryConfig, gen: torch.Generator):
    """W (5x4) per band group, both groups in one batched lstsq, on random pixels of the patches whose
    global RMSE (over the 8 bands) is at most ``fit_max_rmse``. Returns ``(w10, w20, fit_keep, n10, n20)``."""
    pre = torch.sqrt((patch_rmse(cand.v10, cand.s10) ** 2 + patch_rmse(cand.v20, cand.s20) ** 2) / 2)
    fit_keep = pre <= rc.fit_max_rmse
    if not fit_keep.any():
        raise PairSkipped(f"{pid}: every valid patch has RMSE > {rc.fit_max_rmse} before the fit{_scale_hint(cand)}")
    a10, b10 = sample_pixels(cand.v10, cand.s10, fit_keep, rc.n_pixels, gen)
    a20, b20 = sample_pixels(cand.v20, cand.s20, fit_keep, rc.n_pixels, gen)
    try:
        w = fit_linear(*stack_padded([a10, a20], [b10, b20]), rc)
    except S2VError as exc:
        raise PairSkipped(f"{pid}: {exc}") from exc
    return w[0], w[1], fit_keep, int(a10.shape[0]), int(a20.shape[0])


def _scale_hint(cand: Candidates) -> str:
    """When the two sensors' mean reflectances differ by more than 3x (same-day surface reflectances
    agree within tens of percent), the likely cause: a wrong REFLECTANCE_QUANTIFICATION_VALUE."""
    ratio = float(cand.s10.double().mean() / cand.v10.double().mean().clamp_min(1e-9))
    if 1 / 3 <= ratio <= 3:
        return ""
    return (f" (Sentinel-2 is {ratio:.3g}x VENuS on average: is one product's REFLECTANCE_QUANTIFICATION_VALUE "
            "wrong?)")


def draw_patches(cand: Candidates, sc: SelectionConfig, gen: torch.Generator) -> Candidates:
    """At most ``max_patches`` candidates drawn at random (paper 2.8), in patch order: the candidates
    the thresholds then act on."""
    chosen = select_random(torch.arange(cand.ids.numel(), device=cand.ids.device), sc.max_patches, gen)
    if chosen.numel() == cand.ids.numel():
        return cand
    return Candidates(cand.ids[chosen], cand.n_total, cand.s10[chosen], cand.s20[chosen], cand.v10[chosen],
                      cand.v20[chosen], None if cand.swir is None else cand.swir[chosen])


def drop_outliers(pid: str, cand: Candidates, fitted10: torch.Tensor, sc: SelectionConfig) -> torch.Tensor:
    """Positions of the drawn candidates whose RMSE(S2 10 m, fitted VENuS at 10 m ``fitted10``) is at
    most ``outlier_rmse``."""
    rmse = patch_rmse(fitted10, cand.s10)
    final = torch.nonzero(rmse <= sc.outlier_rmse).flatten()
    if final.numel() == 0:
        raise PairSkipped(f"{pid}: every selected patch is an outlier (RMSE > {sc.outlier_rmse})")
    return final


@dataclass
class Prepared:
    """A pair computed up to the random draw of its patches: all that the selection thresholds
    (``outlier_rmse``, ``max_residual_m``) act on, so that a sweep of them starts from here
    (:mod:`s2v_gpu.cache`). ``cand`` holds the drawn candidates; ``v5_10`` / ``v5_20`` their 5 m
    VENuS values for each group (``(N, 4, size, size)``, reflectance = values / ``q``)."""

    grid: CommonGrid
    venus_zenith: float
    reg: RegistrationResult
    cand: Candidates
    v5_10: torch.Tensor
    v5_20: torch.Tensor
    q: float
    w10: torch.Tensor
    w20: torch.Tensor
    n_valid: int
    fit_excluded: int
    fit_pixels: tuple[int, int]
    timings: dict
    #: the local registration model's field (None for ``model=translation``); needs the inputs
    field: object | None = None


def process_pair(pair: Pair, cfg: PipelineConfig, device: torch.device | str = "cpu",
                 inputs: PairInputs | None = None) -> PairResult:
    """Run every stage on one pair (reading it first unless ``inputs`` come from :func:`load_pair`).

    Raises:
        PairSkipped: the pair gives no patch (the message says why).
        S2VError / OSError: a product is broken (missing file, unreadable raster, bad metadata).
    """
    inputs = inputs or load_pair(pair, cfg, device)
    return finish_pair(pair, prepare_pair(pair, cfg, device, inputs), cfg, inputs)


@full_float32
def prepare_pair(pair: Pair, cfg: PipelineConfig, device: torch.device | str, inputs: PairInputs) -> Prepared:
    """Registration, shift, candidates, MTF, fit and the random draw of the patches (see :class:`Prepared`)."""
    device = torch.device(device)
    lap = _Laps(device, {"read": inputs.read_s})
    pid, v, size = pair.pair_id, inputs.v, cfg.patches.size_5m
    if not any_valid(v.valid):
        raise PairSkipped(f"{pid}: no valid VENuS pixel in the common footprint ({pair.venus.name})")
    if not any_valid(inputs.s10.valid):
        raise PairSkipped(f"{pid}: no valid Sentinel-2 pixel in the common footprint ({pair.s2.name})")
    blue = registration_inputs(inputs)
    reg = register(*blue, 10.0, cfg.registration, kernel=cfg.shift_kernel)
    lap("register")
    if not reg.ok:
        raise PairSkipped(f"{pid}: registration refused: {reg.reason}")
    cand, blue10, ok10 = moved_candidates(pid, inputs, reg, cfg, device)
    lap("shift")
    if cfg.swir_20m:
        cand.swir = swir_patches(inputs, reg, cfg, device, cand.ids)
    lap("patchify")
    field = local_field(blue, blue10, ok10, inputs, reg, cfg, cand.ids)
    lap("local")
    venus_at_s2_resolution(v, cand, size)
    lap("mtf")
    gen = pair_generator(cfg.seed, pid)
    w10, w20, fit_keep, n10, n20 = fit_radiometry(pid, cand, cfg.radiometry, gen)
    lap("fit")
    drawn = draw_patches(cand, cfg.selection, gen)
    vs, q = v.scaled()
    v5 = [take_patches(vs, size, drawn.ids, [VENUS_BANDS_READ.index(b) for b in g["venus"]])
          for g in (GROUP_10M, GROUP_20M)]
    return Prepared(inputs.grid, inputs.venus.metadata.mean_viewing_zenith, reg, drawn, v5[0], v5[1], q, w10, w20,
                    int(cand.ids.numel()), int((~fit_keep).sum()), (n10, n20), lap.timings, field)


@full_float32
def finish_pair(pair: Pair, prep: Prepared, cfg: PipelineConfig, inputs: PairInputs | None = None) -> PairResult:
    """The selection thresholds, the local field (``model=local``: needs ``inputs``), the residual
    misregistration of each kept patch, and the pair's result."""
    pid, cand, reg = pair.pair_id, prep.cand, prep.reg
    lap = _Laps(cand.s10.device, prep.timings)
    # VENuS at 10 m fitted once for the outlier test, the per-patch offsets and the residuals (the fit
    # is linear and the normalised blur preserves constants: blur(W v) = W blur(v))
    fitted10 = apply_linear(cand.v10, prep.w10)
    selected = drop_outliers(pid, cand, fitted10, cfg.selection)
    lap("select")
    before_local = selected.numel()
    local, selected = apply_local_field(pid, prep.field, inputs, reg, cand, selected, cfg, fitted10)
    lap("local")
    residuals, final = residuals_of(pid, cand, selected, fitted10, prep.w20, cfg)
    residuals.update({k: v[torch.isin(selected, final).cpu()] for k, v in local.items()})
    reg.extra["dropped_local"] = before_local - selected.numel()
    lap("residuals")
    return _result(pair, prep, selected, final, residuals, lap)


def residuals_of(pid: str, cand: Candidates, final: torch.Tensor, fitted10: torch.Tensor, w20: torch.Tensor,
                 cfg: PipelineConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The residual misregistration of each selected patch (both groups, metres, see
    :mod:`s2v_gpu.residuals`), and the patches kept by ``selection.max_residual_m`` (0: all)."""
    out = {}
    groups = (("res10", rows_of(cand.s10, final), rows_of(fitted10, final), 10.0),
              ("res20", rows_of(cand.s20, final), apply_linear(cand.v20, w20, index=index_or_all(final, len(cand.v20))),
               20.0))
    for name, s, fitted, res in groups:
        m = patch_residuals(s, fitted, cfg.residual_iterations)
        metres = to_metres(m["r"], res)
        out.update({f"{name}_dx_m": metres[:, 0], f"{name}_dy_m": metres[:, 1], f"{name}_texture": m["texture"],
                    f"{name}_rmse": m["rmse"], f"{name}_converged": m["converged"]})
    limit = cfg.selection.max_residual_m
    if limit <= 0:
        return out, final
    keep = out["res10_converged"] & out["res20_converged"]
    for name in ("res10", "res20"):
        keep &= torch.hypot(out[f"{name}_dx_m"], out[f"{name}_dy_m"]) <= limit
    if not keep.any():
        raise PairSkipped(f"{pid}: every selected patch has a residual misregistration above {limit} m")
    return {k: v[keep] for k, v in out.items()}, final[keep]


def _result(pair: Pair, prep: Prepared, selected: torch.Tensor, final: torch.Tensor, residuals: dict,
            lap) -> PairResult:
    """The fitted 5 m VENuS patches of the kept triplets, their bounds, and the pair's statistics."""
    cand, reg, grid = prep.cand, prep.reg, prep.grid
    venus = FittedVenus((prep.v5_10, prep.v5_20), (prep.w10, prep.w20), prep.q, final)  # fitted when written
    patch_ids = cand.ids[final].tolist()
    all_bounds = patch_bounds(grid.left, grid.top, grid.height, grid.width, prep.v5_10.shape[-1])
    n_drawn, dropped_local = int(cand.ids.numel()), int(reg.extra.get("dropped_local", 0))
    stats = {
        "patches_total": cand.n_total, "patches_valid": prep.n_valid, "dropped_invalid": cand.n_total - prep.n_valid,
        "fit_excluded": prep.fit_excluded, "dropped_selection": prep.n_valid - n_drawn,
        "dropped_outlier": n_drawn - int(selected.numel()) - dropped_local,
        "dropped_residual": int(selected.numel() - final.numel()), "patches_kept": int(final.numel()),
        "dropped_local": dropped_local, "fit_pixels_10m": prep.fit_pixels[0], "fit_pixels_20m": prep.fit_pixels[1],
        "common_grid": [grid.left, grid.top, grid.width, grid.height],
        "venus_zenith": prep.venus_zenith, "timings": lap.timings, **residual_summary(residuals),
    }
    return PairResult(pair=pair, venus=venus, s2_10=rows_of(cand.s10, final), s2_20=rows_of(cand.s20, final),
                      patch_index=patch_ids, bounds=[all_bounds[i] for i in patch_ids], crs=grid.crs,
                      registration=reg, w_10=prep.w10, w_20=prep.w20, stats=stats,
                      patches={k: v.cpu() for k, v in residuals.items()},
                      s2_swir=None if cand.swir is None else rows_of(cand.swir, final))


def index_or_all(index: torch.Tensor, n: int) -> torch.Tensor | None:
    """``index`` of rows ``0..n-1``, increasing and distinct (a selection, e.g. from ``nonzero``), or
    None when it selects every row (most pairs keep all their drawn patches: no gather, no copy)."""
    return None if index.numel() == n else index


def rows_of(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a selection ``index`` (:func:`index_or_all`): ``x`` itself when it is every row."""
    index = index_or_all(index, x.shape[0])
    return x if index is None else x[index]


def residual_summary(residuals: dict[str, torch.Tensor]) -> dict[str, float]:
    """Median and 95th percentile of the residual magnitude of a pair's kept patches (metres)."""
    out = {}
    for name in ("res10", "res20"):
        mag = torch.hypot(residuals[f"{name}_dx_m"], residuals[f"{name}_dy_m"]).double().cpu()
        out[f"{name}_median_m"] = float(mag.median()) if mag.numel() else float("nan")
        out[f"{name}_p95_m"] = float(mag.quantile(0.95)) if mag.numel() else float("nan")
    return out


class _Laps:
    """Per-stage wall times (the device synchronised at each lap, so GPU work is counted where it runs)."""

    def __init__(self, device: torch.device, timings: dict[str, float]) -> None:
        self.device, self.timings, self.clock = device, timings, time.perf_counter()

    def __call__(self, name: str) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.clock
        self.clock = now


__all__ = ["CommonGrid", "PairResult", "PairSkipped", "PipelineConfig", "process_pair"]
