"""The local registration model: a smooth field measured on tiles, each patch resampled once at the
global shift plus the field; judged against an estimator independent of the pipeline (scipy)."""

import numpy as np
import pytest
import torch

from s2v_gpu.local import resample_patches
from s2v_gpu.pairing import find_pairs
from s2v_gpu.pipeline import PipelineConfig, process_pair
from s2v_gpu.products import find_products
from s2v_gpu.radiometry import RadiometryConfig
from s2v_gpu.registration import RegistrationConfig
from s2v_gpu.resample import apply_shift
from s2v_gpu.synthetic import SyntheticConfig, SyntheticDate, generate
from s2v_gpu.synthetic.distortion import distortion_preset

from .test_output_alignment import residual_m
from .tolerances import assert_reordered_close, assert_tolerance_catches, reorder_tolerance

GROUPS = (("v05_10", "s2_10", 2, ("B2", "B3", "B4", "B8"), 10.0),
          ("v05_20", "s2_20", 4, ("B5", "B6", "B7", "B8A"), 20.0))


def _independent(result) -> dict[int, np.ndarray]:
    """|residual| (metres) of every output patch, per group, by the scipy estimator."""
    out = {}
    for vname, sname, factor, bands, res in GROUPS:
        d = residual_m(getattr(result, vname).double().numpy(), getattr(result, sname).double().numpy(), factor,
                       bands, res)
        out[factor] = np.hypot(*d.T)
    return out


def _run(root, model):
    pair = find_pairs(find_products(root), "SYNTH-1")[0]
    return process_pair(pair, PipelineConfig(radiometry=RadiometryConfig(min_pixels=200),
                                             registration=RegistrationConfig(model=model)))


def test_a_constant_field_resamples_as_the_global_shift(device):
    g = torch.Generator().manual_seed(4)
    raw = torch.rand(3, 64 + 2 * 8, 96 + 2 * 8, generator=g, dtype=torch.float64).to(device)
    valid = torch.ones(raw.shape[1:], dtype=torch.bool, device=device)
    shift = (0.37, -1.21)
    ref, _ = apply_shift(raw[None], valid[None], shift, "lanczos4")
    ids = torch.tensor([0, 2, 4], device=device)  # 32 px patches of a 64 x 96 grid
    disp = torch.tensor(shift, dtype=torch.float64, device=device).view(1, 2, 1, 1).expand(3, 2, 32, 32)
    out, ok = resample_patches(raw, valid, 8, 32, ids, disp, "lanczos4")
    assert ok.all()
    for k, i in enumerate(ids.tolist()):
        r, c = (i // 3) * 32 + 8, (i % 3) * 32 + 8
        torch.testing.assert_close(out[k], ref[0, :, r:r + 32, c:c + 32], atol=1e-9, rtol=0)


def test_float32_patches_read_their_weights_from_the_table_as_the_exact_kernel(device):
    """float32 positions take the kernel's weights from a table of 16384 fractions per pixel; float64
    ones evaluate the kernel: a smooth field of up to 3 px over white noise in [0, 1) gives the same
    patches to 1e-4 (a position rounded by at most 1/32768 px where the interpolant of white noise
    changes by up to ~3 per pixel), 1e-5 on average."""
    g = torch.Generator().manual_seed(7)
    raw = torch.rand(2, 64 + 2 * 8, 64 + 2 * 8, generator=g, dtype=torch.float64).to(device)
    valid = torch.ones(raw.shape[1:], dtype=torch.bool, device=device)
    along = torch.linspace(0, 1, 32, dtype=torch.float64)
    yy, xx = torch.meshgrid(along, along, indexing="ij")
    disp = torch.stack([-1.3 + 3.0 * xx * yy, 0.4 - 2.1 * xx]).to(device)[None].expand(4, 2, 32, 32)
    ids = torch.arange(4, device=device)
    exact, ok64 = resample_patches(raw, valid, 8, 32, ids, disp, "lanczos4")
    table, ok32 = resample_patches(raw.float(), valid, 8, 32, ids, disp.float(), "lanczos4")
    assert ok64.all() and ok32.all() and table.dtype == torch.float32
    error = (table.double() - exact).abs()
    assert error.max() < 1e-4 and error.mean() < 1e-5


@pytest.fixture(scope="module")
def hilly(tmp_path_factory):
    root = tmp_path_factory.mktemp("hilly")
    date = SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[2.5, -7.5], venus_cloud=0.0, s2_cloud=0.0)
    generate(SyntheticConfig(size_px=1024, dates=[date], s2_margin_m=300.0, seed=3,
                             distortion=distortion_preset("hilly", zenith_deg=28.0, canopy_height_m=0.0)), root)
    return root


