"""MTF-matched Gaussian downsampling of 5 m VENuS bands to the 10 m / 20 m Sentinel-2 grids.

Each band is blurred with the Gaussian whose MTF at the Sentinel-2 band's Nyquist frequency equals
that band's MTF (sigma = res / pi * sqrt(-2 ln MTF), CESBIO's sensorsio formula, res being the
Sentinel-2 band's resolution) and decimated. The decimated samples sit at the centre of each
factor x factor block of 5 m pixels: the kernel has even length and is evaluated at half-integer
offsets, so no half-pixel shift is introduced (the "half-pixel trap" of a symmetric odd kernel
followed by ``[::2]`` would put the samples 0.25 px off; a test checks the centring).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .bands import S2_MTF, mtf_sigma_m
from .errors import check_shape
from .patches import channel_runs, patch_corners

#: Input rows per strip of the masked blur: small strips stay in the CPU caches, large ones keep a GPU
#: busy; either way the working memory is bounded whatever the site size.
STRIP_ROWS = {"cpu": 128, "cuda": 2048}


def centred_gaussian_kernel(sigma_px: float, factor: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """1-D Gaussian sampled at the offsets of the input pixels around a block centre.

    For ``factor`` 2 the block centre lies between two input pixels, so the taps sit at +-0.5, +-1.5...
    (an even-length kernel). Length ``2 * (ceil(4 sigma) + factor // 2)`` is enough to hold 4 sigma.

    Returns:
        ``(K,)`` normalised taps.
    """
    half = int(math.ceil(4.0 * sigma_px)) + factor // 2
    # input pixel offsets relative to the block centre for a block starting at 0: centre at (factor-1)/2
    t = torch.arange(-half + 1, half + 1, device=device, dtype=torch.float64) - 0.5 if factor % 2 == 0 else \
        torch.arange(-half, half + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    return (k / k.sum()).to(dtype)


def band_sigmas_px(s2_bands: tuple[str, ...] | list[str], s2_resolution_m: float, venus_res_m: float = 5.0,
                   mtf: dict[str, float] | None = None) -> list[float]:
    """Gaussian sigma, in VENuS pixels, of each Sentinel-2 band's MTF."""
    mtf = mtf or S2_MTF
    return [mtf_sigma_m(mtf[b], s2_resolution_m) / venus_res_m for b in s2_bands]


def mtf_downsample(
    image: torch.Tensor, sigmas_px: list[float], factor: int, valid: torch.Tensor | None = None,
    channels: list[int] | None = None,
) -> torch.Tensor:
    """Blur each channel with its own Gaussian and decimate by ``factor``, on the image's device.

    Separable convolution (a horizontal then a vertical depthwise conv2d, each with stride
    ``factor``, so only the kept samples are computed).

    Without a validity mask the borders are padded by reflection. With a mask the convolution is
    normalised, ``blur(x * valid) / blur(valid)``: invalid pixels (clouds, no-data) and the outside of
    the image do not drag their valid neighbours towards zero, fully valid neighbourhoods give exactly
    the plain Gaussian, and outputs near an invalid area or the border are the Gaussian-weighted mean
    of the valid pixels under the kernel. That path runs image and mask through one convolution in
    ``channels_last`` layout (the fast depthwise kernels of oneDNN / cuDNN), by strips of rows.

    Args:
        image: ``(B, C, H, W)``, H and W multiples of ``factor``; integers are blurred as float32.
        sigmas_px: one sigma per channel, in input pixels.
        factor: decimation factor (2 for 5 m -> 10 m, 4 for 5 m -> 20 m).
        valid: optional ``(B, 1, H, W)`` or ``(B, H, W)`` bool.
        channels: blur only these channels of ``image`` (one sigma each), without copying them out first.

    Returns:
        ``(B, C, H / factor, W / factor)``; output pixel i is centred on input block
        ``[i * factor, (i + 1) * factor)``. Outputs with no valid input under the kernel are 0.
    """
    check_shape(image, 4, "image")
    _, _, h, w = image.shape
    channels = list(range(image.shape[1])) if channels is None else list(channels)
    if len(sigmas_px) != len(channels):
        raise ValueError(f"{len(sigmas_px)} sigmas given for {len(channels)} channels")
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not a multiple of the factor {factor}")
    dtype = image.dtype if image.is_floating_point() else torch.float32  # integer DN: blurred as float32
    taps, pad, extra = _taps(sigmas_px, factor, image.device, dtype)
    if valid is None:
        c, size = taps.shape
        x = F.pad(image[:, channels].to(dtype), (pad, pad + extra, 0, 0), mode="reflect")
        x = F.conv2d(x, taps.view(c, 1, 1, size), stride=(1, factor), groups=c)
        x = F.pad(x, (0, 0, pad, pad + extra), mode="reflect")
        return F.conv2d(x, taps.view(c, 1, size, 1), stride=(factor, 1), groups=c)
    return _masked_blur(image, channels, valid[:, None] if valid.dim() == 3 else valid, taps, factor, pad, extra)


def _taps(sigmas_px: list[float], factor: int, device, dtype) -> tuple[torch.Tensor, int, int]:
    """``(C, size)`` kernels padded to one length, the left pad and the extra right column."""
    kernels = [centred_gaussian_kernel(s, factor, device=device, dtype=dtype) for s in sigmas_px]
    size = max(k.numel() for k in kernels)
    # pad every kernel to the same length (zeros at both ends keep it centred: lengths are all even
    # or all odd for one factor)
    taps = torch.stack([F.pad(k, ((size - k.numel()) // 2, (size - k.numel()) // 2)) for k in kernels])
    # a block starting at input i*factor has its centre at i*factor + (factor-1)/2; tap j multiplies
    # input i*factor + (factor-1)/2 + t_j, so the left pad is (size - factor) / 2
    return taps, (size - factor) // 2, (size - factor) % 2


def _masked_blur(image: torch.Tensor, channels: list[int], valid: torch.Tensor, taps: torch.Tensor, factor: int,
                 pad: int, extra: int) -> torch.Tensor:
    """``blur(x * valid) / blur(valid)`` by horizontal strips of output rows, in ``channels_last``
    (the fast depthwise kernels of oneDNN / cuDNN). Inside the image the blurred mask is that of a
    fully valid strip except in the output columns whose kernels reach an invalid pixel: only those
    runs of columns blur the mask; strips past the image's top or bottom blur image and mask together."""
    b, _, h, w = image.shape
    c, size = taps.shape
    dtype, device = taps.dtype, image.device
    h_out = h // factor
    out = torch.empty((b, c, h_out, w // factor), device=device, dtype=dtype)
    zero = torch.zeros((), dtype=dtype, device=device)
    # each strip holds the input rows its kernels reach (zeros past the image, i.e. invalid); the
    # strip buffers are reused, so memory stays bounded on any site size
    step = max(1, STRIP_ROWS.get(device.type, STRIP_ROWS["cpu"]) // factor)
    rows = step * factor + 2 * pad + extra
    blur = _StripBlur(torch.cat([taps, taps]), factor, pad, extra)
    # channels 0..C-1: the masked image; C..2C-1: the mask, blurred with each channel's kernel
    z = {n: torch.empty((b, n * c, rows, w), device=device, dtype=dtype, memory_format=torch.channels_last)
         for n in (1, 2)}
    full_den = None  # the blurred mask of a fully valid strip inside the image
    for o0 in range(0, h_out, step):
        o1 = min(h_out, o0 + step)
        r0, r1 = o0 * factor - pad, o1 * factor + pad + extra
        a0, a1 = max(r0, 0), min(r1, h)
        vs = valid[:, :, a0:a1]
        inside = (a0, a1, o1 - o0) == (r0, r1, step)
        n = 1 if inside else 2
        zs = z[n][:, :, : r1 - r0]
        zs[:, :, : a0 - r0] = 0
        zs[:, :, a1 - r0:] = 0
        for k, i in enumerate(channels):
            torch.mul(image[:, i, a0:a1], vs[:, 0], out=zs[:, k, a0 - r0:a1 - r0])
        if n == 2:
            zs[:, c:, a0 - r0:a1 - r0] = vs
        y = blur(zs, n)
        if n == 2:
            out[:, :, o0:o1] = _normalised(y[:, :c], y[:, c:], zero)
            continue
        if full_den is None:
            full_den = blur.ones(zs)
            full_den_positive = bool((full_den > 1e-6).all())
        if full_den_positive:  # the same quotient as below, without the tests that cannot fire
            torch.div(y, full_den, out=out[:, :, o0:o1])
        else:
            out[:, :, o0:o1] = _normalised(y, full_den, zero)
        for lo, hi, den in blur.mask_runs(vs, c):
            out[:, :, o0:o1, lo:hi] = _normalised(y[..., lo:hi], den, zero)
    return out


def _normalised(num: torch.Tensor, den: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``num / den`` where the blurred mask ``den`` is not 0, else 0."""
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), zero)


class _StripBlur:
    """The separable strided blur of :func:`_masked_blur`'s strips, ``both`` ``(2C, size)`` the taps
    twice (image channels, then mask channels)."""

    def __init__(self, both: torch.Tensor, factor: int, pad: int, extra: int) -> None:
        self.both, self.factor, self.pad, self.extra = both, factor, pad, extra
        self.size = both.shape[1]

    def __call__(self, x: torch.Tensor, n: int, padding: bool = True) -> torch.Tensor:
        """``(B, n C, rows, W)`` -> ``(B, n C, rows_out, W / factor)``; ``padding``: zeros past the
        image's left and right (else ``x`` holds every column the kernels reach)."""
        taps, size = self.both[: x.shape[1]], self.size
        if padding and self.extra:
            x = F.pad(x, (0, self.extra))  # an odd factor with an even kernel: one more column
        x = F.conv2d(x, taps.view(-1, 1, 1, size), stride=(1, self.factor), padding=(0, self.pad if padding else 0),
                     groups=x.shape[1])
        return F.conv2d(x, taps.view(-1, 1, size, 1), stride=(self.factor, 1), groups=x.shape[1])

    def ones(self, like: torch.Tensor) -> torch.Tensor:
        """The blurred mask of a fully valid strip shaped as ``like`` (zeros past the left and right)."""
        return self(torch.ones_like(like), 1)

    def mask_runs(self, vs: torch.Tensor, c: int) -> list[tuple[int, int, torch.Tensor]]:
        """The blurred mask of a strip inside the image whose validity is ``vs`` ``(B, 1, rows, W)``
        where it differs from a fully valid strip's: ``(lo, hi, den (B, C, step, hi - lo))`` for each
        run of output columns whose kernels reach an invalid pixel, blurred from the columns it reads."""
        f, pad, size = self.factor, self.pad, self.size
        w, w_out = vs.shape[-1], vs.shape[-1] // f
        bad = (~vs).any(2).any(0, keepdim=True).to(self.both.dtype)  # (1, 1, W): a column with an invalid pixel
        # output o reads input columns o f - pad .. o f - pad + size - 1 (past the image: as a full strip)
        hit = F.max_pool1d(F.pad(bad, (pad, pad + self.extra)), size, stride=f)[0, 0, :w_out] > 0
        if not bool(hit.any()):
            return []
        edges = torch.diff(F.pad(hit.to(torch.int8), (1, 1))).nonzero().flatten().tolist()
        runs = []
        for lo, hi in zip(edges[0::2], edges[1::2]):
            c0, c1 = lo * f - pad, (hi - 1) * f - pad + size  # the input columns the run's kernels read
            m = vs[:, :, :, max(c0, 0):min(c1, w)].to(self.both.dtype)
            m = F.pad(m, (max(0, -c0), max(0, c1 - w))).expand(-1, c, -1, -1)
            runs.append((lo, hi, self(m.contiguous(memory_format=torch.channels_last), 1, padding=False)))
        return runs


#: patches blurred together by :func:`mtf_downsample_patches` (bounds the windows' memory)
PATCH_CHUNK = 32


def mtf_downsample_patches(image: torch.Tensor, valid: torch.Tensor, sigmas_px: list[float], factor: int,
                           ids: torch.Tensor, size: int, channels: list[int] | None = None) -> torch.Tensor:
    """:func:`mtf_downsample` with a mask, cut into some patches, computing only them: each patch's
    window (the input pixels its kernels reach, zeros and invalid past the image) is blurred alone,
    with the same taps in the same order, so the patches are the whole image's bit for bit.

    Args:
        image: ``(1, C, H, W)``; ``valid`` ``(1, 1, H, W)`` or ``(1, H, W)`` bool.
        ids: ``(N,)`` patch numbers of the row-major grid of ``size``-pixel patches (``size`` a
            multiple of ``factor``).
        sigmas_px, factor, channels: as :func:`mtf_downsample`.

    Returns:
        ``(N, C', size / factor, size / factor)``.
    """
    check_shape(image, 4, "image")
    if image.shape[0] != 1 or size % factor:
        raise ValueError(f"one image and a patch size ({size}) that is a multiple of the factor ({factor}) expected")
    channels = list(range(image.shape[1])) if channels is None else list(channels)
    dtype = image.dtype if image.is_floating_point() else torch.float32
    taps, pad, extra = _taps(sigmas_px, factor, image.device, dtype)
    blur = _StripBlur(torch.cat([taps, taps]), factor, pad, extra)
    valid = (valid[:, None] if valid.dim() == 3 else valid)[0, 0]
    span = size + 2 * pad + extra
    full_den = blur(torch.ones((1, len(channels), span, span), device=image.device, dtype=dtype), 1, padding=False)
    full_den = full_den if bool((full_den > 1e-6).all()) else None  # None: every window normalised as partial
    out_size = size // factor
    # contiguous (N, C, h, w), written chunk by chunk: the blur's channels_last layout stays inside (the
    # stages after it flatten the patches, which would copy a channels_last tensor each time)
    out = torch.empty((ids.numel(), len(channels), out_size, out_size), device=image.device, dtype=dtype)
    for i in range(0, ids.numel(), PATCH_CHUNK):
        _patch_windows(image[0], channels, valid, ids[i:i + PATCH_CHUNK], size, pad, span, blur, full_den,
                       out[i:i + PATCH_CHUNK])
    return out


def _patch_windows(image: torch.Tensor, channels: list[int], valid: torch.Tensor, ids: torch.Tensor, size: int,
                   pad: int, span: int, blur: _StripBlur, full_den: torch.Tensor | None, out: torch.Tensor) -> None:
    """The normalised blur of the windows of patches ``ids`` of ``image`` ``(C, H, W)`` (its ``channels``)
    into ``out`` ``(N, C', h, w)``; ``full_den``: a fully valid window's blurred mask (None where it has a
    zero)."""
    (_, h, w), c, n = image.shape, len(channels), ids.numel()
    dtype = blur.both.dtype
    z = torch.empty((n, c, span, span), device=image.device, dtype=dtype, memory_format=torch.channels_last)
    ok = torch.zeros((n, span, span), device=image.device, dtype=torch.bool)
    # each window copied as slices (a gather of every pixel costs more than the blur); past the image:
    # zeros, invalid
    rows, cols = patch_corners(ids, size, w)
    runs = channel_runs(channels)
    for k, (r0, c0) in enumerate(zip((rows - pad).tolist(), (cols - pad).tolist())):
        a0, a1, b0, b1 = max(r0, 0), min(r0 + span, h), max(c0, 0), min(c0 + span, w)
        if (a0, a1, b0, b1) != (r0, r0 + span, c0, c0 + span):
            z[k].zero_()
        ok[k, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = vk = valid[a0:a1, b0:b1]
        for j0, j1, i0 in runs:
            torch.mul(image[i0:i0 + j1 - j0, a0:a1, b0:b1], vk, out=z[k, j0:j1, a0 - r0:a1 - r0, b0 - c0:b1 - c0])
    num = blur(z, 1, padding=False)
    if full_den is None:
        partial = torch.arange(n, device=image.device)
    else:  # the fully valid windows: their blurred mask, used as is (it has no zero)
        torch.div(num, full_den, out=out)
        partial = torch.nonzero(~ok.flatten(1).all(1)).flatten()
    if partial.numel():
        m = ok[partial][:, None].expand(-1, c, -1, -1).to(dtype).contiguous(memory_format=torch.channels_last)
        zero = torch.zeros((), dtype=dtype, device=image.device)
        out[partial] = _normalised(num[partial], blur(m, 1, padding=False), zero)
