"""One pair through every stage, checked against the synthetic ground truth."""

import math

import numpy as np
import pytest
import torch

from s2v_gpu.mtf import band_sigmas_px, mtf_downsample
from s2v_gpu.pairing import find_pairs
from s2v_gpu.patches import PatchConfig
from s2v_gpu.pipeline import VENUS_BANDS_READ, PairSkipped, PipelineConfig, process_pair
from s2v_gpu.products import find_products
from s2v_gpu.radiometry import RadiometryConfig
from s2v_gpu.registration import RegistrationConfig
from s2v_gpu.selection import SelectionConfig
from s2v_gpu.synthetic import SyntheticConfig, SyntheticDate, generate

PATCH = 64


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    dates = [
        # an integer-pixel shift: the bicubic resampling of Sentinel-2 is then exact
        SyntheticDate("2019-07-01", dt_minutes=4.0, shift_m=[10.0, -10.0], venus_cloud=0.05, s2_cloud=0.05),
        SyntheticDate("2019-07-11", dt_minutes=-9.0, shift_m=[-6.3, 4.1], venus_cloud=0.1, s2_cloud=0.08),
        # no shift: no resampling of Sentinel-2 at all
        SyntheticDate("2019-07-21", dt_minutes=2.0, shift_m=[0.0, 0.0], venus_cloud=0.05, s2_cloud=0.05),
    ]
    cfg = SyntheticConfig(size_px=768, s2_margin_m=200.0, dates=dates, noise_std=0.0001, seed=5, keep_arrays=True)
    return generate(cfg, tmp_path_factory.mktemp("pipeline"))