@pytest.mark.slow
def test_local_model_removes_what_the_translation_leaves_on_a_hilly_site(hilly):
    translation, local = _run(hilly, "translation"), _run(hilly, "local")
    before, after = _independent(translation), _independent(local)
    assert np.quantile(before[2], 0.95) > 3.0  # a global translation leaves metres here
    for factor in (2, 4):
        assert np.median(after[factor]) <= 0.5 and np.quantile(after[factor], 0.95) <= 1.0, (factor, after[factor])
    assert local.registration.mode.endswith("+local") and local.patches["local_trusted"].all()
    # the pipeline's own per-patch measurement says the same
    own = np.hypot(local.patches["res10_dx_m"].numpy(), local.patches["res10_dy_m"].numpy())
    assert np.median(own) <= 0.5
    assert local.stats["res10_median_m"] < translation.stats["res10_median_m"] / 2


@pytest.mark.slow
def test_each_patch_keeps_its_measured_position_under_canopy(tmp_path):
    """Hilly site with 15 m of forest canopy the DEM misses (VENuS at 28 deg: 8 m of parallax over
    single fields): the smooth field alone leaves 0.62 m (median, 10 m group); with each patch's own
    residual translation setting the field's mean over it, the independent estimator finds <= 0.5 m
    median and <= 1 m 95th percentile in both groups (0.19 / 0.58 and 0.28 / 0.61 m measured)."""
    date = SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[2.5, -7.5], venus_cloud=0.0, s2_cloud=0.0)
    generate(SyntheticConfig(size_px=1024, dates=[date], s2_margin_m=300.0, seed=3,
                             distortion=distortion_preset("hilly", zenith_deg=28.0)), tmp_path)
    local = _run(tmp_path, "local")
    after = _independent(local)
    for factor in (2, 4):
        assert np.median(after[factor]) <= 0.5 and np.quantile(after[factor], 0.95) <= 1.0, (factor, after[factor])
    own = np.hypot(local.patches["local_patch_dx_m"].numpy(), local.patches["local_patch_dy_m"].numpy())
    assert (own > 0).any() and own.max() <= 0.5 * 10.0  # within local_max_disagreement_px of the field
    cfg = PipelineConfig(radiometry=RadiometryConfig(min_pixels=200),
                         registration=RegistrationConfig(model="local", local_per_patch=False))
    field_only = process_pair(find_pairs(find_products(tmp_path), "SYNTH-1")[0], cfg)
    assert np.median(_independent(field_only)[2]) > np.median(after[2]) + 0.2  # what the per-patch step adds
    assert not field_only.patches["local_patch_dx_m"].any()


@pytest.mark.slow
def test_local_model_off_the_venus_grid(tmp_path):
    """Sentinel-2 tile in the neighbouring UTM zone (30 N, site in 31 N) over a hilly site with
    canopy: the field is applied to the raw window around the shifted grid, mapped by the
    reprojection's Jacobian, in the same single resampling (measured: translation 4.23 / 6.96 m,
    local 0.29 / 0.72 m median / p95 in the 10 m group, 0.24 / 0.90 m at 20 m)."""
    date = SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[2.5, -7.5], venus_cloud=0.0, s2_cloud=0.0)
    generate(SyntheticConfig(size_px=1024, dates=[date], s2_margin_m=300.0, seed=3, s2_epsg=32630,
                             origin=[280000.0, 4830000.0], distortion=distortion_preset("hilly", zenith_deg=28.0)),
             tmp_path)
    translation, local = _run(tmp_path, "translation"), _run(tmp_path, "local")
    assert np.quantile(_independent(translation)[2], 0.95) > 3.0
    after = _independent(local)
    for factor in (2, 4):
        assert np.median(after[factor]) <= 0.5 and np.quantile(after[factor], 0.95) <= 1.0, (factor, after[factor])
    assert local.registration.mode.endswith("+local") and local.patches["local_trusted"].all()
    assert local.crs.to_epsg() == 32631 and len(local.patch_index) >= 8


