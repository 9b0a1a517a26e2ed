"""Global translation between two images: SIFT matches (Kornia), robust estimate, sub-pixel refinement.

Public entry point: :func:`register`. Convention: the shift is that of the *moving* image with respect
to the *reference*: a ground feature at position g in the reference appears at g + shift in the
moving image; ``shift_m = (dx east, dy north)`` in metres, ``shift_px = (dx right, dy down)`` in
pixels. :func:`s2v_gpu.resample.apply_shift` with ``shift_px`` brings the moving image onto the
reference.

Modes:

``paper`` (SEN2VENuS, section 2.5.2): tiles of ``tile_size`` pixels, SIFT keypoints and descriptors,
matches dropped where either validity mask is invalid or where the displacement exceeds
``max_distance_m``, shift = plain mean of the remaining displacements.

``robust`` (default): the paper's matches on the ``max_tiles`` tiles where both images are the most
valid, computed with invalid pixels masked before detection; their mean within ``inlier_px`` of their
median (a trimmed estimate that the 15 m truncation does not bias) seeds an iteratively reweighted
Gauss-Newton fit of translation, gain and offset on a regular subsample of the whole valid overlap
(Lucas-Kanade with Tukey weights, so clouds missing from a mask are down-weighted; the moving image
and its exact derivative are sampled with the Keys cubic). Measured on the synthetic pairs: errors
of 0.005-0.044 px (0.05-0.44 m).

Matching: mutual nearest neighbours that also pass Lowe's ratio test in both directions (the rule of
``kornia.feature.match_smnn`` with ``th = ratio``), for every tile at once on the device.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field

import kornia.feature as KF
import torch
import torch.nn.functional as F

from .errors import check_shape
from .phase import phase_correlation
from .resample import GridSampler, HalfResolution, dense

log = logging.getLogger(__name__)


class RegistrationModel(enum.StrEnum):
    """``translation``: one global shift per pair (the paper); ``local``: plus a smooth displacement
    field measured on tiles (see :mod:`s2v_gpu.local`), each patch resampled at its own translation."""

    translation = "translation"
    local = "local"


class RegistrationSeed(enum.StrEnum):
    """Robust mode: what seeds the refinement. ``sift``: the trimmed mean of Kornia SIFT matches on the
    most valid tiles; ``phase``: phase correlation of the same tiles (:mod:`s2v_gpu.phase`), falling
    back to SIFT where the tiles disagree or correlate weakly; ``auto``: phase on the CPU (where SIFT
    costs most of the registration), SIFT on CUDA."""

    auto = "auto"
    sift = "sift"
    phase = "phase"


class RegistrationMode(enum.StrEnum):
    """``paper``: plain mean of the SIFT matches within the distance window on every tile (the
    paper's recipe); ``robust``: trimmed mean of the matches on the most valid tiles, refined by
    Gauss-Newton over the whole overlap."""

    paper = "paper"
    robust = "robust"


@dataclass
class RegistrationConfig:
    """Registration settings; the paper's values are the defaults where it gives one."""

    mode: RegistrationMode = RegistrationMode.robust
    tile_size: int = 366  # paper: non-overlapping 366x366 tiles at 10 m
    max_distance_m: float = 15.0  # paper: matches further apart are obvious outliers
    #: SIFT keypoints per tile (the paper preset keeps 2000: its plain mean needs every match it can get)
    num_features: int = 500
    ratio: float = 0.9  # Lowe ratio of match_smnn (both directions)
    min_matches: int = 20  # fewer matches: the pair is refused
    inlier_px: float = 1.0  # robust mode: matches within this radius of the median are averaged
    refine: bool = True  # robust mode: Gauss-Newton refinement over the valid overlap
    #: robust mode with refinement: the seed (see :class:`RegistrationSeed`)
    seed: RegistrationSeed = RegistrationSeed.auto
    #: phase seed: a tile whose correlation peak is below this, or whose shift exceeds
    #: ``max_distance_m``, does not count (same-day pairs give 0.3-0.55; noise against a scene up to
    #: 0.07 on a 192 px tile); fewer than ``phase_min_tiles`` counting tiles within ``inlier_px`` of
    #: their median and SIFT seeds instead
    phase_min_peak: float = 0.15
    phase_min_tiles: int = 2
    refine_iterations: int = 15
    #: robust mode: SIFT on at most this many tiles, those with the most valid pixels (the matches
    #: only seed the refinement; the paper mode always uses every tile). 0: every tile.
    max_tiles: int = 3
    #: robust mode: the refinement uses at most this many pixels (a regular subsample of the overlap)
    refine_max_pixels: int = 400_000
    #: robust mode: the refinement's first steps use every this-many-th of its points in each direction
    #: (a quarter of them), until a step is below ``refine_coarse_tol_px``; then all of them (1: no
    #: coarse stage). 0.4.0: the seed's long steps at a quarter of the cost, the same fixed point.
    refine_coarse_step: int = 2
    refine_coarse_tol_px: float = 0.02
    max_spread_m: float = 10.0  # robust spread of the matches above this: weak registration
    #: Fewer matches than this fraction within ``inlier_px`` of the median (among the matches on valid
    #: pixels, before the distance window): the matches do not agree, e.g. because the true shift lies
    #: beyond ``max_distance_m`` and only outliers are left. Flags the pair in both modes (our addition;
    #: 0 disables it).
    min_inlier_fraction: float = 0.25
    #: robust mode: fewer valid sample points than this in the refinement and the match estimate is kept
    refine_min_points: int = 100
    #: robust mode: a refined shift further than this from the match estimate (px) means the refinement
    #: locked onto something else; the match estimate is kept
    refine_max_jump_px: float = 2.0
    #: Tukey biweight constant of the refinement's IRLS (4.685: 95 % efficiency on Gaussian residuals)
    tukey_c: float = 4.685
    #: ``translation`` (the paper, default until measured better on real sites) or ``local``
    model: RegistrationModel = RegistrationModel.translation
    #: local model: tiles (10 m pixels) on which the residual translation is measured
    local_tile_px: int = 32
    #: local model: standard deviation of the field's Gaussian kernel, in tiles
    local_smoothing_tiles: float = 0.5
    #: local model: a tile further than this (pixels) from the field of its neighbours is rejected
    local_max_disagreement_px: float = 0.5
    #: local model: each selected patch's own residual translation (10 m, measured after the global
    #: shift, as step 9 measures it) sets the field's mean over the patch, where the two agree within
    #: ``local_max_disagreement_px``: the field keeps its shape inside the patch, the patch its
    #: measured position (canopy and buildings move whole patches by more than a field smooth at the
    #: 160 m scale follows); elsewhere the field alone is applied
    local_per_patch: bool = True
    #: local model: below this mean kernel support over a patch (in typical tiles) the patch keeps
    #: the global translation and is flagged untrusted
    local_min_support: float = 0.5
    #: local model: the largest field (metres) applied on top of the global shift (Sentinel-2 is read
    #: that much further around the grid); a patch needing more keeps the global shift, flagged
    local_max_field_m: float = 20.0


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        shift_m: (dx east, dy north) in metres.
        shift_px: (dx right, dy down) in pixels.
        n_matches: matches used by the estimator (after masks and the distance window).
        n_candidates: matches before the validity masks and the distance window.
        median_m: component-wise median displacement of the matches, metres (x east, y north).
        spread_m: robust spread of the matches around the median (1.4826 MAD of the distance), metres.
        mode: the estimator that produced ``shift_m`` ("paper", "robust" or "robust+refined").
        ok: False when the shift is not trustworthy; ``reason`` says why.
        sift_shift_m: the match-based estimate before refinement.
    """

    shift_m: tuple[float, float]
    shift_px: tuple[float, float]
    n_matches: int
    n_candidates: int
    median_m: tuple[float, float]
    spread_m: float
    mode: str
    ok: bool = True
    reason: str = ""
    sift_shift_m: tuple[float, float] = (math.nan, math.nan)
    refine_pixels: int = 0
    extra: dict = field(default_factory=dict)


_FEATURES: dict[tuple, KF.SIFTFeatureScaleSpace] = {}


def _sift(num_features: int, device: torch.device) -> KF.SIFTFeatureScaleSpace:
    key = (num_features, str(device))
    if key not in _FEATURES:
        _FEATURES[key] = KF.SIFTFeatureScaleSpace(
            num_features=num_features, upright=True, rootsift=True, device=device, descriptor_backend="pyramid"
        ).eval()
    return _FEATURES[key]


def _stretch_range(img: torch.Tensor, valid: torch.Tensor, max_samples: int = 100_000
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """1st and 99th percentiles of the valid pixels of an ``(H, W)`` image, from a regular subsample
    of about ``max_samples`` of them (None, None when fewer than 16 are valid)."""
    h, w = img.shape
    step = max(1, int(math.sqrt(h * w / (4 * max_samples))))
    v = img[::step, ::step][valid[::step, ::step]]
    if v.numel() < 16:
        return None, None
    sample = v[torch.linspace(0, v.numel() - 1, min(v.numel(), max_samples), device=v.device).long()]
    lo, hi = torch.quantile(sample.float(), torch.tensor([0.01, 0.99], device=v.device))
    return lo, hi


def _cut(x: torch.Tensor | HalfResolution, offsets: list[tuple[int, int]], size: int) -> torch.Tensor:
    """``(T, size, size)`` tiles of an ``(H, W)`` image at (row, col) offsets, zero-padded past the edges."""
    h, w = x.shape
    return torch.stack([F.pad(_window(x, range(r, min(r + size, h)), range(c, min(c + size, w))),
                              (0, max(0, c + size - w), 0, max(0, r + size - h))) for r, c in offsets])


def _window(x: torch.Tensor | HalfResolution, rows: range, cols: range) -> torch.Tensor:
    """``x`` at those rows and columns (a lazy image computes only them)."""
    if isinstance(x, HalfResolution):
        return x.at(rows, cols)
    return x[rows.start:rows.stop:rows.step, cols.start:cols.stop:cols.step]


def tile_offsets(ref_valid: torch.Tensor, mov_valid: torch.Tensor, tile_size: int,
                 max_tiles: int = 0) -> tuple[int, list[tuple[int, int]]]:
    """``(size, [(row, col), ...])``: the registration tiles, all of them or the ``max_tiles`` where
    both images have the most valid pixels (ties: the first in row order), in row order."""
    h, w = ref_valid.shape
    size = min(tile_size, max(h, w))
    nh, nw = math.ceil(h / size), math.ceil(w / size)
    offsets = [(i * size, j * size) for i in range(nh) for j in range(nw)]
    if max_tiles and len(offsets) > max_tiles:
        both = F.pad(ref_valid & mov_valid, (0, nw * size - w, 0, nh * size - h)).view(torch.uint8)
        # counted exactly as bytes: down each tile's columns (at most `size` each: int16 when it holds
        # them, a fast vectorised sum), then across them
        small = torch.int16 if size <= torch.iinfo(torch.int16).max else torch.int32
        columns = both.view(nh, size, nw * size).sum(1, dtype=small)
        score = columns.view(nh, nw, size).sum(2, dtype=torch.int64).flatten()
        pick = torch.argsort(-score, stable=True)[:max_tiles].sort().values
        offsets = [offsets[i] for i in pick.tolist()]
    return size, offsets


def match_keypoints(
    reference: torch.Tensor, moving: torch.Tensor, ref_valid: torch.Tensor, mov_valid: torch.Tensor,
    cfg: RegistrationConfig, mask_before_detection: bool, max_tiles: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SIFT matches between two images cut into non-overlapping tiles.

    Each image is stretched to [0, 1] between its 1st and 99th valid percentiles (invalid pixels 0);
    only the tiles used are cut and stretched.

    Args:
        reference, moving: ``(H, W)`` float images on one grid.
        ref_valid, mov_valid: ``(H, W)`` bool.
        max_tiles: use only that many tiles, those where both images have the most valid pixels
            (ties: the first in row order); 0: all.

    Returns:
        ``(p_ref (M, 2), p_mov (M, 2))`` matched positions (x, y) in pixels of the full images.
    """
    device = reference.device
    size, offsets = tile_offsets(ref_valid, mov_valid, cfg.tile_size, max_tiles)
    empty = torch.zeros((0, 2), device=device)
    stretched, masks = [], []
    for img, valid in ((reference, ref_valid), (moving, mov_valid)):
        lo, hi = _stretch_range(img, valid)
        if lo is None:
            return empty, empty
        m = _cut(valid, offsets, size).to(img.dtype)
        stretched.append(((_cut(img, offsets, size) - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1) * m)
        masks.append(m)
    tiles, masks = torch.stack(stretched, dim=1), torch.stack(masks, dim=1)  # T, 2, s, s
    t = tiles.shape[0]
    batch = tiles.transpose(0, 1).reshape(2 * t, 1, size, size)  # all reference tiles, then moving
    mask = masks.transpose(0, 1).reshape(2 * t, 1, size, size) if mask_before_detection else None
    sift = _sift(cfg.num_features, device)
    with torch.inference_mode():
        lafs, responses, descs = sift(batch, mask)
    centres = KF.get_laf_center(lafs)  # 2T, N, 2 (x, y)
    offset = torch.tensor([[c0, r0] for r0, c0 in offsets], device=device, dtype=centres.dtype)[:, None]  # T, 1, 2
    keep, nearest = match_smnn_batched(descs[:t], descs[t:], responses[:t] > 0, responses[t:] > 0, cfg.ratio)
    p_ref = centres[:t] + offset
    p_mov = centres[t:].gather(1, nearest[..., None].expand(-1, -1, 2)) + offset
    return p_ref[keep], p_mov[keep]


#: Distance-matrix elements computed at once by :func:`match_smnn_batched` (tiles are taken in chunks).
MATCH_CHUNK_ELEMENTS = 2**25


def match_smnn_batched(desc1: torch.Tensor, desc2: torch.Tensor, ok1: torch.Tensor, ok2: torch.Tensor,
                       th: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``kornia.feature.match_smnn``'s rule for T descriptor sets at once, without leaving the device.

    A pair (i, j) is kept when i and j are mutual nearest neighbours and pass Lowe's ratio test
    (nearest / second-nearest distance <= ``th``) both ways; a set with fewer than 2 descriptors on
    either side gives no match. Missing descriptors (padding) are excluded by ``ok1`` / ``ok2``.

    Args:
        desc1, desc2: ``(T, N, D)`` and ``(T, M, D)`` descriptors.
        ok1, ok2: ``(T, N)`` and ``(T, M)`` bool, which descriptors exist.
        th: ratio threshold.

    Returns:
        ``(keep (T, N) bool, nearest (T, N) long)``: descriptor i of set t matches
        ``nearest[t, i]`` of ``desc2[t]`` where ``keep[t, i]``.
    """
    t, n = desc1.shape[:2]
    m = desc2.shape[1]
    if n < 2 or m < 2:
        return torch.zeros((t, n), dtype=torch.bool, device=desc1.device), torch.zeros((t, n), dtype=torch.long,
                                                                                         device=desc1.device)
    chunk = max(1, MATCH_CHUNK_ELEMENTS // (n * m))
    keeps, nearests = [], []
    arange = torch.arange(n, device=desc1.device)
    for k in range(0, t, chunk):
        a, b, oa, ob = desc1[k:k + chunk], desc2[k:k + chunk], ok1[k:k + chunk], ok2[k:k + chunk]
        dm = torch.cdist(a, b).masked_fill(~oa[:, :, None] | ~ob[:, None, :], float("inf"))
        v1, i1 = dm.topk(2, dim=2, largest=False)  # nearest two in desc2 of each descriptor of desc1
        v2, i2 = dm.topk(2, dim=1, largest=False)  # and the reverse
        pass1 = oa & (v1[..., 0] / v1[..., 1] <= th)
        pass2 = ob & (v2[:, 0] / v2[:, 1] <= th)
        j = i1[..., 0]
        mutual = i2[:, 0].gather(1, j) == arange
        enough = ((oa.sum(1) >= 2) & (ob.sum(1) >= 2))[:, None]
        keeps.append(pass1 & mutual & pass2.gather(1, j) & enough)
        nearests.append(j)
    return torch.cat(keeps), torch.cat(nearests)


def _valid_at(valid: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    h, w = valid.shape
    col = p[:, 0].round().long()
    row = p[:, 1].round().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    out = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
    out[inside] = valid[row[inside], col[inside]]
    return out


#: A Gauss-Newton step longer than this (pixels) means the refinement diverged (no texture, a gain
#: near 0): it stops there; from a seed within a pixel the steps are sub-pixel.
DIVERGED_STEP_PX = 4.0


def refine_translation(
    reference: torch.Tensor, moving: torch.Tensor, ref_valid: torch.Tensor, mov_valid: torch.Tensor,
    shift_px: tuple[float, float], iterations: int = 15, tol_px: float = 1e-3, max_pixels: int = 400_000,
    min_points: int = 100, tukey_c: float = 4.685, kernel: str = "lanczos4", coarse_step: int = 2,
    coarse_tol_px: float = 0.02,
) -> tuple[tuple[float, float], int]:
    """Refine a translation by iteratively reweighted Gauss-Newton (Lucas-Kanade) over the overlap.

    Model: ``reference(p) = a * moving(p + d) + b``; unknowns d (2), gain a and offset b; Tukey
    weights on the residuals (scale from their MAD) reject what one image shows and the other does not.
    The points p are a regular subsample of at most ``max_pixels`` valid reference pixels; each step
    samples the moving image and its gradient there through ``kernel`` (the gradient being the
    interpolant's exact derivative; all points share the fraction of d, so the taps are applied
    separably to whole rows, :class:`~s2v_gpu.resample.GridSampler`) and solves the 4x4 weighted
    normal equations in float64 (the samples in the images' precision: float32 from the pipeline).

    Coarse to fine: the steps first use every ``coarse_step``-th of those points in each direction
    until a step is below ``coarse_tol_px``, then all of them until a step is below ``tol_px`` (the
    answer is the fine points' fixed point; the seed's first, long steps cost a quarter). ``iterations``
    bounds each stage; ``coarse_step`` 1: one stage.

    Args:
        reference, moving: ``(H, W)`` float32 images (``reference`` may be a
            :class:`~s2v_gpu.resample.HalfResolution`: only the points are computed).
        ref_valid, mov_valid: ``(H, W)`` bool.
        shift_px: starting translation (dx, dy).

    Returns:
        ``((dx, dy), points used in the last iteration)``.
    """
    h, w = reference.shape
    step = max(1, int(math.ceil(math.sqrt(h * w / max(1, max_pixels)))))
    d = torch.tensor(shift_px, dtype=torch.float64, device=reference.device)
    reach = int(math.ceil(max(map(abs, shift_px)))) + 2
    n_used = 0
    stages = ((step * coarse_step, coarse_tol_px),) if coarse_step > 1 else ()
    # every point moves by the same d: separable taps over the grid's rows (no per-point gather); the
    # stages share one padded copy of the image
    sampler = GridSampler(moving, mov_valid, range(0, h, step), range(0, w, step), kernel, reach)
    y_fine = _window(reference, range(0, h, step), range(0, w, step))  # the coarse points are among them
    for grid_step, tol in (*stages, (step, tol_px)):
        m = grid_step // step
        d, n_used = _gauss_newton(sampler.regrid(range(0, h, grid_step), range(0, w, grid_step)), y_fine[::m, ::m],
                                  ref_valid[::grid_step, ::grid_step], d, iterations, tol, min_points, tukey_c)
    return (float(d[0]), float(d[1])), n_used


def _gauss_newton(sampler: GridSampler, y_all: torch.Tensor, keep: torch.Tensor, d: torch.Tensor, iterations: int,
                  tol_px: float, min_points: int, tukey_c: float) -> tuple[torch.Tensor, int]:
    """:func:`refine_translation`'s steps on one grid of points (``y_all`` the reference there, ``keep``
    its validity): ``(d, points used in the last step)``; stops on a step below ``tol_px``, too few
    points, a singular system or a diverging step (that step not taken). The samples are the image's
    precision; the normal equations and the weights are float64."""
    n_used = 0
    for _ in range(iterations):
        value, gx, gy, ok = sampler((float(d[0]), float(d[1])))
        ok &= keep
        n_used = int(torch.count_nonzero(ok))  # (a bool .sum() is 10x slower on the CPU)
        if n_used < min_points:
            break
        # the points found once, each column gathered straight into the float64 system
        at = torch.nonzero(ok.flatten()).squeeze(1)
        A = torch.empty((n_used, 4), dtype=torch.float64, device=at.device)
        for j, x in enumerate((value, None, gx, gy)):
            A[:, j] = 1.0 if x is None else x.flatten()[at]
        theta = _tukey_solve(A, y_all.flatten()[at].double(), tukey_c)
        # reference ~ a*warped + b + a*grad.delta  ->  theta[2:] = a * delta
        delta = None if theta is None else theta[2:] / theta[0]
        if delta is None or not bool(delta.abs().max() <= DIVERGED_STEP_PX):  # degenerate, NaN or diverging
            break
        d = d + delta
        if float(delta.abs().max()) < tol_px:
            break
    return d, n_used


def _tukey_solve(A: torch.Tensor, y: torch.Tensor, tukey_c: float, rounds: int = 3) -> torch.Tensor | None:
    """Least squares ``A theta = y`` (``(N, 4)``, ``(N,)``) reweighted ``rounds`` times with Tukey's
    biweight (scale from the residuals' MAD); None when the system is singular (no texture left under
    the weights)."""
    wts = torch.ones_like(y)
    theta = None
    for round_ in range(rounds):
        if round_:  # the weights of the previous round's residuals (none after the last solve)
            r = y - A @ theta
            probe = r[:: max(1, r.numel() // 100_000)]
            scale = 1.4826 * (probe - probe.median()).abs().median().clamp_min(1e-9)
            u = r / (tukey_c * scale)
            wts = torch.where(u.abs() < 1, (1 - u**2) ** 2, torch.zeros_like(u))
        aw = A * wts[:, None]
        try:
            theta = torch.linalg.solve(aw.T @ A, aw.T @ y)
        except torch.linalg.LinAlgError:
            return None
    return theta


def register(
    reference: torch.Tensor,
    moving: torch.Tensor,
    ref_valid: torch.Tensor | None = None,
    mov_valid: torch.Tensor | None = None,
    pixel_size: float = 10.0,
    config: RegistrationConfig | None = None,
    kernel: str = "lanczos4",
) -> RegistrationResult:
    """Estimate the global translation of ``moving`` with respect to ``reference``.

    Both images must lie on the same pixel grid (same size, same geotransform up to the shift sought).

    Args:
        reference: ``(H, W)`` image (e.g. VENuS B3 downsampled to 10 m), or a
            :class:`~s2v_gpu.resample.HalfResolution` computing it only where it is read (the phase
            seed's tiles and the refinement's points; SIFT reads it whole).
        moving: ``(H, W)`` image (e.g. Sentinel-2 B2 at 10 m).
        ref_valid, mov_valid: ``(H, W)`` bool validity masks (None: all valid).
        pixel_size: pixel size in metres.
        config: :class:`RegistrationConfig` (mode, thresholds).
        kernel: the kernel that will resample ``moving`` (:data:`s2v_gpu.resample.KERNELS`): the
            refinement samples ``moving`` through it, so the shift it finds is the one it applies.

    Returns:
        A :class:`RegistrationResult`; ``ok`` is False (with a ``reason``) when there are fewer than
        ``min_matches`` matches or when they spread too much: the caller must not use such a shift.
    """
    cfg = config or RegistrationConfig()
    if cfg.mode not in tuple(RegistrationMode):
        raise ValueError(f"unknown registration mode {cfg.mode!r} (expected 'paper' or 'robust')")
    if not isinstance(reference, HalfResolution):
        check_shape(reference, 2, "reference")
        reference = reference.float()
    check_shape(moving, 2, "moving")
    if reference.shape != moving.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and moving {tuple(moving.shape)} differ in shape")
    ref_valid = torch.ones_like(moving, dtype=torch.bool) if ref_valid is None else ref_valid.bool()
    mov_valid = torch.ones_like(moving, dtype=torch.bool) if mov_valid is None else mov_valid.bool()
    moving = moving.float()

    robust = cfg.mode == "robust"
    if robust and cfg.refine and _seed_kind(cfg, moving.device) is RegistrationSeed.phase:
        result = phase_seed(reference, moving, ref_valid, mov_valid, pixel_size, cfg)
        if result is not None:
            _refine(result, reference, moving, ref_valid, mov_valid, pixel_size, cfg, kernel)
            return result
    p_ref, p_mov = match_keypoints(dense(reference), moving, ref_valid, mov_valid, cfg, mask_before_detection=robust,
                                   max_tiles=cfg.max_tiles if robust and cfg.refine else 0)
    keep = _valid_at(ref_valid, p_ref) & _valid_at(mov_valid, p_mov)
    result = estimate_from_matches((p_mov - p_ref)[keep], int(p_ref.shape[0]), int(keep.sum()), pixel_size, cfg)
    if result.ok and robust and cfg.refine:
        _refine(result, reference, moving, ref_valid, mov_valid, pixel_size, cfg, kernel)
    return result


def _seed_kind(cfg: RegistrationConfig, device: torch.device) -> RegistrationSeed:
    if cfg.seed == RegistrationSeed.auto:
        return RegistrationSeed.phase if device.type == "cpu" else RegistrationSeed.sift
    return RegistrationSeed(cfg.seed)


def phase_seed(reference, moving, ref_valid, mov_valid, pixel_size: float,
               cfg: RegistrationConfig) -> RegistrationResult | None:
    """The phase-correlation seed on the ``max_tiles`` most valid tiles: the mean of the tiles within
    ``inlier_px`` of their median, or None (fall back to SIFT) when too few strong tiles agree."""
    size, offsets = tile_offsets(ref_valid, mov_valid, cfg.tile_size, cfg.max_tiles)
    d, peak = phase_correlation(_cut(reference, offsets, size), _cut(moving, offsets, size),
                                _cut(ref_valid, offsets, size), _cut(mov_valid, offsets, size))
    # like the matches: beyond max_distance_m is no candidate (it is noise locking onto something)
    strong = d[(peak >= cfg.phase_min_peak) & (d.norm(dim=1) * pixel_size <= cfg.max_distance_m)]
    need = min(cfg.phase_min_tiles, len(offsets))
    if strong.shape[0] < need:
        log.info("phase seed: %d of %d tiles correlate (peaks %s); SIFT seeds instead", strong.shape[0],
                 len(offsets), [round(float(p), 3) for p in peak])
        return None
    median, spread_px, inliers = _median_and_inliers(strong, cfg.inlier_px)
    if inliers.shape[0] < need:
        log.info("phase seed: the tiles disagree (%s px); SIFT seeds instead", strong.tolist())
        return None
    est = inliers.mean(dim=0)
    return RegistrationResult(_to_m(est, pixel_size), (float(est[0]), float(est[1])), int(inliers.shape[0]),
                              len(offsets), _to_m(median, pixel_size), spread_px * pixel_size,
                              "robust-phase", sift_shift_m=(math.nan, math.nan),
                              extra={"seed": "phase", "peaks": [round(float(p), 4) for p in peak]})


def _median_and_inliers(disp: torch.Tensor, inlier_px: float) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Of displacements ``(N, 2)`` (matches or tiles): their component-wise lower median, their robust
    spread around it (1.4826 MAD of the distance, pixels) and those within ``inlier_px`` of it."""
    # lower median through a sort: torch.median with indices has no deterministic CUDA kernel
    median = disp.sort(dim=0).values[(disp.shape[0] - 1) // 2]
    dist = (disp - median).norm(dim=1)
    return median, float(1.4826 * dist.median()), disp[dist <= inlier_px]


def _to_m(v, pixel_size: float) -> tuple[float, float]:
    """Pixels (x right, y down) -> metres (x east, y north)."""
    return (float(v[0]) * pixel_size, -float(v[1]) * pixel_size)


def estimate_from_matches(disp: torch.Tensor, n_candidates: int, n_valid: int, pixel_size: float,
                          cfg: RegistrationConfig) -> RegistrationResult:
    """The shift from the displacements ``(N, 2)`` (pixels, x right, y down) of the matches on valid
    pixels: the plain mean within ``max_distance_m`` (paper) or the mean of those within
    ``inlier_px`` of their median (robust), with the checks that refuse a weak registration."""
    disp = disp[disp.norm(dim=1) * pixel_size <= cfg.max_distance_m]
    if disp.shape[0] == 0:
        nan = (math.nan, math.nan)
        return RegistrationResult(nan, nan, 0, n_candidates, nan, math.nan, cfg.mode, False,
                                  f"too few matches: none within {cfg.max_distance_m} m ({n_candidates} candidates)")
    median, spread_px, inliers = _median_and_inliers(disp, cfg.inlier_px)
    spread = spread_px * pixel_size
    inlier_fraction = inliers.shape[0] / max(1, n_valid)
    if cfg.mode == "paper":
        est, n_used = disp.mean(dim=0), int(disp.shape[0])
    else:
        est, n_used = (inliers.mean(dim=0) if inliers.shape[0] else median), int(inliers.shape[0])
    result = RegistrationResult(_to_m(est, pixel_size), (float(est[0]), float(est[1])), n_used, n_candidates,
                                _to_m(median, pixel_size), spread, str(cfg.mode), sift_shift_m=_to_m(est, pixel_size),
                                extra={"inlier_fraction": inlier_fraction})
    if n_used < cfg.min_matches:
        result.reason = f"too few matches: {n_used} < {cfg.min_matches} ({n_candidates} candidates)"
    elif spread > cfg.max_spread_m:
        result.reason = f"matches too spread: {spread:.1f} m > {cfg.max_spread_m} m"
    elif inlier_fraction < cfg.min_inlier_fraction:
        result.reason = (f"matches disagree: {inlier_fraction:.0%} within {cfg.inlier_px} px of their median "
                         f"(< {cfg.min_inlier_fraction:.0%}); the shift may exceed {cfg.max_distance_m} m")
    result.ok = not result.reason
    return result


def refine_configured(reference, moving, ref_valid, mov_valid, shift_px: tuple[float, float],
                      cfg: RegistrationConfig, kernel: str) -> tuple[tuple[float, float], int]:
    """:func:`refine_translation` with the settings of ``cfg`` (the registration's refinement; the
    benchmark's like-for-like reference runs the same one)."""
    return refine_translation(reference, moving, ref_valid, mov_valid, shift_px, cfg.refine_iterations,
                              max_pixels=cfg.refine_max_pixels, min_points=cfg.refine_min_points,
                              tukey_c=cfg.tukey_c, kernel=kernel, coarse_step=cfg.refine_coarse_step,
                              coarse_tol_px=cfg.refine_coarse_tol_px)


def _refine(result: RegistrationResult, reference, moving, ref_valid, mov_valid, pixel_size: float,
            cfg: RegistrationConfig, kernel: str) -> None:
    """Gauss-Newton refinement from the match estimate, kept unless it jumps (then it locked onto
    something else); a refined shift beyond ``max_distance_m`` refuses the pair."""
    start = result.shift_px
    refined, used = refine_configured(reference, moving, ref_valid, mov_valid, start, cfg, kernel)
    jump = math.hypot(refined[0] - start[0], refined[1] - start[1])
    if jump > cfg.refine_max_jump_px or used < cfg.refine_min_points:
        log.warning("refinement moved %.2f px from the match estimate; kept the match estimate", jump)
        return
    result.shift_px, result.shift_m = refined, _to_m(refined, pixel_size)
    result.mode, result.refine_pixels = f"{result.mode}+refined", used
    if math.hypot(*result.shift_m) > cfg.max_distance_m:
        result.ok = False
        result.reason = (f"refined shift {math.hypot(*result.shift_m):.1f} m exceeds max_distance_m "
                         f"{cfg.max_distance_m} m")