def _grid_patches(result, cfg) -> int:
    """Patches in the common grid, from its size recorded in the stats (W x H in 5 m pixels)."""
    _, _, width, height = result.stats["common_grid"]
    return (width // cfg.patches.size_5m) * (height // cfg.patches.size_5m)


def _cfg(**kw) -> PipelineConfig:
    cfg = PipelineConfig(patches=PatchConfig(PATCH), radiometry=RadiometryConfig(min_pixels=200), **kw)
    return cfg


def _pairs(archive):
    return find_pairs(find_products(archive.root), "SYNTH-1")


@pytest.mark.parametrize("k, groups, cross_terms", [(2, ("10m", "20m"), True), (0, ("10m",), False)])
def test_fit_reproduces_the_injected_radiometry(archive, k, groups, cross_terms):
    """W within 1 % of the truth at low noise. Resampling Sentinel-2 by a fraction of a pixel smooths
    it (any interpolator does): with a half-pixel shift the 20 m gains come out 2-3 % low, so the
    20 m group is checked on the unshifted date; the 10 m gains and offsets also on the integer-shift
    date (whose estimated shift is integer only to 0.02 px, enough to move the cross terms between the
    strongly collinear visible bands by about 0.01)."""
    pair = _pairs(archive)[k]
    result = process_pair(pair, _cfg())
    truth = archive.truth["radiometry"]
    for group in groups:
        w = (result.w_10 if group == "10m" else result.w_20).cpu().numpy()
        w_true = np.array(truth[f"W_{group}"])
        np.testing.assert_allclose(np.diag(w[1:]), np.diag(w_true[1:]), rtol=0.01, err_msg=f"{group} gains")
        # the other coefficients are 0 or offsets of about 0.01: 1 % of the unit gain, absolutely
        off, expected = w.copy(), w_true.copy()
        off[1:][np.diag_indices(4)] = 0
        expected[1:][np.diag_indices(4)] = 0
        rows = slice(None) if cross_terms else slice(0, 1)
        np.testing.assert_allclose(off[rows], expected[rows], atol=0.01, err_msg=f"{group} offsets and cross terms")


#: the pixels each kernel reads around floor(position), from the kernels' definitions
TAPS = {"keys": (-1, 0, 1, 2), "bicubic": (-1, 0, 1, 2), "lanczos3": tuple(range(-2, 4)),
        "lanczos4": tuple(range(-3, 5))}


def _independent_valid_patches(archive, pair, result, cfg):
    """Valid triplets recomputed with numpy from the generator's injected flags."""
    venus = archive.arrays[pair.venus.name]["XS"]
    s2 = archive.arrays[pair.s2.name]

    def invalid(arrays, bands):
        f = arrays.flags
        out = f["edge"] | f["cloud"] | f["shadow"]
        if 1 in cfg.masks.mg2_invalid_bits:
            out = out | f["water"]
        for b in bands:
            out = out | arrays.saturated[b]
        return out

    v_ok = ~invalid(venus, VENUS_BANDS_READ)
    left, top, width, height = result.stats["common_grid"]
    dx, dy = result.registration.shift_px

    def shifted_ok(arrays, bands, res, shift):
        ok = ~invalid(arrays, bands)
        t = arrays.transform
        c0 = int(round((left - t.c) / res))
        r0 = int(round((t.f - top) / res))
        h, w = height * 5 // int(res), width * 5 // int(res)
        out = np.ones((h, w), bool)
        rows, cols = np.arange(h) + r0, np.arange(w) + c0
        taps = []
        for d in shift:
            n = math.floor(d)
            taps.append([n + k for k in (TAPS[str(cfg.shift_kernel)] if d - n > 0 else (0,))])
        for ty in taps[1]:
            for tx in taps[0]:
                rr, cc = rows + ty, cols + tx
                inside = (rr[:, None] >= 0) & (rr[:, None] < ok.shape[0]) & (cc[None] >= 0) & (cc[None] < ok.shape[1])
                vals = ok[np.clip(rr, 0, ok.shape[0] - 1)][:, np.clip(cc, 0, ok.shape[1] - 1)]
                out &= inside & vals
        return out

    ok10 = shifted_ok(s2["R1"], ("B2", "B3", "B4", "B8"), 10.0, (dx, dy))
    ok20 = shifted_ok(s2["R2"], ("B5", "B6", "B7", "B8A"), 20.0, (dx / 2, dy / 2))
    valid = []
    nh, nw = height // PATCH, width // PATCH
    for i in range(nh):
        for j in range(nw):
            p5 = v_ok[i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH].all()
            p10 = ok10[i * PATCH // 2:(i + 1) * PATCH // 2, j * PATCH // 2:(j + 1) * PATCH // 2].all()
            p20 = ok20[i * PATCH // 4:(i + 1) * PATCH // 4, j * PATCH // 4:(j + 1) * PATCH // 4].all()
            if p5 and p10 and p20:
                valid.append(i * nw + j)
    return valid


@pytest.mark.parametrize("k", [0, 1, 2])
def test_kept_triplets_match_an_independent_count(archive, k):
    pair = _pairs(archive)[k]
    cfg = _cfg()
    result = process_pair(pair, cfg)
    expected = _independent_valid_patches(archive, pair, result, cfg)
    assert result.stats["patches_valid"] == len(expected) > 0
    assert set(result.patch_index) <= set(expected)
    s = result.stats
    # the counts of each rule, computed independently: the grid size, the cap on the draw, and the
    # outlier rule re-applied to what was kept (every kept patch passes it)
    assert s["patches_total"] == (pair_grid := _grid_patches(result, cfg)) and pair_grid > 0
    assert s["dropped_selection"] == max(0, len(expected) - cfg.selection.max_patches)
    n = s["patches_kept"]
    assert n + s["dropped_outlier"] == min(len(expected), cfg.selection.max_patches)
    low = mtf_downsample(result.v05_10.double(), band_sigmas_px(("B2", "B3", "B4", "B8"), 10.0), 2)
    rmse = (low - result.s2_10.double()).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert (rmse <= cfg.selection.outlier_rmse + 1e-4).all(), rmse.max()
    assert result.v05_10.shape == (n, 4, PATCH, PATCH) and result.s2_10.shape == (n, 4, PATCH // 2, PATCH // 2)
    assert result.v05_20.shape == (n, 4, PATCH, PATCH) and result.s2_20.shape == (n, 4, PATCH // 4, PATCH // 4)
    # valid pixels only: no no-data and no cloud brightness
    for t in (result.s2_10, result.s2_20):
        assert torch.isfinite(t).all() and (t > -0.05).all() and (t < 0.9).all()


def test_selection_cap_and_outlier_removal(archive):
    pair = _pairs(archive)[0]
    result = process_pair(pair, _cfg(selection=SelectionConfig(max_patches=5, outlier_rmse=0.02)))
    assert result.stats["patches_kept"] + result.stats["dropped_outlier"] == 5
    with pytest.raises(PairSkipped, match="every selected patch is an outlier"):
        process_pair(pair, _cfg(selection=SelectionConfig(max_patches=500, outlier_rmse=1e-6)))


@pytest.mark.parametrize("model", ["translation", "local"])
def test_the_smallest_patch_size_runs_to_finite_residuals(archive, model):
    """``patches.size_5m=16`` (the smallest the configuration accepts: 4 px at 20 m) used to crash in
    the residual measurement (an empty sample set, NaN, then an index out of bounds)."""
    cfg = PipelineConfig(patches=PatchConfig(16), radiometry=RadiometryConfig(min_pixels=200),
                         registration=RegistrationConfig(model=model))
    result = process_pair(_pairs(archive)[1], cfg)
    assert result.stats["patches_kept"] > 100
    assert all(np.isfinite(result.patches[k].numpy()).all() for k in ("res10_dx_m", "res20_dy_m", "local_dx_m"))


def test_a_field_beyond_local_max_field_m_is_not_applied(archive):
    """``local_max_field_m`` bounds the field a patch may take, on the VENuS grid too (where the read
    margin, sized by the registration's reach as well, would hold more): at 0 no patch is moved by a
    field nor claims it."""
    cfg = _cfg(registration=RegistrationConfig(model="local", local_max_field_m=0.0))
    result = process_pair(_pairs(archive)[1], cfg)
    assert result.stats["patches_kept"] > 0 and not result.patches["local_trusted"].any()
    assert not result.patches["local_dx_m"].any() and not result.patches["local_patch_dx_m"].any()


def test_fully_cloudy_pair_is_skipped(tiny_archive):
    pair = [p for p in find_pairs(find_products(tiny_archive.root), "SYNTH-1") if p.date == "2018-07-12"][0]
    with pytest.raises(PairSkipped, match="no valid VENuS pixel"):
        process_pair(pair, _cfg())


def test_same_seed_same_patches(archive):
    pair = _pairs(archive)[2]
    a = process_pair(pair, _cfg(selection=SelectionConfig(max_patches=5)))
    b = process_pair(pair, _cfg(selection=SelectionConfig(max_patches=5)))
    c = process_pair(pair, _cfg(selection=SelectionConfig(max_patches=5), seed=7))
    assert a.stats["patches_valid"] > 5
    assert a.patch_index == b.patch_index and a.patch_index != c.patch_index
    for name in ("v05_10", "s2_10", "v05_20", "s2_20"):  # one process, one thread count: the same operations
        assert torch.equal(getattr(a, name), getattr(b, name))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_agree(archive):
    pair = _pairs(archive)[1]
    cpu = process_pair(pair, _cfg(), device="cpu")
    gpu = process_pair(pair, _cfg(), device="cuda")
    assert math.hypot(cpu.registration.shift_m[0] - gpu.registration.shift_m[0],
                      cpu.registration.shift_m[1] - gpu.registration.shift_m[1]) < 0.05
    assert cpu.patch_index == gpu.patch_index
    torch.testing.assert_close(gpu.w_10.cpu(), cpu.w_10, atol=1e-4, rtol=0)
    for name in ("v05_10", "s2_10", "v05_20", "s2_20"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), atol=2e-4, rtol=0)


@pytest.mark.parametrize("s2_epsg, origin", [
    (32630, [280000.0, 4830000.0]),  # Sentinel-2 tile in the neighbouring UTM zone: reprojected
    (None, [360005.0, 4830005.0]),  # same zone, VENuS grid half a 10 m pixel off the tile grid: resampled
])
def test_sentinel2_on_another_grid_is_resampled_onto_venus(tmp_path, s2_epsg, origin):
    date = SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[4.0, -6.0], venus_cloud=0.0, s2_cloud=0.0)
    generate(SyntheticConfig(size_px=384, dates=[date], s2_epsg=s2_epsg, origin=origin, s2_margin_m=300.0),
             tmp_path)
    pair = find_pairs(find_products(tmp_path), "SYNTH-1")[0]
    result = process_pair(pair, _cfg())
    dx, dy = result.registration.shift_m
    assert math.hypot(dx - 4.0, dy + 6.0) < 1.0
    assert result.stats["patches_kept"] >= 20 and result.crs.to_epsg() == 32631
    # the local model resamples the raw window again, patch by patch (no field here: same patches,
    # within the resampling of a field that is zero to a few hundredths of a pixel)
    cfg = _cfg()
    cfg.registration.model = "local"
    local = process_pair(pair, cfg)
    assert local.registration.mode.endswith("+local") and local.patches["local_trusted"].all()
    assert local.patch_index == result.patch_index
    field = np.hypot(local.patches["local_dx_m"].numpy(), local.patches["local_dy_m"].numpy())
    assert np.median(field) < 0.3
