"""The shift kernel does not move the image: positional bias on real Sentinel-2 texture against a
quintic spline (an independent, high-order reference), at every fractional shift."""

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from s2v_gpu.resample import apply_shift

from .tolerances import assert_reordered_close, assert_tolerance_catches, reorder_tolerance

FRACTIONS = [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9]


@pytest.fixture(scope="module")
def real_texture(real_data):
    images = []
    for f in sorted((real_data / "s2_pair_t33uuu").glob("*.jp2")):
        with rasterio.open(f) as src:
            col, row = ~src.transform * (339611.0, 5856426.0)
            images.append(src.read(1, window=Window(int(col) - 128, int(row) - 128, 256, 256)).astype(np.float64))
    for f in sorted((real_data / "s2_stacks_t38kpd").glob("*_FRE_STACK.tif")):
        with rasterio.open(f) as src:
            images += [src.read(b).astype(np.float64) for b in (1, 3, 7)]  # B2, B4, B8
    return images


def _bias(image: np.ndarray, t: float, kernel: str, axis: int) -> float:
    """Translation (px) between the kernel's shift of ``image`` by t and the quintic spline's."""
    from scipy import ndimage

    shift = (0.0, t) if axis == 1 else (t, 0.0)
    reference = ndimage.shift(image, tuple(-s for s in shift), order=5, mode="mirror")
    x = torch.from_numpy(image)[None, None]
    out, _ = apply_shift(x, torch.ones_like(x[:, 0], dtype=torch.bool), shift[::-1], kernel)
    b = 12
    c, r = out[0, 0].numpy()[b:-b, b:-b], reference[b:-b, b:-b]
    g = np.gradient(reference, axis=axis)[b:-b, b:-b]
    return float(((c - r) * g).sum() / (g * g).sum())


@pytest.mark.parametrize("axis", [0, 1])
def test_default_kernel_bias_is_below_a_hundredth_of_a_pixel(real_texture, axis):
    pytest.importorskip("scipy")
    worst = max(abs(_bias(img, t, "lanczos4", axis)) for img in real_texture for t in FRACTIONS)
    assert worst <= 0.01, worst


def test_keys_kernel_moved_the_image_as_the_audit_found(real_texture):
    """The previous default (Keys, a = -0.5) is 0.03-0.04 px off at t = 0.25 / 0.75 with opposite
    signs: the measurement is able to see what the default kernel fixes."""
    pytest.importorskip("scipy")
    at = {t: max((_bias(img, t, "keys", 1) for img in real_texture), key=abs) for t in (0.25, 0.75)}
    assert 0.025 < abs(at[0.25]) < 0.05 and 0.025 < abs(at[0.75]) < 0.05 and at[0.25] * at[0.75] < 0


@pytest.mark.parametrize("kernel", ["lanczos4", "lanczos3", "keys", "bicubic"])
def test_grid_sampling_is_the_gather_of_every_tap(kernel):
    """The refinement's separable sampler of a grid moved by one shift gives what the per-point
    gather gives (value, exact derivatives, validity), to rounding; one sampler kept for shift after
    shift (padded again when a shift outgrows it) gives the same bits as a new one each time."""
    from s2v_gpu.resample import GridSampler, sample_grid, sample_points

    g = torch.Generator().manual_seed(1)
    img = torch.rand(90, 101, generator=g, dtype=torch.float64)
    valid = torch.rand(90, 101, generator=g) > 0.03
    rows, cols = range(0, 90, 2), range(1, 101, 3)
    rr, cc = torch.meshgrid(torch.tensor(rows).double(), torch.tensor(cols).double(), indexing="ij")
    sampler = GridSampler(img, valid, rows, cols, kernel, reach_px=1)
    for shift in [(0.3, -1.7), (-3.25, 2.6), (0.0, 0.0), (5.9, 0.01)]:
        got = sample_grid(img, valid, rows, cols, shift, kernel)
        ref = [x.reshape(rr.shape) for x in sample_points(img, valid, cc.flatten() + shift[0], rr.flatten() + shift[1],
                                                          kernel)]
        assert torch.equal(got[3], ref[3]) and got[3].any() and not got[3].all()
        for a, b in zip(got[:3], ref[:3]):
            assert (a - b)[ref[3]].abs().max() < 1e-12
        kept = sampler(shift)
        # the same sampler code on the same padded grid and shift: the same operations in the same order
        assert all(torch.equal(a, b) for a, b in zip(kept, got))


@pytest.mark.parametrize("block_rows", [1, 7, 44, 45])
def test_grid_sampling_by_blocks_of_rows_is_one_pass(block_rows, monkeypatch):
    """The sampler's vertical pass by blocks of rows (kept in cache on the CPU) gives what one pass over
    all rows gives, to rounding: blocks of one row, a last short block and one block included."""
    from s2v_gpu import resample

    g = torch.Generator().manual_seed(4)
    img = torch.rand(90, 101, generator=g)
    valid = torch.rand(90, 101, generator=g) > 0.03
    rows, cols = range(0, 90, 2), range(1, 101, 3)  # 45 rows
    monkeypatch.setattr(resample, "SAMPLER_BLOCK_ROWS", {})
    whole = [resample.GridSampler(img, valid, rows, cols)(shift) for shift in [(0.3, -1.7), (-3.25, 2.6)]]
    monkeypatch.setattr(resample, "SAMPLER_BLOCK_ROWS", {"cpu": block_rows})
    blocks = [resample.GridSampler(img, valid, rows, cols)(shift) for shift in [(0.3, -1.7), (-3.25, 2.6)]]
    for a, b in zip(whole, blocks):
        # the same taps in the same order for each pixel, but another vector/tail split of the rows:
        # 8 taps a pass, two passes, of values in [0, 1) under weights of absolute sum <= 1.3
        tolerance = reorder_tolerance(torch.float32, 16, 1.3)
        for x, y in zip(a[:3], b[:3]):
            assert_reordered_close(x, y, tolerance)
        assert torch.equal(a[3], b[3])  # validity: boolean logic, exact
        assert_tolerance_catches(b[0].roll(1, 0), a[0], tolerance)  # a block one row off


