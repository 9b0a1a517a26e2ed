"""Sub-pixel resampling (shift, reprojection, point samples with exact derivatives) and the bicubic 2x
downsampling used by registration.

Kernels (:data:`KERNELS`, chosen by ``pipeline.shift_kernel``): ``lanczos4`` (default: a windowed
sinc with 4 lobes, 8 taps, weights normalised to sum to 1), ``lanczos3``, ``keys`` (Keys cubic,
a = -0.5, GDAL's "cubic"), ``bicubic`` (a = -0.75, PyTorch's and OpenCV's). On real Sentinel-2 texture
their positional bias (the image moved by the kernel itself, against a quintic spline) peaks at
0.004, 0.011, 0.038 and 0.027 px (``scripts/shift_kernels.py``); ``bspline3`` (prefiltered cubic
B-spline, 0.009 px) is measured there but not offered: its prefilter spreads invalid pixels far.

Convention (pixel coordinates, x = column to the right, y = row downwards): a shift ``(dx, dy)`` of a
*moving* image with respect to a *reference* means a feature at pixel p of the reference appears at
p + (dx, dy) in the moving image. :func:`apply_shift` returns ``out(p) = moving(p + shift)``, i.e. the
moving image brought onto the reference. In metres (x east, y north): ``dx_m = dx * res``,
``dy_m = -dy * res``.
"""

from __future__ import annotations

import copy
import enum
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import check_shape
from .patches import take_patches


