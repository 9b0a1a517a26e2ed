"""Stage functions against references: MTF blur, shifts, patches, radiometric fit, selection, pairing."""

from pathlib import Path

import numpy as np
import pytest
import torch

from s2v_gpu.bands import S2_MTF, mtf_sigma_m
from s2v_gpu.errors import ShapeError
from s2v_gpu.mtf import band_sigmas_px, centred_gaussian_kernel, mtf_downsample, mtf_downsample_patches
from s2v_gpu.pairing import PairingConfig, find_pairs
from s2v_gpu.patches import patch_bounds, take_patches, to_patches, valid_triplets
from s2v_gpu.products import parse_product_name
from s2v_gpu.radiometry import FitError, RadiometryConfig, apply_linear, fit_linear, sample_pixels, stack_padded
from s2v_gpu.resample import apply_shift, downsample_bicubic_x2, sample_points
from s2v_gpu.selection import pair_generator, select_random

from .tolerances import assert_reordered_close, assert_tolerance_catches, reorder_tolerance


def test_mtf_sigma_formula():
    # sigma = res / pi * sqrt(-2 ln MTF)
    assert mtf_sigma_m(0.304, 10.0) == pytest.approx(10 / np.pi * np.sqrt(-2 * np.log(0.304)))
    assert band_sigmas_px(["B2"], 10.0)[0] == pytest.approx(mtf_sigma_m(S2_MTF["B2"], 10.0) / 5.0)