@pytest.mark.slow
def test_local_model_is_no_worse_on_a_global_shift(tmp_path):
    date = SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[-3.3, 1.7], venus_cloud=0.0, s2_cloud=0.0)
    generate(SyntheticConfig(size_px=768, dates=[date], s2_margin_m=300.0, seed=5), tmp_path)
    before, after = _independent(_run(tmp_path, "translation")), _independent(_run(tmp_path, "local"))
    for factor in (2, 4):
        assert np.median(after[factor]) <= np.median(before[factor]) + 0.05, (factor, before, after)


@pytest.mark.slow
def test_local_field_on_the_real_pair_agrees_with_arosics_at_both_places(real_data):
    """AROSICS publishes the shift of the real T33UUU pair at two places 21 km apart (it reports the
    correction, the opposite sign): the global shift plus the local field agrees with both within
    0.15 px, closer than the global shift alone where the two places differ."""
    import rasterio
    from rasterio.windows import from_bounds

    from s2v_gpu.local import robust_field, sigma_for, tile_measurements
    from s2v_gpu.registration import register

    bounds = (336000.0, 5837000.0, 354000.0, 5859000.0)
    images = []
    for name in ("ref_S2A_20160608T153121_T33UUU_sub.jp2", "tgt_S2A_20160529T153631_T33UUU_sub.jp2"):
        with rasterio.open(real_data / "s2_pair_t33uuu" / name) as src:
            images.append(torch.from_numpy(src.read(1, window=from_bounds(*bounds, src.transform)).astype(np.float32)))
    ref, tgt = images
    rc = RegistrationConfig(max_distance_m=40.0)
    r = register(ref / 10000, tgt / 10000, ref > 0, tgt > 0, pixel_size=10.0, config=rc)
    assert r.ok, r.reason
    moved, ok = apply_shift((tgt / 10000)[None, None], (tgt > 0)[None], r.shift_px)
    tiles = tile_measurements(ref / 10000, moved[0, 0], ref > 0, ok[0, 0], rc.local_tile_px)
    field = robust_field(*tiles[:3], sigma_for(rc.local_tile_px, rc.local_smoothing_tiles),
                         rc.local_max_disagreement_px, rc.local_tile_px)
    for (x, y), arosics in (((339611.0, 5856426.0), (7.19, 18.90)), ((353810.0, 5840516.0), (6.56, 16.80))):
        at = torch.tensor([[(x - bounds[0]) / 10 - 0.5, (bounds[3] - y) / 10 - 0.5]], dtype=torch.float64)
        extra, support = field.at(at)
        total = np.array([r.shift_m[0] + 10 * extra[0, 0].item(), r.shift_m[1] - 10 * extra[0, 1].item()])
        assert support.item() > 1.0
        assert np.abs(total - arosics).max() < 1.5, (total, arosics)
    # where the two places differ (1.1 m east, 2.1 m north), the field moves the second towards AROSICS
    assert abs(total[1] - 16.80) < abs(r.shift_m[1] - 16.80) - 0.5