@pytest.mark.parametrize("kernel", ["lanczos4", "lanczos3", "keys", "bicubic"])
def test_shifting_only_the_window_is_the_cropped_whole_shift(kernel):
    """The pipeline shifts only the common grid (the margins feed the taps): what shifting everything
    and cropping gives, to rounding, and the same where the taps would leave the image (it falls back)."""
    from s2v_gpu.resample import shift_window

    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 4, 120, 130, generator=g)
    valid = torch.rand(1, 120, 130, generator=g) > 0.05
    window = (9, 111, 10, 121)
    for shift in [(0.3, -1.7), (-3.25, 2.6), (0.0, 0.0), (7.9, -7.2)]:
        full, full_ok = apply_shift(img, valid, shift, kernel)
        part, part_ok = shift_window(img, valid, shift, kernel, window)
        # the same taps per pixel, another split of the rows into vector and scalar work: reordering
        # bounds (8 taps, two passes, values in [0, 1), weights of absolute sum <= 1.3); validity exact
        tolerance = reorder_tolerance(torch.float32, 16, 1.3)
        assert_reordered_close(part, full[..., 9:111, 10:121], tolerance)
        assert torch.equal(full_ok[..., 9:111, 10:121], part_ok)
        assert_tolerance_catches(full[..., 10:112, 10:121], part, tolerance)  # a window one row off


@pytest.mark.parametrize("stored", [False, True])
@pytest.mark.parametrize("by_runs", [True, False])
@pytest.mark.parametrize("kernel", ["keys", "lanczos4", "grid_sample"])
def test_moving_only_the_validity_or_only_some_patches_is_the_whole_move(kernel, by_runs, stored, device, monkeypatch):
    """The pipeline moves the whole grid's validity but only the candidate patches' reflectance: what
    cutting the whole moved window gives, to rounding (integer shifts, whose zero-weight taps must not
    count, taps past the image that fall back, runs of neighbours, a lone patch, the last column).
    ``stored``: the patches moved from the stored int16 (``divisor``, converted where the taps read)
    give the bits of the whole stack converted first (``BandStack.channels``), invalid pixels too."""
    from s2v_gpu import resample
    from s2v_gpu.patches import take_patches
    from s2v_gpu.resample import scaled_values, shift_patches, shift_window, shift_window_valid

    monkeypatch.setattr(resample, "SHIFT_PATCHES_BY_RUNS", {device.type} if by_runs else set())

    g = torch.Generator().manual_seed(3)
    valid = (torch.rand(1, 84, 100, generator=g) > 0.02).to(device)
    dn = torch.randint(-10000, 16001, (1, 3, 84, 100), generator=g, dtype=torch.int16).to(device)
    divisor = 10000.0 if stored else None
    # the stored values hold no-data where invalid: it must not leak into a valid sample's taps
    dn[:, :, ~valid[0]] = -10000
    img = scaled_values(dn, valid, 10000.0) if stored else torch.rand(1, 3, 84, 100, generator=g).to(device)
    origin, size, window = (6, 8), 16, (6, 6 + 64, 8, 8 + 80)  # a 4 x 5 patch grid inside a margin
    ids = torch.tensor([0, 1, 2, 4, 7, 10, 11, 12, 13, 14, 19], device=device)
    tolerance = reorder_tolerance(img.dtype, 16, 1.3 * 1.6)
    for shift in [(0.3, -1.7), (-3.25, 2.6), (0.0, 0.0), (2.0, -1.0), (-5.5, 4.4), (-9.3, 0.2)]:
        full, full_ok = shift_window(img, valid, shift, kernel, window)
        assert torch.equal(shift_window_valid(valid[:, None], shift, kernel, window), full_ok), shift
        for some in (ids, ids[4:5], ids[:0], ids.flip(0)):
            got = shift_patches(dn[0] if stored else img[0], valid[0], shift, kernel, origin, size, some, 80,
                                divisor=divisor)
            assert got.shape == (some.numel(), 3, size, size) and got.is_contiguous() and got.dtype == img.dtype
            # values up to 1.6 (stored int16 / 1e4) or 1 (noise), 8 taps x 2 passes, weights' sum <= 1.3
            assert_reordered_close(got, take_patches(full[0], size, some), tolerance)
        # the candidates (patches whose moved validity is all valid) moved without moving the
        # validity again: the same bits, though invalid pixels (a cloud) hold no-data / noise beside them
        cloud = torch.ones_like(valid)
        cloud[:, 30:41, 37:58] = False
        cloud_dn = torch.where(cloud[:, None], dn, -10000)
        cloud_img = scaled_values(cloud_dn, cloud, 10000.0) if stored else img
        full, full_ok = shift_window(cloud_img, cloud, shift, kernel, window)
        whole = take_patches(full_ok[0].to(torch.uint8), size, ids).flatten(1).all(1).bool()
        assert whole.any() and not whole.all(), shift
        trusted = shift_patches(cloud_dn[0] if stored else img[0], cloud[0], shift, kernel, origin, size, ids[whole],
                                80, divisor=divisor, valid_taps=True)
        assert_reordered_close(trusted, take_patches(full[0], size, ids[whole]), tolerance)
        assert_tolerance_catches(trusted, take_patches(full[0].roll(1, -1), size, ids[whole]), tolerance)