@pytest.mark.parametrize("factor", [2, 4])
def test_mtf_downsample_matches_scipy(device, factor):
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    img = rng.random((2, 64, 64)).astype(np.float64)
    sigmas = [1.3, 2.2] if factor == 2 else [3.1, 1.9]
    out = mtf_downsample(torch.from_numpy(img)[None].to(device), sigmas, factor)[0].cpu().numpy()
    for c, s in enumerate(sigmas):
        k = centred_gaussian_kernel(s, factor, dtype=torch.float64).numpy()
        # scipy reference: full-resolution separable correlation with the same taps, 'reflect' borders
        # (scipy's 'reflect' = edge sample repeated = torch's 'symmetric'; compare the interior, where
        # borders do not reach), then sampling at the block centres
        ref = ndimage.correlate1d(img[c], k, axis=1, mode="reflect", origin=-1 if len(k) % 2 == 0 else 0)
        ref = ndimage.correlate1d(ref, k, axis=0, mode="reflect", origin=-1 if len(k) % 2 == 0 else 0)
        # an even kernel centred between pixels i-1 and i (scipy origin -1 puts it between i and i+1):
        # the block [i*f, (i+1)*f) has its centre between pixels i*f + f/2 - 1 and i*f + f/2
        ref = ref[factor // 2 - 1::factor, factor // 2 - 1::factor]
        margin = len(k) // factor + 1
        np.testing.assert_allclose(out[c, margin:-margin, margin:-margin], ref[margin:-margin, margin:-margin],
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("holes", [0.1, 0.002])
def test_masked_mtf_downsample_is_the_normalised_convolution(device, factor, holes, monkeypatch):
    """With a mask: blur(x * valid) / blur(valid), the outside of the image counting as invalid,
    everywhere including the borders and next to the holes; strips of rows change nothing (with few
    holes most strips blur the mask only over the columns next to them)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    import s2v_gpu.mtf as mtf

    rng = np.random.default_rng(1)
    img = rng.random((3, 72, 64))
    valid = rng.random((72, 64)) > holes
    valid[20:30, 8:40] = False  # a cloud
    sigmas = [1.0, 1.9, 1.4]
    x = torch.from_numpy(img)[None].to(device)
    m = torch.from_numpy(valid)[None].to(device)
    channels = [2, 0]
    full = mtf_downsample(x, [sigmas[i] for i in channels], factor, m, channels=channels)[0].cpu().numpy()
    monkeypatch.setitem(mtf.STRIP_ROWS, device.type, 3 * factor)  # a few output rows per strip
    strips = mtf_downsample(x, [sigmas[i] for i in channels], factor, m, channels=channels)[0].cpu().numpy()
    # strips convolve other slices of the same rows: another summation order on some CPUs (1 ulp seen
    # on an AMD EPYC). Values in [0, 1), weights >= 0 that sum to 1 in each of the two passes of
    # len(kern) taps, then num / den: 4 * len(kern) roundings of numbers at most 1
    taps = len(centred_gaussian_kernel(max(sigmas), factor, dtype=torch.float64))
    tolerance = reorder_tolerance(np.float64, 4 * taps, 1.0)
    assert_reordered_close(strips, full, tolerance)
    assert_tolerance_catches(np.roll(strips, 1, axis=-2), full, tolerance)  # a strip one row off
    for k, ch in enumerate(channels):
        kern = centred_gaussian_kernel(sigmas[ch], factor, dtype=torch.float64).numpy()
        origin = -1 if len(kern) % 2 == 0 else 0

        def blur(a):
            a = ndimage.correlate1d(a, kern, axis=1, mode="constant", cval=0.0, origin=origin)
            a = ndimage.correlate1d(a, kern, axis=0, mode="constant", cval=0.0, origin=origin)
            return a[factor // 2 - 1::factor, factor // 2 - 1::factor]

        num, den = blur(img[ch] * valid), blur(valid.astype(float))
        np.testing.assert_allclose(full[k], np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0), atol=1e-9, rtol=0)
    # a fully valid neighbourhood gives the plain Gaussian, holes do not darken their neighbours
    plain = mtf_downsample(x[:, 2:3], [sigmas[2]], factor)[0, 0].cpu().numpy()  # channel 2 = full[0]
    inner = (slice(3, -3), slice(3, -3))
    far = ndimage.binary_dilation(~valid, iterations=12)[factor // 2 - 1::factor, factor // 2 - 1::factor]
    assert (~far[inner]).sum() > (20 if holes < 0.01 else -1)  # with few holes, many samples are checked
    np.testing.assert_allclose(full[0][inner][~far[inner]], plain[inner][~far[inner]], atol=1e-9)
    zero_filled = mtf_downsample(x[:, 2:3] * m[:, None], [sigmas[2]], factor)[0, 0].cpu().numpy()
    edge = (den > 0.2) & (den < 0.8)  # den of the last channel checked: the same cloud edge
    assert edge.sum() > 5 and (full[0][edge] - zero_filled[edge]).mean() > 0.1


def test_downsampling_has_no_half_pixel_offset(device):
    """A linear ramp sampled at the centre of 2x2 (4x4) blocks stays a ramp through those centres."""
    cols = torch.arange(64, dtype=torch.float64, device=device)
    ramp = cols.expand(64, 64)[None, None]
    for factor, out in ((2, downsample_bicubic_x2(ramp)), (4, mtf_downsample(ramp, [2.0], 4)),
                        (2, mtf_downsample(ramp, [1.5], 2))):
        expected = torch.arange(out.shape[-1], dtype=torch.float64, device=device) * factor + (factor - 1) / 2
        inner = slice(4, -4)
        torch.testing.assert_close(out[0, 0, 10, inner], expected[inner], atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(94, 122), (95, 123)])  # odd sizes: the last row and column are dropped
@pytest.mark.parametrize("dtype", [torch.int16, torch.float32])
def test_half_resolution_computes_the_downsampled_pixels_it_is_asked(dtype, shape, device):
    """The registration's lazy 10 m reference: at any rows and columns (every pixel, a sparse grid,
    a window touching the edges, where the kernels are truncated) the whole image's values to float32
    rounding (64 weighted terms: 1e-6; measured 1.8e-7 on the CPU; a wrong tap is 1e-2 off), with
    invalid pixels read as 0; once whole, its slices."""
    from s2v_gpu.resample import HalfResolution, dense

    g = torch.Generator().manual_seed(4)
    values = (torch.rand(*shape, generator=g) * 9000 + 500).to(dtype).to(device)
    valid = (torch.rand(*shape, generator=g) > 0.1).to(device)
    whole = downsample_bicubic_x2(((values * valid).double() / 1e4)[None, None])[0, 0].float()
    lazy = HalfResolution(values, valid, 1e4)
    assert lazy.shape == whole.shape
    for rows, cols in ((range(47), range(61)), (range(0, 47, 5), range(0, 61, 5)), (range(1, 46, 7), range(2, 61, 9)),
                       (range(40, 47), range(0, 4)), (range(0, 1), range(60, 61))):
        got = lazy.at(rows, cols)
        assert got.shape == (len(rows), len(cols)) and got.dtype == torch.float32
        torch.testing.assert_close(got, whole[rows.start:rows.stop:rows.step, cols.start:cols.stop:cols.step],
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(dense(lazy), whole, atol=1e-6, rtol=0)
    # a sparse grid against the whole image: the same 64 taps per pixel, another vector split
    tolerance = reorder_tolerance(torch.float32, 64, 1.3)
    assert_reordered_close(lazy.at(range(3, 40, 4), range(5, 9)), dense(lazy)[3:40:4, 5:9], tolerance)
    assert_tolerance_catches(lazy.at(range(4, 41, 4), range(5, 9)), dense(lazy)[3:40:4, 5:9], tolerance)
    # a nodata value where invalid weighs nothing: the same pixels as with zeros stored there
    dirty = HalfResolution(torch.where(valid, values, torch.full_like(values, -10000)), valid, 1e4)
    clean = HalfResolution(values, valid, 1e4)
    # the same rows and columns, the same operations: only the values under zero weights differ
    assert torch.equal(dirty.at(range(0, 47, 3), range(61)), clean.at(range(0, 47, 3), range(61)))


def test_apply_shift_integer_is_exact_and_pulls_invalid_from_outside(device):
    x = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(1)).to(device)
    valid = torch.ones(1, 40, 50, dtype=torch.bool, device=device)
    out, ok = apply_shift(x, valid, (3.0, -2.0))
    # out(p) = x(p + (3, -2)): row r, col c <- row r - 2, col c + 3
    torch.testing.assert_close(out[0, :, 5:30, 5:40], x[0, :, 3:28, 8:43], atol=1e-5, rtol=0)
    assert not ok[0, 0, :2].any() and not ok[0, 0, :, -3:].any()  # pulled in from outside
    assert ok[0, 0, 2:, :-3].all()  # an integer shift uses one tap: nothing else is lost


def test_apply_shift_subpixel_interpolates(device):
    xs = torch.arange(32, dtype=torch.float64, device=device)
    img = (0.5 * xs + 0.01 * xs**2).expand(32, 32)[None, None]
    out, ok = apply_shift(img, torch.ones(1, 32, 32, dtype=torch.bool, device=device), (0.3, 0.0), "keys")
    # Keys cubic reproduces polynomials up to degree 2 exactly
    x = xs[5:25] + 0.3
    torch.testing.assert_close(out[0, 0, 10, 5:25], 0.5 * x + 0.01 * x**2, atol=1e-9, rtol=0)
    # PyTorch's grid_sample bicubic (a = -0.75) does not: 0.04 px off on a ramp at 0.3 px
    ramp = (0.5 * xs).expand(32, 32)[None, None]
    gs, _ = apply_shift(ramp, torch.ones(1, 32, 32, dtype=torch.bool, device=device), (0.3, 0.0), method="grid_sample")
    err = (gs[0, 0, 10, 5:25] - 0.5 * (xs[5:25] + 0.3)).abs().max() / 0.5
    assert 0.02 < err < 0.06


@pytest.mark.parametrize("kernel, lo, hi", [("keys", 1, 2), ("lanczos4", 3, 4)])
def test_apply_shift_invalid_pixels_spread_over_the_kernel_support(device, kernel, lo, hi):
    valid = torch.ones(1, 30, 30, dtype=torch.bool, device=device)
    valid[0, 15, 15] = False
    _, ok = apply_shift(torch.zeros(1, 1, 30, 30, device=device), valid, (0.4, 0.4), kernel)
    # samples at p + 0.4 draw from pixels floor(p+0.4)-lo .. floor(p+0.4)+hi: exactly those touching 15
    touched = set(range(15 - hi, 15 + lo + 1))
    expected = torch.tensor([[r in touched and c in touched for c in range(30)] for r in range(30)], device=device)
    inner = slice(lo, 30 - hi)  # away from the borders (whose samples are pulled from outside)
    assert torch.equal(~ok[0, 0, inner, inner], expected[inner, inner])
    assert not ok[0, 0, :lo].any() and not ok[0, 0, 30 - hi:].any()


def test_sample_points_value_and_gradient_are_exact_on_a_quadratic(device):
    """The Keys cubic (a = -0.5) reproduces quadratics: values and derivatives at scattered points are
    those of the polynomial; points whose 4x4 taps touch an invalid pixel or the outside are flagged."""
    rows, cols = torch.meshgrid(torch.arange(40, dtype=torch.float64), torch.arange(50, dtype=torch.float64),
                                indexing="ij")
    f = lambda x, y: 0.3 + 0.02 * x - 0.01 * y + 0.001 * x * x - 0.002 * x * y + 0.0005 * y * y  # noqa: E731
    image = f(cols, rows).to(device)
    valid = torch.ones(40, 50, dtype=torch.bool, device=device)
    valid[20, 30] = False
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(500, generator=g, dtype=torch.float64) * 52 - 1).to(device)
    y = (torch.rand(500, generator=g, dtype=torch.float64) * 42 - 1).to(device)
    value, dx, dy, ok = sample_points(image, valid, x, y, "keys")
    fx = lambda x, y: 0.02 + 0.002 * x - 0.002 * y  # noqa: E731
    fy = lambda x, y: -0.01 - 0.002 * x + 0.001 * y  # noqa: E731
    torch.testing.assert_close(value[ok], f(x, y)[ok], atol=1e-12, rtol=0)
    torch.testing.assert_close(dx[ok], fx(x, y)[ok], atol=1e-12, rtol=0)
    torch.testing.assert_close(dy[ok], fy(x, y)[ok], atol=1e-12, rtol=0)
    c0, r0 = torch.floor(x), torch.floor(y)
    expected = (c0 >= 1) & (c0 <= 47) & (r0 >= 1) & (r0 <= 37)
    expected &= ~((r0 - 1 <= 20) & (20 <= r0 + 2) & (c0 - 1 <= 30) & (30 <= c0 + 2))
    assert torch.equal(ok, expected) and ok.sum() > 300


@pytest.mark.parametrize("kernel", ["lanczos4", "lanczos3", "keys", "bicubic"])
def test_sample_points_derivative_is_the_derivative_of_the_interpolant(device, kernel):
    """The refinement's gradient is exact for whatever kernel samples the moving image: it equals the
    central difference of the interpolated values; constants are reproduced exactly."""
    image = torch.rand(30, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(device)
    valid = torch.ones(30, 30, dtype=torch.bool, device=device)
    g = torch.Generator().manual_seed(6)
    x = (torch.rand(300, generator=g, dtype=torch.float64) * 18 + 6).to(device)
    y = (torch.rand(300, generator=g, dtype=torch.float64) * 18 + 6).to(device)
    h = 1e-6
    _, dx, dy, ok = sample_points(image, valid, x, y, kernel)
    px, _, _, _ = sample_points(image, valid, x + h, y, kernel)
    mx, _, _, _ = sample_points(image, valid, x - h, y, kernel)
    py, _, _, _ = sample_points(image, valid, x, y + h, kernel)
    my, _, _, _ = sample_points(image, valid, x, y - h, kernel)
    assert ok.all()
    torch.testing.assert_close(dx, (px - mx) / (2 * h), atol=1e-6, rtol=0)
    torch.testing.assert_close(dy, (py - my) / (2 * h), atol=1e-6, rtol=0)
    const, cdx, cdy, _ = sample_points(torch.full((30, 30), 0.25, dtype=torch.float64, device=device), valid, x, y,
                                       kernel)
    torch.testing.assert_close(const, torch.full_like(const, 0.25), atol=1e-12, rtol=0)
    assert cdx.abs().max() < 1e-10 and cdy.abs().max() < 1e-10


def test_take_patches_is_to_patches_indexed(device):
    img = torch.rand(5, 70, 90, generator=torch.Generator().manual_seed(2)).to(device)
    ids = torch.tensor([0, 4, 7, 9], device=device)
    assert torch.equal(take_patches(img, 16, ids), to_patches(img, 16)[ids])
    assert torch.equal(take_patches(img, 16, ids, [4, 1]), to_patches(img, 16)[ids][:, [4, 1]])
    assert torch.equal(take_patches(img, 16, ids.flip(0), [3]), to_patches(img, 16)[ids.flip(0)][:, [3]])
    # runs of consecutive channels copied together: the pipeline's [0, 1, 2, 6] and [3, 4, 5, 6], a
    # run after a jump back, a repeated channel
    for channels in ([0, 1, 2, 4], [1, 2, 3, 4], [4, 0, 1], [2, 2, 3]):
        assert torch.equal(take_patches(img, 16, ids, channels), to_patches(img, 16)[ids][:, channels]), channels
    assert take_patches(img, 16, ids[:0], [1, 2]).shape == (0, 2, 16, 16)
    for bad in ([20], [-1]):  # a 4 x 5 grid: no silent wrap-around (a negative number indexed from the end)
        with pytest.raises(IndexError, match="outside a grid of 4 x 5"):
            take_patches(img, 16, torch.tensor(bad, device=device))
    for bad in ([5], [-1], [0, 7]):  # nor a channel outside the image
        with pytest.raises(IndexError, match="outside an image of 5"):
            take_patches(img, 16, ids, bad)


def test_patch_validity_and_any_valid_are_the_direct_reductions(device):
    """The byte reductions give what cutting the mask into patches and ``all`` / ``any`` give: odd
    sizes with a remainder, non-contiguous masks, a single invalid pixel at each corner of a patch,
    empty and all-invalid masks."""
    from s2v_gpu.patches import all_valid_patches, any_valid

    g = torch.Generator().manual_seed(3)
    for h, w, size, p_bad in ((70, 90, 16, 0.002), (64, 64, 8, 0.0), (37, 53, 5, 0.01), (16, 16, 16, 0.5)):
        valid = (torch.rand(h, w, generator=g) >= p_bad).to(device)
        for r, c in ((0, 0), (size - 1, size - 1), (size, 2 * size - 1)):
            if r < h and c < w:
                valid[r, c] = False
        for mask in (valid, valid.t(), valid[1:, 2:]):
            expected = to_patches(mask[None], size).flatten(1).all(1)
            got = all_valid_patches(mask, size)
            assert got.dtype == torch.bool and torch.equal(got, expected)
            assert any_valid(mask) == bool(mask.any())
    none = torch.zeros(9, 7, dtype=torch.bool, device=device)
    assert not any_valid(none) and not any_valid(none[:0])
    none[8, 6] = True
    assert any_valid(none) and any_valid(none[:, 5:]) and not any_valid(none[:, :6])
    assert all_valid_patches(none, 16).shape == (0,)


def test_patches_order_and_validity(device):
    img = torch.arange(8 * 12, dtype=torch.float32, device=device).reshape(1, 8, 12)
    p = to_patches(img, 4)
    assert p.shape == (6, 1, 4, 4)
    torch.testing.assert_close(p[1, 0], img[0, 0:4, 4:8])
    torch.testing.assert_close(p[3, 0], img[0, 4:8, 0:4])
    v5 = torch.ones(16, 24, dtype=torch.bool, device=device)
    v10 = torch.ones(8, 12, dtype=torch.bool, device=device)
    v20 = torch.ones(4, 6, dtype=torch.bool, device=device)
    v5[1, 1] = False  # patch 0
    v10[7, 11] = False  # patch 5
    v20[0, 3] = False  # patch 2 (cols 2..3 of the 20 m grid hold patch 1? no: 2 px per 20 m patch)
    ok = valid_triplets(v5, v10, v20, 8)
    assert ok.tolist() == [False, False, True, True, True, False]
    with pytest.raises(ShapeError):
        valid_triplets(v5, v10[:4], v20, 8)
    b = patch_bounds(100.0, 1000.0, 16, 24, 8)
    assert b[0] == (100.0, 960.0, 140.0, 1000.0) and b[4] == (140.0, 920.0, 180.0, 960.0)


def test_fit_recovers_a_known_linear_map(device):
    g = torch.Generator().manual_seed(0)
    v = torch.rand(2, 5000, 4, generator=g, dtype=torch.float64).to(device) * 0.4
    w_true = torch.randn(2, 5, 4, generator=g, dtype=torch.float64).to(device) * 0.1
    w_true[:, 1:] += torch.eye(4, dtype=torch.float64, device=device)
    s = torch.cat([torch.ones_like(v[..., :1]), v], 2) @ w_true
    w = fit_linear(v, s, None, RadiometryConfig())
    torch.testing.assert_close(w, w_true, atol=1e-9, rtol=0)
    # padding one fit with zero rows changes nothing
    vp, sp, counts = stack_padded([v[0], v[1, :3000]], [s[0], s[1, :3000]])
    wp = fit_linear(vp, sp, counts, RadiometryConfig())
    torch.testing.assert_close(wp, w_true, atol=1e-9, rtol=0)
    img = torch.rand(3, 4, 8, 8, dtype=torch.float64, device=device)
    out = apply_linear(img, w_true[0])
    expected = torch.einsum("nchw,cd->ndhw", img, w_true[0, 1:]) + w_true[0, 0][None, :, None, None]
    torch.testing.assert_close(out, expected)


def test_applying_the_fit_by_chunks_to_some_stored_patches_is_one_product(device, monkeypatch):
    """The 5 m output is fitted a few patches at a time straight from the stored int16, for the kept
    ones only: one product over the copied patches, to rounding (chunks of 1 and of 3 patches,
    an unordered index, none kept)."""
    import s2v_gpu.radiometry as radiometry

    g = torch.Generator().manual_seed(1)
    dn = torch.randint(-10000, 16000, (9, 4, 16, 16), generator=g, dtype=torch.int16).to(device)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64) * 0.2
    w[1:] += torch.eye(4, dtype=torch.float64)
    w = w.to(device)
    index = torch.tensor([7, 0, 3, 4, 8], device=device)
    gain = (w[1:] / 10000.0).float()
    one = torch.matmul(gain.T, dn[index].reshape(5, 4, 256).float()) + w[0].float()[None, :, None]
    for chunk in (4 * 256, 3 * 4 * 256):
        monkeypatch.setattr(radiometry, "LINEAR_CHUNK", {"cpu": chunk, "cuda": chunk})
        got = apply_linear(dn, w, 10000.0, index)
        # chunks against one product: 4 products and an offset summed in the BLAS's order for each shape
        magnitude = ((gain.abs().T @ dn[index].reshape(5, 4, 256).abs().float()) + w[0].abs().float()[None, :, None])
        tolerance = reorder_tolerance(torch.float32, 5, magnitude.max().item())
        assert got.dtype == torch.float32
        assert_reordered_close(got, one.view(5, 4, 16, 16), tolerance)
        assert_tolerance_catches(got, one.view(5, 4, 16, 16).roll(1, 1), tolerance)  # bands swapped
        assert apply_linear(dn, w, 10000.0, index[:0]).shape == (0, 4, 16, 16)


def test_fitted_venus_goes_to_the_files_int16_without_a_float_copy(device, monkeypatch):
    """The writer takes the 5 m VENuS int16 straight from the fit, a few patches at a time: the same
    bytes as rounding the float reflectance afterwards (:func:`to_int16`), clipping and halves included,
    whether or not the float was asked first (chunks of 1 and 3 patches, an unordered index, none kept)."""
    import s2v_gpu.radiometry as radiometry
    from s2v_gpu.layout import to_int16
    from s2v_gpu.pipeline import FittedVenus

    g = torch.Generator().manual_seed(2)
    dn = torch.randint(-10000, 16000, (9, 4, 16, 16), generator=g, dtype=torch.int16)
    w = torch.zeros(5, 4, dtype=torch.float64)
    w[1:] = torch.eye(4, dtype=torch.float64) * 1000.0  # x 1000 DN: clipped at +-32767
    w[1:, 1] = torch.tensor([0.0, 0.5, 0.0, 0.0], dtype=torch.float64)  # band 1: odd DN give exact halves
    dn, w = dn.to(device), w.to(device)
    # every patch kept (read in order, no gather), some, two, none
    for index in (torch.arange(9), torch.tensor([7, 0, 3, 4, 8]), torch.tensor([0, 2]),
                  torch.tensor([], dtype=torch.long)):
        index = index.to(device)
        expected = to_int16(apply_linear(dn, w, 10000.0, index))
        if index.numel():  # the cases the rule decides: clipping and halves (to even)
            assert (expected == 32767).any() and (expected == -32768).any()
            assert ((dn.cpu()[index.cpu(), 1] % 2 == 1) & (expected[:, 1] % 2 == 0)).any()
        for chunk in (4 * 256, 3 * 4 * 256):
            monkeypatch.setattr(radiometry, "LINEAR_CHUNK", {"cpu": chunk, "cuda": chunk})
            direct = FittedVenus((dn, dn), (w, w), 10000.0, index).int16(1)
            assert direct.dtype == torch.int16 and direct.device.type == "cpu"
            # exact by construction: one non-zero gain per band, so each value is one product (one
            # rounding, whatever the order of the zero terms), then the same rounding rule
            assert torch.equal(direct, expected)
            after_float = FittedVenus((dn, dn), (w, w), 10000.0, index)
            after_float.reflectance(0)
            assert torch.equal(after_float.int16(0), expected)


def test_degenerate_fits_are_refused():
    cfg = RadiometryConfig(min_pixels=100)
    v = torch.rand(1, 50, 4, dtype=torch.float64)
    with pytest.raises(FitError, match="fewer than 100"):
        fit_linear(v, v, None, cfg)
    v = torch.rand(1, 500, 4, dtype=torch.float64)
    v[..., 2] = 0.3
    with pytest.raises(FitError, match="constant band"):
        fit_linear(v, v, None, cfg)


def test_selection_is_seeded_and_bounded():
    cand = torch.arange(0, 2000, 3)
    a = select_random(cand, 500, pair_generator(0, "SITE_31TCJ_2018-06-02"))
    b = select_random(cand, 500, pair_generator(0, "SITE_31TCJ_2018-06-02"))
    c = select_random(cand, 500, pair_generator(1, "SITE_31TCJ_2018-06-02"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.numel() == 500 and torch.isin(a, cand).all() and (a.diff() > 0).all()
    assert torch.equal(select_random(cand[:10], 500, pair_generator(0, "x")), cand[:10])


def _names(*names):
    return [(Path("/archive") / n, parse_product_name(n)) for n in names]


def test_pairing_rules():
    products = _names(
        "VENUS-XS_20180602-104812-000_L2A_ES-IC3XG_C_V2-2",
        "VENUS-XS_20180602-104812-000_L2A_ES-IC3XG_C_V1-0",  # older duplicate
        "SENTINEL2A_20180602-105212-461_L2A_T29TNG_C_V1-4",
        "SENTINEL2A_20180602-105212-461_L2A_T29TNG_C_V2-2",  # newer duplicate: kept
        "VENUS-XS_20180612-104812-000_L2A_ES-IC3XG_C_V2-2",
        "SENTINEL2B_20180612-112000-000_L2A_T29TNG_C_V2-2",  # 31 min later: too far
        "VENUS-XS_20180613-104812-000_L2A_OTHER_C_V2-2",  # another site
        "SENTINEL2B_20180613-104000-000_L2A_T29TNG_C_V2-2",
    )
    pairs = find_pairs(products, "ES-IC3XG")
    assert [p.pair_id for p in pairs] == ["ES-IC3XG_29TNG_2018-06-02"]
    p = pairs[0]
    assert p.venus.name.endswith("V2-2") and p.s2.name.endswith("V2-2")
    assert p.dt_minutes == pytest.approx(4 + 0.461 / 60)
    assert len(find_pairs(products, "ES-IC3XG", PairingConfig(max_dt_minutes=40))) == 2


def test_pairing_picks_the_tile_covering_most(tiny_archive, tmp_path):
    import shutil

    import rasterio

    from s2v_gpu.products import find_products

    date = tiny_archive.truth["dates"][0]
    shutil.copytree(tiny_archive.root / date["venus"], tmp_path / date["venus"])
    shutil.copytree(tiny_archive.root / date["s2"], tmp_path / date["s2"])
    # a second tile the same day whose window covers only a corner of the site
    other = date["s2"].replace("T31TCJ", "T31TCK")
    shutil.copytree(tiny_archive.root / date["s2"], tmp_path / other)
    for f in (tmp_path / other).rglob("*.tif"):
        f.rename(f.with_name(f.name.replace("T31TCJ", "T31TCK")))
        with rasterio.open(f.with_name(f.name.replace("T31TCJ", "T31TCK")), "r+") as dst:
            t = dst.transform
            dst.transform = rasterio.Affine(t.a, 0, t.c + 1400, 0, t.e, t.f + 1400)
    (tmp_path / other / f"{date['s2']}_MTD_ALL.xml").rename(tmp_path / other / f"{other}_MTD_ALL.xml")
    pairs = find_pairs(find_products(tmp_path), "SYNTH-1")
    assert len(pairs) == 1 and pairs[0].tile == "31TCJ" and len(pairs[0].candidates) == 2


@pytest.mark.parametrize("n", [10, 700, 10**6])
def test_fit_pixels_are_the_draw_over_the_kept_patches_pixels(device, n):
    """The fit's random pixels: a permutation of the kept patches' pixels numbered patch by patch,
    row-major, its first n; read at their positions (few drawn) or from a copy of the patches (most
    drawn), the same values."""
    g = torch.Generator().manual_seed(2)
    v, s = torch.rand(12, 3, 8, 8, generator=g).to(device), torch.rand(12, 3, 8, 8, generator=g).to(device)
    keep = torch.rand(12, generator=g).to(device) > 0.3
    a, b = sample_pixels(v, s, keep, n, torch.Generator().manual_seed(9))
    pixels_v = v[keep].permute(0, 2, 3, 1).reshape(-1, 3)
    pixels_s = s[keep].permute(0, 2, 3, 1).reshape(-1, 3)
    idx = torch.randperm(pixels_v.shape[0], generator=torch.Generator().manual_seed(9))[:n].to(device)
    assert a.shape == (min(n, pixels_v.shape[0]), 3)
    assert torch.equal(a, pixels_v[idx]) and torch.equal(b, pixels_s[idx])


@pytest.mark.parametrize("factor", [2, 4])
def test_mtf_of_some_patches_is_the_whole_image_cut(device, factor):
    """Blurring only the candidates' windows gives the patches of the whole image's masked blur bit for
    bit: inside, at the image's borders (zeros past it) and next to a cloud."""
    g = torch.Generator().manual_seed(5)
    # 100 x 132: past the 3 x 4 patch grid, real pixels the last windows read
    img = torch.randint(-100, 4000, (1, 5, 100, 132), generator=g, dtype=torch.int16).to(device)
    valid = (torch.rand(1, 100, 132, generator=g) > 0.002).to(device)
    valid[:, 30:45, 50:70] = False
    sigmas, channels, size = [1.1, 2.0], [3, 1], 32
    whole = mtf_downsample(img, sigmas, factor, valid, channels=channels)[0]
    ids = torch.tensor([0, 3, 5, 6, 11], device=device)  # corners, an edge, the cloud's, the last
    cut = take_patches(whole, size // factor, ids)
    some = mtf_downsample_patches(img, valid, sigmas, factor, ids, size, channels)
    assert torch.equal(some, cut) and some.shape == (5, 2, size // factor, size // factor)