def test_lattice_sums_are_the_kernel_average_over_every_tile():
    """The field's kernel sums run as separable convolutions of the tile lattice: equal (1e-9 px) to
    the direct (tiles x points) Nadaraya-Watson average, leave-one-out rejection included."""
    from s2v_gpu.local import LocalField, robust_field

    gen = torch.Generator().manual_seed(3)
    tile, nh, nw = 32, 9, 12
    keep = torch.rand(nh * nw, generator=gen) > 0.25  # missing tiles (clouds, edges)
    idx = torch.nonzero(keep).flatten()
    centres = torch.stack([(idx % nw + 0.5) * tile - 0.5, (idx // nw + 0.5) * tile - 0.5], 1).double()
    shifts = torch.randn(idx.numel(), 2, generator=gen, dtype=torch.float64) * 0.3
    shifts[5] += 3.0  # an outlier its neighbours reject
    texture = torch.rand(idx.numel(), generator=gen, dtype=torch.float64) + 0.1
    sigma = 0.5 * tile
    field = robust_field(centres, shifts, texture, sigma, 0.5, tile)
    # the direct leave-one-out, twice, as a reference
    weights = texture.clone()
    for _ in range(2):
        k = torch.exp(-((centres[:, None] - centres[None]) ** 2).sum(-1) / (2 * sigma**2)) * weights[None]
        k.fill_diagonal_(0)
        neighbours = (k @ shifts) / k.sum(1).clamp_min(1e-12)[:, None]
        weights = torch.where((shifts - neighbours).norm(dim=1) <= 0.5, texture, torch.zeros_like(texture))
    assert torch.equal(field.weights > 0, weights > 0) and field.weights[5] == 0
    ys, xs = torch.meshgrid((torch.arange(nh) + 0.5) * tile - 0.5, (torch.arange(nw) + 0.5) * tile - 0.5,
                            indexing="ij")
    direct, support = field.at(torch.stack([xs.flatten(), ys.flatten()], 1).double())
    lattice, lattice_support = field.on_lattice(nh, nw)
    torch.testing.assert_close(lattice.flatten(1).T, direct, atol=1e-9, rtol=0)
    torch.testing.assert_close(lattice_support.flatten(), support, atol=1e-9, rtol=0)
    assert isinstance(field, LocalField) and field.tile_px == tile


@pytest.mark.parametrize("h, w, tile, size", [(300, 410, 32, 64), (250, 250, 48, 40), (130, 200, 16, 8)])
def test_field_at_patches_is_the_upsampled_lattice_cut(h, w, tile, size):
    """The field on the patches' pixels equals the whole lattice upsampled by ``F.interpolate``
    (bilinear, edge values past the lattice) and cut, to float32 rounding: power-of-two tiles or not,
    patches past the lattice's last node included."""
    import torch.nn.functional as F

    from s2v_gpu.local import LocalField, field_at_patches
    from s2v_gpu.patches import take_patches

    g = torch.Generator().manual_seed(1)
    nh, nw = h // tile, w // tile
    rr, cc = torch.meshgrid(torch.arange(nh), torch.arange(nw), indexing="ij")
    centres = torch.stack([(cc.flatten() + 0.5) * tile - 0.5, (rr.flatten() + 0.5) * tile - 0.5], 1).double()
    keep = torch.rand(centres.shape[0], generator=g) > 0.3
    k = int(keep.sum())
    field = LocalField(centres[keep], torch.randn(k, 2, generator=g, dtype=torch.float64),
                       torch.rand(k, generator=g, dtype=torch.float64), 0.5 * tile, tile)
    values, support = field.on_lattice(nh, nw)
    lattice = torch.cat([values, support[None]]).float()[None]
    up = F.interpolate(lattice, size=(nh * tile, nw * tile), mode="bilinear", align_corners=False)
    up = F.pad(up, (0, w - nw * tile, 0, h - nh * tile), mode="replicate")[0]
    ids = torch.arange((h // size) * (w // size))
    f, s = field_at_patches(field, h, w, ids, size)
    # two float32 bilinear interpolations that compute their weights and sums in another order: a
    # few roundings of values up to max|lattice| (1.5e-6 seen without vector instructions, at |v| ~ 4)
    tolerance = reorder_tolerance(torch.float32, 8, lattice.abs().max().item())
    assert_reordered_close(f, take_patches(up[:2], size, ids), tolerance)
    assert_reordered_close(s, take_patches(up[2:], size, ids)[:, 0], tolerance)
    assert_tolerance_catches(f, take_patches(up[:2].roll(1, -1), size, ids), tolerance)  # a pixel off