@dataclass(frozen=True)
class Kernel:
    """A separable interpolation kernel: the taps at ``offsets`` (relative to ``floor(position)``),
    their weights for a fraction ``t`` in [0, 1) (``weights(t) -> (taps, *t.shape)``) and the
    derivative of those weights with respect to t. ``prefilter``: a symmetric FIR (odd length) applied
    along each axis before sampling (the B-spline's coefficients), None for interpolating kernels."""

    offsets: tuple[int, ...]
    weights: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor]
    prefilter: tuple[float, ...] | None = None

    def spread(self, t: torch.Tensor, span: int) -> torch.Tensor:
        """``(span, *t.shape)`` contiguous: for positions ``t`` >= 0 past a window's start, the weight
        of window sample j (0 <= j < span), i.e. the kernel's taps placed at ``floor(t) + offset -
        offsets[0]`` (``floor(t) + len(offsets) <= span``). float32: read from a table of
        :data:`SPREAD_STEPS` fractions per whole part (the position rounded to 1/16384 px, unbiased; a
        fraction of the trigonometry's cost); other dtypes: exact."""
        whole = torch.floor(t)
        if t.dtype != torch.float32:
            w = self.weights(t - whole)  # (taps, *t.shape)
            out = torch.zeros((span,) + tuple(t.shape), dtype=t.dtype, device=t.device)
            taps = torch.arange(len(self.offsets), device=t.device).view((-1,) + (1,) * t.dim())
            return out.scatter_(0, whole.long()[None] + taps, w)
        row = whole.long() * (SPREAD_STEPS + 1) + ((t - whole) * SPREAD_STEPS).round().long()
        return _spread_table(self, span, t.device)[:, row]  # one gather per sample, samples first

    @property
    def reach(self) -> int:
        """Pixels on either side whose value can reach a sample (taps, then the prefilter's
        significant taps): the ring of validity lost around an invalid pixel."""
        return max(-self.offsets[0], self.offsets[-1]) + (len(self.prefilter) // 2 if self.prefilter else 0)


#: fractions per pixel tabulated by :meth:`Kernel.spread` for float32 positions
SPREAD_STEPS = 16384


@functools.lru_cache(maxsize=16)
def _spread_table(kernel: Kernel, span: int, device: torch.device) -> torch.Tensor:
    """``(span, (span - taps + 1) * (steps + 1))``: column ``whole * (steps + 1) + step`` holds the
    taps of the fraction ``step / steps`` placed from sample ``whole``."""
    taps = len(kernel.offsets)
    t = torch.arange(SPREAD_STEPS + 1, dtype=torch.float64) / SPREAD_STEPS
    w = kernel.weights(t).T  # (steps + 1, taps)
    table = torch.zeros(span - taps + 1, SPREAD_STEPS + 1, span, dtype=torch.float64)
    for whole in range(span - taps + 1):
        table[whole, :, whole:whole + taps] = w
    return table.reshape(-1, span).T.contiguous().to(device, torch.float32)


def sample_at(
    image: torch.Tensor, valid: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor, method: str = "lanczos4"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an image at fractional pixel positions.

    Args:
        image: ``(B, C, H, W)`` float.
        valid: ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        cols, rows: ``(h, w)`` positions (pixel index units: 0 is the centre of the first pixel),
            shared by the batch.
        method: a kernel of :data:`KERNELS` without prefilter (default ``lanczos4``), a sample being
            valid when all its taps are valid and inside the image; ``"grid_sample"``: PyTorch's
            bicubic ``grid_sample`` (a = -0.75), validity sampled with nearest from the invalid pixels
            dilated by 2.

    Returns:
        ``(samples (B, C, h, w), valid (B, 1, h, w) bool)``; invalid samples hold 0.
    """
    check_shape(image, 4, "image")
    if valid.dim() == 3:
        valid = valid[:, None]
    if method == "grid_sample":
        return _grid_sample(image, valid, cols, rows)
    kernel = _kernel(method)
    b, c, h, w = image.shape
    filled = torch.where(valid, image, torch.zeros((), device=image.device, dtype=image.dtype))
    c0, r0 = torch.floor(cols), torch.floor(rows)
    wx, wy = kernel.weights(cols - c0), kernel.weights(rows - r0)  # (taps, h, w) each
    c0, r0 = c0.long(), r0.long()
    out = torch.zeros((b, c) + tuple(cols.shape), device=image.device, dtype=image.dtype)
    ok = torch.ones((b, 1) + tuple(cols.shape), device=image.device, dtype=torch.bool)
    for j, oj in enumerate(kernel.offsets):
        rr = r0 + oj
        rin = (rr >= 0) & (rr < h)
        rr = rr.clamp(0, h - 1)
        for i, oi in enumerate(kernel.offsets):
            cc = c0 + oi
            inside = rin & (cc >= 0) & (cc < w)
            cc = cc.clamp(0, w - 1)
            out = out + (wy[j] * wx[i]).to(image.dtype) * filled[:, :, rr, cc]
            ok &= inside & valid[:, :, rr, cc]
    return out * ok, ok


def _grid_sample(image: torch.Tensor, valid: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor):
    b, _, h, w = image.shape
    filled = torch.where(valid, image, torch.zeros((), device=image.device, dtype=image.dtype))
    grid = torch.stack(((cols + 0.5) * (2.0 / w) - 1.0, (rows + 0.5) * (2.0 / h) - 1.0), dim=-1)
    grid = grid.to(image.dtype).expand(b, *cols.shape, 2)
    out = F.grid_sample(filled, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    # the bicubic support of a sample is the 4 nearest pixels along each axis: dilate the invalid
    # pixels by 2 and sample that with nearest
    invalid = F.max_pool2d((~valid).to(image.dtype), kernel_size=5, stride=1, padding=2)
    ok = F.grid_sample(1.0 - invalid, grid, mode="nearest", padding_mode="zeros", align_corners=False) > 0.5
    inside = (cols >= 1) & (cols <= w - 2) & (rows >= 1) & (rows <= h - 2)
    ok &= inside.to(ok.device)[None, None]
    return out * ok, ok


def _kernel(name: str) -> Kernel:
    kernel = KERNELS.get(str(name))
    if kernel is None or kernel.prefilter is not None:
        raise ValueError(f"unknown resampling kernel {name!r} (expected one of {', '.join(map(str, ShiftKernel))} "
                         "or 'grid_sample')")
    return kernel


def _keys(t: torch.Tensor, a: float = -0.5, derivative: bool = False) -> torch.Tensor:
    """Keys cubic weights of the taps at offsets -1, 0, 1, 2 for fractions t: ``(4, *t.shape)``.

    ``a = -0.5`` (Keys 1981) reproduces polynomials up to degree 2; PyTorch's and OpenCV's bicubic use
    ``a = -0.75``, which does not reproduce a linear ramp (0.04 px error at t = 0.3). With
    ``derivative`` the weights give the derivative of the interpolant with respect to t instead.
    """
    out = []
    for o in (-1, 0, 1, 2):
        u = t - o
        x = u.abs()
        if derivative:
            near = (3 * (a + 2) * x - 2 * (a + 3)) * x
            far = (3 * a * x - 10 * a) * x + 8 * a
            out.append(torch.sign(u) * torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x))))
        else:
            near = (a + 2) * x**3 - (a + 3) * x**2 + 1
            far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
            out.append(torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x))))
    return torch.stack(out)


def _lanczos(t: torch.Tensor, lobes: int, derivative: bool = False) -> torch.Tensor:
    """Lanczos weights of the taps at offsets ``1 - lobes .. lobes`` for fractions t, normalised to sum
    to 1 (so a constant stays constant); with ``derivative``, their exact derivative in t."""
    u = torch.stack([t - o for o in range(1 - lobes, lobes + 1)])
    safe = torch.where(u == 0, torch.ones_like(u), u)
    ps = math.pi * safe
    a = torch.sin(ps) / ps
    b = torch.sin(ps / lobes) / (ps / lobes)
    # exactly 1 and 0 at whole pixels (sin(pi k) is not exactly 0 in floating point): an integer shift
    # then uses one tap, as with every interpolating kernel
    raw = torch.where(u == torch.round(u), (u == 0).to(u.dtype), a * b)
    norm = raw.sum(0)
    if not derivative:
        return raw / norm
    # d/du [sinc(u) sinc(u/L)] = sinc'(u) sinc(u/L) + sinc(u) sinc'(u/L) / L, sinc'(x) = (cos(pi x) - sinc(x)) / x
    da = (torch.cos(ps) - a) / safe
    db = (torch.cos(ps / lobes) - b) / safe
    draw = torch.where(u == 0, torch.zeros_like(u), da * b + a * db)
    return (draw * norm - raw * draw.sum(0)) / norm**2


def _bspline3(t: torch.Tensor, derivative: bool = False) -> torch.Tensor:
    """Cubic B-spline weights of the taps at offsets -1, 0, 1, 2 (or their derivative in t)."""
    if derivative:
        return torch.stack([-0.5 * (1 - t) ** 2, 1.5 * t**2 - 2 * t, -1.5 * t**2 + t + 0.5, 0.5 * t**2])
    return torch.stack([(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
                        t**3 / 6])


def _bspline3_prefilter(half: int = 8) -> tuple[float, ...]:
    """The direct cubic B-spline transform as a symmetric FIR: ``sqrt(3) * z^|k|``, z = sqrt(3) - 2,
    truncated at ``|k| <= half`` (|z|^9 < 1.5e-5 of the centre tap) and renormalised to sum to 1."""
    z = math.sqrt(3) - 2
    taps = [math.sqrt(3) * z ** abs(k) for k in range(-half, half + 1)]
    total = sum(taps)
    return tuple(v / total for v in taps)


#: Interpolation kernels by name (the README gives the measured bias of each).
KERNELS: dict[str, Kernel] = {
    "keys": Kernel((-1, 0, 1, 2), lambda t: _keys(t, -0.5), lambda t: _keys(t, -0.5, derivative=True)),
    "bicubic": Kernel((-1, 0, 1, 2), lambda t: _keys(t, -0.75), lambda t: _keys(t, -0.75, derivative=True)),
    "lanczos3": Kernel(tuple(range(-2, 4)), lambda t: _lanczos(t, 3), lambda t: _lanczos(t, 3, derivative=True)),
    "lanczos4": Kernel(tuple(range(-3, 5)), lambda t: _lanczos(t, 4), lambda t: _lanczos(t, 4, derivative=True)),
    "bspline3": Kernel((-1, 0, 1, 2), _bspline3, lambda t: _bspline3(t, derivative=True), _bspline3_prefilter()),
}


class ShiftKernel(enum.StrEnum):
    """The kernels the pipeline resamples Sentinel-2 with (and the refinement samples it with)."""

    lanczos4 = "lanczos4"
    lanczos3 = "lanczos3"
    keys = "keys"
    bicubic = "bicubic"


def prefilter_axis(x: torch.Tensor, taps: tuple[float, ...], dim: int) -> torch.Tensor:
    """Symmetric FIR along ``dim`` with mirrored borders (same size)."""
    half = len(taps) // 2
    moved = x.movedim(dim, -1)
    shape = moved.shape
    flat = moved.reshape(-1, 1, shape[-1])
    flat = F.pad(flat, (half, half), mode="reflect" if shape[-1] > half else "replicate")
    w = torch.tensor(taps, dtype=x.dtype, device=x.device).view(1, 1, -1)
    return F.conv1d(flat, w).reshape(shape).movedim(-1, dim)


def shift_1d(x: torch.Tensor, d: float, dim: int, kernel: str = "keys") -> torch.Tensor:
    """``out(p) = x(p + d)`` along ``dim`` with a kernel of :data:`KERNELS`, zeros past the borders
    (no validity: a building block and the measuring tool of ``scripts/shift_kernels.py``)."""
    k = KERNELS[kernel]
    if k.prefilter is not None:
        x = prefilter_axis(x, k.prefilter, dim)
    out, _ = _shift_axis(x, torch.ones_like(x, dtype=torch.bool), d, dim, k)
    return out


def sample_points(image: torch.Tensor, valid: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor,
                  kernel: str = "lanczos4") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value and gradient of the interpolant of one image at scattered points (one gather of the
    kernel's taps).

    Args:
        image: ``(H, W)`` float.
        valid: ``(H, W)`` bool.
        cols, rows: ``(N,)`` positions (0 = centre of the first pixel).
        kernel: a kernel of :data:`KERNELS` without prefilter: the one that resamples the image
            afterwards, so that the shift estimated through it is the shift it applies.

    Returns:
        ``(value, d/dx, d/dy, ok)``, each ``(N,)``: the interpolant and its exact derivatives; ``ok``
        is True where all the taps are valid and inside (values elsewhere are meaningless).
    """
    k = _kernel(kernel)
    lo, hi = -k.offsets[0], k.offsets[-1]
    h, w = image.shape
    c0, r0 = torch.floor(cols), torch.floor(rows)
    tx, ty = cols - c0, rows - r0
    c0, r0 = c0.long(), r0.long()
    inside = (c0 >= lo) & (c0 <= w - 1 - hi) & (r0 >= lo) & (r0 <= h - 1 - hi)
    c0, r0 = c0.clamp(lo, w - 1 - hi), r0.clamp(lo, h - 1 - hi)
    offsets = torch.tensor(k.offsets, device=image.device)
    idx = (r0[None, None] + offsets[:, None, None]) * w + (c0[None, None] + offsets[None, :, None])  # taps², N
    ok = inside & valid.reshape(-1)[idx].flatten(0, 1).all(0)
    taps = image.reshape(-1)[idx].to(cols.dtype)  # rows j, columns i
    wx, wy = k.weights(tx), k.weights(ty)
    dwx, dwy = k.derivative(tx), k.derivative(ty)
    along_x = (taps * wx[None]).sum(1)  # taps (rows), N
    value = (along_x * wy).sum(0)
    dy = (along_x * dwy).sum(0)
    dx = ((taps * dwx[None]).sum(1) * wy).sum(0)
    return value, dx, dy, ok


def sample_grid(image: torch.Tensor, valid: torch.Tensor, rows: range, cols: range,
                shift: tuple[float, float], kernel: str = "lanczos4"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sample_points` at the points of a regular grid moved by one common ``shift`` (see
    :class:`GridSampler`, which keeps its padded image for several shifts)."""
    reach = max(abs(math.floor(shift[0])), abs(math.floor(shift[1])))
    return GridSampler(image, valid, rows, cols, kernel, reach)(shift)


class GridSampler:
    """The interpolant of one image and its exact derivatives at the points of a regular grid moved by
    a common shift, for shift after shift (the refinement's Gauss-Newton steps): every point has the
    same fraction, so the taps' weights are computed once per shift and applied separably to the
    grid's rows and columns, as strided slices of the image padded once.

    Args:
        image: ``(H, W)`` float32 or float64 (sampled in its precision: the weights of each pass in
            float64, the sums in the image's type).
        valid: ``(H, W)`` bool.
        rows, cols: the grid's integer pixel positions, ``range(start, stop, step)``.
        kernel: a kernel of :data:`KERNELS` without prefilter.
        reach_px: the largest whole shift expected (a larger one pads the image again).
    """

    def __init__(self, image: torch.Tensor, valid: torch.Tensor, rows: range, cols: range, kernel: str = "lanczos4",
                 reach_px: int = 8) -> None:
        self.k, self.rows, self.cols = _kernel(kernel), rows, cols
        self.image, self.valid = image, valid
        self.dtype = image.dtype if image.dtype == torch.float64 else torch.float32
        self._pad(reach_px)

    def regrid(self, rows: range, cols: range) -> GridSampler:
        """The same image on another grid, sharing the padded copy (no second padding)."""
        other = copy.copy(self)
        other.rows, other.cols, other._valid_cache = rows, cols, {}
        return other

    def _pad(self, reach_px: int) -> None:
        h, w = self.image.shape
        self.pad = p = max(-self.k.offsets[0], self.k.offsets[-1]) + reach_px + 1
        self.img = torch.zeros((h + 2 * p, w + 2 * p), dtype=self.dtype, device=self.image.device)
        self.img[p:p + h, p:p + w] = self.image
        self.ok = torch.zeros((h + 2 * p, w + 2 * p), dtype=torch.bool, device=self.image.device)
        self.ok[p:p + h, p:p + w] = self.valid
        self._valid_cache = {}

    def __call__(self, shift: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(value, d/dx, d/dy, ok)`` at ``(cols + dx, rows + dy)``, each ``(len(rows), len(cols))``;
        ``ok``: every tap valid and inside the image (values elsewhere are meaningless)."""
        k = self.k
        nx, ny = math.floor(shift[0]), math.floor(shift[1])
        if max(abs(nx), abs(ny)) + max(-k.offsets[0], k.offsets[-1]) + 1 > self.pad:
            self._pad(max(abs(nx), abs(ny)))
        t = torch.tensor([shift[0] - nx, shift[1] - ny], dtype=torch.float64)
        wx, wy, dwx, dwy = (v.tolist() for v in (k.weights(t[0]), k.weights(t[1]), k.derivative(t[0]),
                                                  k.derivative(t[1])))
        lines = [self._lines(self.img, 0, self.rows, self.pad + ny + o) for o in k.offsets]  # (R, W + 2 pad) views
        vert, dvert = _weighted_sums((wy, dwy), lines, SAMPLER_BLOCK_ROWS.get(self.img.device.type))
        columns = [self._lines(vert, 1, self.cols, self.pad + nx + o) for o in k.offsets]
        value, dx = _weighted_sum(wx, columns), _weighted_sum(dwx, columns)
        dy = _weighted_sum(wx, [self._lines(dvert, 1, self.cols, self.pad + nx + o) for o in k.offsets])
        return value, dx, dy, self._valid(nx, ny).clone()  # the caller may narrow it in place

    def _valid(self, nx: int, ny: int) -> torch.Tensor:
        """Every tap valid and inside, for a whole shift ``(nx, ny)`` (kept: the steps rarely change it)."""
        if (nx, ny) not in self._valid_cache:
            rows = _all_of([self._lines(self.ok, 0, self.rows, self.pad + ny + o) for o in self.k.offsets])
            self._valid_cache = {(nx, ny): _all_of([self._lines(rows, 1, self.cols, self.pad + nx + o)
                                                    for o in self.k.offsets])}
        return self._valid_cache[(nx, ny)]

    @staticmethod
    def _lines(x: torch.Tensor, dim: int, grid: range, offset: int) -> torch.Tensor:
        """The rows (``dim`` 0) or columns (1) ``offset + grid`` of ``x``, as a strided view."""
        start = offset + grid.start
        stop = start + (len(grid) - 1) * grid.step + 1
        return x[start:stop:grid.step] if dim == 0 else x[:, start:stop:grid.step]


def _all_of(masks: list[torch.Tensor]) -> torch.Tensor:
    """The AND of boolean views, accumulated in place (no stacked copy of them all)."""
    out = masks[0].clone()
    for m in masks[1:]:
        out.logical_and_(m)
    return out


#: rows of :class:`GridSampler`'s vertical pass summed at a time on the CPU (both sums of a block stay in
#: L2 while the taps' rows are read: the same arithmetic per output); elsewhere all at once
SAMPLER_BLOCK_ROWS = {"cpu": 64}


def _weighted_sums(weights: tuple[list[float], ...], views: list[torch.Tensor],
                   block_rows: int | None) -> list[torch.Tensor]:
    """:func:`_weighted_sum` of the same ``views`` (``(R, W)`` each) with several sets of weights, by
    blocks of ``block_rows`` rows (None: one block)."""
    step = block_rows or views[0].shape[0]
    if step >= views[0].shape[0]:
        return [_weighted_sum(w, views) for w in weights]
    outs = [torch.empty(views[0].shape, dtype=views[0].dtype, device=views[0].device) for _ in weights]
    for r0 in range(0, views[0].shape[0], step):
        block = [v[r0:r0 + step] for v in views]
        for out, w in zip(outs, weights):
            _weighted_sum(w, block, out[r0:r0 + step])
    return outs


def _weighted_sum(weights: list[float], views: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_j weights[j] * views[j]`` accumulated in place (one pass per term, no temporaries), into
    ``out`` when given."""
    out = torch.mul(views[0], weights[0], out=out)
    for w, v in zip(weights[1:], views[1:]):
        out.add_(v, alpha=w)
    return out


@functools.lru_cache(maxsize=64)
def _weighing_taps(d: float, kernel: Kernel) -> tuple[tuple[int, float], ...]:
    """``(offset, weight)`` of the taps that weigh in a shift by ``d``: the sample at ``p + d`` reads
    ``p + offset`` (the whole part of ``d`` included). Zero weights are left out: an integer shift
    reads one pixel, and only its validity counts (the values' and the validity's passes share this).
    Kept per shift: a pair's patches are moved window by window with the same two shifts."""
    n = math.floor(d)
    weights = kernel.weights(torch.tensor(d - n, dtype=torch.float64)).tolist()
    return tuple((n + o, w) for w, o in zip(weights, kernel.offsets) if w != 0.0)


def _shift_axis(x: torch.Tensor, ok: torch.Tensor, d: float, dim: int,
                kernel: Kernel | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """out(p) = x(p + d) along ``dim`` with the taps of ``kernel`` (default Keys); ok = every tap used
    valid and inside."""
    kernel = kernel or KERNELS["keys"]
    size = x.shape[dim]
    pad = abs(math.floor(d)) + max(-kernel.offsets[0], kernel.offsets[-1]) + 1
    pads = [0, 0] * (x.dim() - 1 - dim) + [pad, pad]
    xp = F.pad(x, pads)
    okp = F.pad(ok, pads)  # False outside
    taps = _weighing_taps(d, kernel)
    out = _weighted_sum([w for _, w in taps], [xp.narrow(dim, pad + t, size) for t, _ in taps])
    return out, _all_of([okp.narrow(dim, pad + t, size) for t, _ in taps])


def _shift_window(x: torch.Tensor, ok: torch.Tensor | None, d: float, dim: int, a: int, b: int,
                  kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """:func:`_shift_axis` for outputs ``a:b`` of ``dim`` only, when every tap they use is inside (no
    padding, the same arithmetic per output); None when a tap would fall outside. ``ok`` None: the
    validity is not moved (None returned for it)."""
    if not _taps_inside(x.shape[dim], d, a, b, kernel):
        return None
    taps = _weighing_taps(d, kernel)
    out = _weighted_sum([w for _, w in taps], [x.narrow(dim, a + t, b - a) for t, _ in taps])
    return out, None if ok is None else _all_of([ok.narrow(dim, a + t, b - a) for t, _ in taps])


def shift_window(image: torch.Tensor, valid: torch.Tensor, shift_px: tuple[float, float], method: str,
                 window: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``apply_shift(...)[..., r0:r1, c0:c1]`` for ``window = (r0, r1, c0, c1)``, computing only that
    window (and the rows its taps reach) when the taps stay inside the image: the same values, bit for
    bit, without padding or shifting the margins."""
    r0, r1, c0, c1 = window
    if valid.dim() == 3:
        valid = valid[:, None]
    kernel = None if method == "grid_sample" else _kernel(method)
    if kernel is not None and _window_taps_inside(image.shape, shift_px, window, kernel):
        return _shift_window_by_blocks(image, valid, shift_px, window, kernel)
    # taps outside the image (or grid_sample): shift everything, then crop
    x, ok = apply_shift(image, valid, shift_px, method)
    return x[..., r0:r1, c0:c1], ok[..., r0:r1, c0:c1]


def shift_window_valid(valid: torch.Tensor, shift_px: tuple[float, float], method: str,
                       window: tuple[int, int, int, int]) -> torch.Tensor:
    """``shift_window(...)[1]`` alone, ``(B, 1, r1 - r0, c1 - c0)`` bool, for ``valid`` ``(B, 1, H, W)``:
    a sample is valid when every tap of non-zero weight is (the same rule as the values' pass, so the
    same bits), without computing any value."""
    r0, r1, c0, c1 = window
    kernel = None if method == "grid_sample" else _kernel(method)
    if kernel is None or not _window_taps_inside(valid.shape[-2:], shift_px, window, kernel):
        image = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
        return shift_window(image, valid, shift_px, method, window)[1]
    tx, ty = ([t for t, _ in _weighing_taps(d, kernel)] for d in shift_px)
    rows = valid[..., r0 + ty[0]:r1 + ty[-1], :]
    across = _and_of(rows, -1, [c0 + t for t in tx], c1 - c0)
    return _and_of(across, -2, [t - ty[0] for t in ty], r1 - r0)


def _and_of(x: torch.Tensor, dim: int, starts: list[int], length: int) -> torch.Tensor:
    return _all_of([x.narrow(dim, start, length) for start in starts])


def shift_patches(image: torch.Tensor, valid: torch.Tensor, shift_px: tuple[float, float], method: str,
                  origin: tuple[int, int], size: int, ids: torch.Tensor, grid_width: int,
                  divisor: float | None = None, valid_taps: bool = False) -> torch.Tensor:
    """Some patches of a shifted window: ``take_patches(shift_window(image[None], valid[None],
    shift_px, method, window)[0][0], size, ids)`` for the window of ``grid_width`` columns at ``origin``
    (row, column), computing only those patches, run by run of neighbours in a row (the same
    arithmetic per output, so the same bits). Patches are numbered row by row on that window.

    Args:
        image: ``(C, H, W)`` float; ``valid`` ``(H, W)`` bool.
        ids: ``(N,)`` patch numbers (any order; neighbours in increasing order share a run).
        divisor: ``image`` holds stored integers and the values moved are ``image / divisor`` (see
            :func:`scaled_values`), converted only where the patches' taps read them.
        valid_taps: the caller guarantees that every sample of these patches reads valid pixels only
            (it chose them with :func:`shift_window_valid`, as the pipeline's candidates): the
            validity is then not moved again and nothing is zeroed, by runs (the same bits: an
            invalid pixel is read by no tap that weighs).

    Returns:
        ``(N, C, size, size)``; invalid samples hold 0, as :func:`shift_window`'s.
    """
    (row0, col0), per_row = origin, grid_width // size
    rows, cols = (ids // per_row).tolist(), (ids % per_row).tolist()
    runs = _runs(rows, cols)
    windows = [(row0 + rows[a] * size, row0 + (rows[a] + 1) * size, col0 + cols[a] * size, col0 + (cols[b] + 1) * size)
               for a, b in runs]
    kernel = None if method == "grid_sample" else _kernel(method)
    dtype = torch.float32 if divisor else None  # stored integers come out as float32 reflectance
    if (image.device.type not in SHIFT_PATCHES_BY_RUNS or kernel is None
            or not all(_window_taps_inside(image.shape, shift_px, w, kernel) for w in windows)):
        # the rows that hold the patches, whole, then cut (the taps leave the image, grid_sample, or a
        # device where a few large launches cost less than many small ones)
        if not runs:
            return image.new_zeros((0, image.shape[0], size, size), dtype=dtype)
        image = image if divisor is None else scaled_values(image, valid, divisor)
        first, last = min(rows), max(rows)
        top, bottom = row0 + first * size, row0 + (last + 1) * size
        whole = shift_window(image[None], valid[None], shift_px, method, (top, bottom, col0, col0 + per_row * size))
        return take_patches(whole[0][0], size, ids - first * per_row)
    out = []
    for (a, b), window in zip(runs, windows):
        value = _shift_window_by_blocks(image[None], valid[None, None], shift_px, window, kernel, divisor,
                                        valid_taps)[0][0]
        out.append(value.unflatten(-1, (b - a + 1, size)).permute(2, 0, 1, 3))
    return torch.cat(out) if out else image.new_zeros((0, image.shape[0], size, size), dtype=dtype)


def scaled_values(values: torch.Tensor, valid: torch.Tensor, divisor: float) -> torch.Tensor:
    """Stored integers ``values`` -> float32 ``values / divisor``, 0 where ``valid`` (broadcast) is False:
    per element the arithmetic of :meth:`~s2v_gpu.products.BandStack.channels` (so the same bits,
    whether a whole stack or a block of it is converted)."""
    return values.to(torch.float32, copy=True).div_(divisor).mul_(valid)


#: devices on which :func:`shift_patches` moves only the patches, run by run (on a GPU the whole rows
#: that hold them cost a few kernel launches instead of many)
SHIFT_PATCHES_BY_RUNS = {"cpu"}


def _runs(rows: list[int], cols: list[int]) -> list[tuple[int, int]]:
    """``(first, last)`` indices of the runs of neighbouring patches in one row."""
    runs, first = [], 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[first] or cols[k] != cols[k - 1] + 1:
            runs.append((first, k - 1))
            first = k
    return runs


def _window_taps_inside(shape, shift_px: tuple[float, float], window: tuple[int, int, int, int],
                        kernel: Kernel) -> bool:
    r0, r1, c0, c1 = window
    return _taps_inside(shape[-2], shift_px[1], r0, r1, kernel) and _taps_inside(shape[-1], shift_px[0], c0, c1,
                                                                                   kernel)


#: output pixels (per channel) shifted at a time by :func:`shift_window` on the CPU, as blocks of whole
#: rows of the window: the taps' passes stay in cache (every output is the same arithmetic whatever
#: the block); elsewhere the window in one block
SHIFT_BLOCK_PIXELS = {"cpu": 32 * 2816}


def _taps_inside(size: int, d: float, a: int, b: int, kernel: Kernel) -> bool:
    n = int(math.floor(d))
    return a + n + kernel.offsets[0] >= 0 and b + n + kernel.offsets[-1] <= size - 1


def _shift_window_by_blocks(image: torch.Tensor, valid: torch.Tensor, shift_px: tuple[float, float],
                            window: tuple[int, int, int, int], kernel: Kernel, divisor: float | None = None,
                            valid_taps: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`shift_window` when every tap is inside, by blocks of output rows (each block reads the
    rows its taps reach; ``divisor``: ``image`` holds stored integers, converted block by block with
    :func:`scaled_values`; ``valid_taps``: see :func:`shift_patches`, the validity returned is None)."""
    r0, r1, c0, c1 = window
    per_block = SHIFT_BLOCK_PIXELS.get(image.device.type)
    step = r1 - r0 if per_block is None else max(1, per_block // (c1 - c0))
    nx, ny = int(math.floor(shift_px[0])), int(math.floor(shift_px[1]))
    first_tap, last_tap = kernel.offsets[0], kernel.offsets[-1]
    cols = slice(c0 + nx + first_tap, c1 + nx + last_tap + 1)  # the columns the window's taps reach
    dtype = torch.float32 if divisor else image.dtype
    zero = torch.zeros((), device=image.device, dtype=dtype)
    out = torch.empty(image.shape[:-2] + (r1 - r0, c1 - c0), device=image.device, dtype=dtype)
    ok = None if valid_taps else torch.empty(valid.shape[:-2] + (r1 - r0, c1 - c0), device=image.device,
                                             dtype=torch.bool)
    for b0 in range(r0, r1, step):
        b1 = min(r1, b0 + step)
        rows = slice(b0 + ny + first_tap, b1 + ny + last_tap + 1)
        x = image[..., rows, cols]
        x = x if divisor is None else x.to(dtype, copy=True).div_(divisor)
        block_ok = None if valid_taps else valid[..., rows, cols]
        if block_ok is not None:
            x = torch.where(block_ok, x, zero)
        first = _shift_window(x, block_ok, float(shift_px[0]), 3, c0 - cols.start, c1 - cols.start, kernel)
        value, good = _shift_window(*first, float(shift_px[1]), 2, b0 - rows.start, b1 - rows.start, kernel)
        if valid_taps:
            out[..., b0 - r0:b1 - r0, :] = value
            continue
        out[..., b0 - r0:b1 - r0, :] = value * good
        ok[..., b0 - r0:b1 - r0, :] = good
    return out, ok


def apply_shift(
    image: torch.Tensor, valid: torch.Tensor, shift_px: tuple[float, float], method: str = "lanczos4"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an image at ``p + shift``, i.e. bring a moving image onto its reference.

    Args:
        image: ``(B, C, H, W)`` float.
        valid: ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        shift_px: (dx, dy) in pixels (see the module convention).
        method: a kernel of :data:`KERNELS` without prefilter, applied separably (default
            ``lanczos4``); all are exact for integer shifts; a sample is valid when every tap it uses
            is valid and inside. ``"grid_sample"``: PyTorch's bicubic ``grid_sample`` (a = -0.75)
            through :func:`sample_at`.

    Returns:
        ``(shifted (B, C, H, W), valid (B, 1, H, W) bool)``; invalid samples hold 0.
    """
    check_shape(image, 4, "image")
    if valid.dim() == 3:
        valid = valid[:, None]
    if method == "grid_sample":
        h, w = image.shape[-2:]
        dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        rows = torch.arange(h, device=image.device, dtype=dtype) + shift_px[1]
        cols = torch.arange(w, device=image.device, dtype=dtype) + shift_px[0]
        rr, cc = torch.meshgrid(rows, cols, indexing="ij")
        return sample_at(image, valid, cc, rr, method="grid_sample")
    kernel = _kernel(method)
    x = torch.where(valid, image, torch.zeros((), device=image.device, dtype=image.dtype))
    x, ok = _shift_axis(x, valid, float(shift_px[0]), dim=3, kernel=kernel)
    x, ok = _shift_axis(x, ok, float(shift_px[1]), dim=2, kernel=kernel)
    return x * ok, ok


def downsample_bicubic_x2(image: torch.Tensor) -> torch.Tensor:
    """Halve the resolution with an antialiased bicubic kernel, sampling the centre of each 2x2 block.

    Args:
        image: ``(B, C, H, W)`` with even H and W.

    Returns:
        ``(B, C, H/2, W/2)``: output pixel i sits at input coordinate 2i + 0.5, the centre of the
        block it covers (no half-pixel offset between the 5 m and 10 m grids).
    """
    check_shape(image, 4, "image")
    return F.interpolate(image, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)


#: :func:`downsample_bicubic_x2`'s kernel: antialiased bicubic (a = -0.5) stretched x2, 8 taps.
_X2_TAPS = 8


def _bicubic_aa(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_x2_weights(index: torch.Tensor, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The taps of :func:`downsample_bicubic_x2` along one axis for output pixels ``index`` ``(K,)``:
    ``(inputs (K, 8) long, weights (K, 8) float64)``; output i reads inputs 2i - 3 .. 2i + 4 (its centre
    2i + 1 on pixel centres at j + 0.5), the weights normalised to 1 over the inputs inside the image
    (PyTorch's antialiased kernel; the inputs outside are clamped and weigh 0)."""
    j = 2 * index[:, None] - 3 + torch.arange(_X2_TAPS, device=index.device)
    w = _bicubic_aa((j.double() - 2 * index[:, None].double() - 0.5) / 2)
    w = torch.where((j >= 0) & (j < n_in), w, torch.zeros_like(w))
    return j.clamp(0, n_in - 1), w / w.sum(1, keepdim=True)


class HalfResolution:
    """The image :func:`downsample_bicubic_x2` makes of ``values / divisor`` where ``valid`` (0
    elsewhere), computed only where it is read: the registration reads its 10 m reference on a few
    tiles and on a sparse grid of points, not on the whole site (the whole image costs 4 passes over
    the 5 m band; these points a tenth of one).

    Args:
        values: ``(H, W)`` (e.g. the stored int16 of one VENuS band); ``valid`` ``(H, W)`` bool. The
            image is ``(H // 2, W // 2)``, as :func:`downsample_bicubic_x2` makes it (odd sizes too).
        divisor: reflectance = values / divisor.
    """

    def __init__(self, values: torch.Tensor, valid: torch.Tensor, divisor: float = 1.0) -> None:
        check_shape(values, 2, "values")
        self.values, self.valid, self.divisor = values, valid, float(divisor)
        self.shape = torch.Size((values.shape[0] // 2, values.shape[1] // 2))
        self.device = values.device
        self._full: torch.Tensor | None = None

    def full(self) -> torch.Tensor:
        """The whole ``(H // 2, W // 2)`` image, float32 (float64 for float64 values), computed once."""
        if self._full is None:
            dtype = torch.promote_types(self.values.dtype, torch.float32)
            masked = torch.mul(self.values, self.valid, out=torch.empty(self.values.shape, dtype=dtype,
                                                                         device=self.device))
            self._full = downsample_bicubic_x2(masked.div_(self.divisor)[None, None])[0, 0]
        return self._full

    def at(self, rows: range, cols: range) -> torch.Tensor:
        """``(len(rows), len(cols))`` float32 (float64 for float64 values): the image's pixels at those
        rows and columns (the whole image's to float rounding), separably: the 8 input rows of each
        output row, over the input columns the output columns read, then the 8 columns of each."""
        if self._full is not None:
            return self._full[rows.start:rows.stop:rows.step, cols.start:cols.stop:cols.step]
        h, w = self.values.shape
        r_in, r_w = bicubic_x2_weights(torch.tensor(rows, device=self.device), h)
        c_in, c_w = bicubic_x2_weights(torch.tensor(cols, device=self.device), w)
        c0, c1 = int(c_in.min()), int(c_in.max()) + 1
        dtype = torch.promote_types(self.values.dtype, torch.float32)
        lines = torch.zeros((len(rows), c1 - c0), dtype=dtype, device=self.device)
        # rows whose 8 inputs lie inside the image: each tap a strided view; the few others gathered
        inner = [i for i, r in enumerate(rows) if 2 * r - 3 >= 0 and 2 * r + 4 < h]
        i0, i1 = (inner[0], inner[-1] + 1) if inner else (0, 0)
        band = torch.empty((i1 - i0, c1 - c0), dtype=dtype, device=self.device)  # one tap's masked rows
        for k in range(_X2_TAPS):
            if inner:
                first = 2 * rows[i0] - 3 + k
                pick = slice(first, first + 2 * rows.step * (i1 - i0 - 1) + 1, 2 * rows.step)
                torch.mul(self.values[pick, c0:c1], self.valid[pick, c0:c1], out=band)
                lines[i0:i1].addcmul_(band, r_w[i0:i1, k, None].to(dtype))
            for i in (*range(i0), *range(i1, len(rows))):
                j = int(r_in[i, k])
                lines[i].add_(self.values[j, c0:c1] * self.valid[j, c0:c1], alpha=float(r_w[i, k]))
        out = torch.zeros((len(rows), len(cols)), dtype=dtype, device=self.device)
        for k in range(_X2_TAPS):
            out.addcmul_(lines[:, c_in[:, k] - c0], c_w[None, :, k].to(dtype))
        return out.div_(self.divisor)


def dense(image: torch.Tensor | HalfResolution) -> torch.Tensor:
    """The whole image of a lazy :class:`HalfResolution`; a tensor as it is."""
    return image.full() if isinstance(image, HalfResolution) else image
