"""Per-patch residual misregistration: the batched estimator against known translations of real
texture, against the ground truth of synthetic sites with local distortions, recorded per patch,
and the filter users can sweep."""

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from s2v_gpu.pairing import find_pairs
from s2v_gpu.pipeline import PipelineConfig, process_pair
from s2v_gpu.products import find_products
from s2v_gpu.radiometry import RadiometryConfig
from s2v_gpu.residuals import patch_residuals, to_metres
from s2v_gpu.synthetic import SyntheticConfig, SyntheticDate, generate
from s2v_gpu.synthetic.distortion import DISPLACEMENT_FILE, distortion_preset

from .test_run import TINY, compose_cfg


@pytest.fixture(scope="module")
def shifted_real_patches(real_data):
    """40 patches of real L2A texture (4 bands, 128 px), each moved by a known sub-pixel translation
    with a quintic spline (scipy), noise added: ``(s, f, r_true)``."""
    from scipy import ndimage

    with rasterio.open(next((real_data / "s2_stacks_t38kpd").glob("*_FRE_STACK.tif"))) as src:
        img = src.read([1, 2, 3, 7]).astype(np.float64) / 10000
    rng = np.random.default_rng(0)
    s, f, truth = [], [], []
    for _ in range(40):
        r = rng.uniform(-0.8, 0.8, 2)
        i0, j0 = rng.integers(10, 110, 2)
        crop = img[:, i0:i0 + 128, j0:j0 + 128]
        # s(p) = f(p - r): a feature at q in f is at q + r in s
        moved = np.stack([ndimage.shift(b, (r[1], r[0]), order=5, mode="mirror") for b in crop])
        f.append(crop)
        s.append(moved + rng.normal(0, 0.002, moved.shape))
        truth.append(r)
    return torch.tensor(np.array(s)), torch.tensor(np.array(f)), np.array(truth)


def test_known_translations_of_real_texture_are_measured_to_a_hundredth_of_a_pixel(shifted_real_patches, device):
    s, f, truth = shifted_real_patches
    out = patch_residuals(s.float().to(device), f.float().to(device))
    err = np.abs(out["r"].cpu().numpy() - truth)
    assert np.median(err) < 0.01 and err.max() < 0.03, (np.median(err), err.max())
    assert out["converged"].all() and (out["texture"] > 0).all() and (out["rmse"] < 0.01).all()


@pytest.mark.parametrize("shape", [(5, 40, 40), (2, 3, 3), (1, 7, 5)])
def test_values_and_central_differences_with_zero_borders(shape, device):
    """The estimator's samples: the values, then (f(x+1) - f(x-1)) / 2 along x and y, exactly 0 on the
    first and last column (x) or row (y), where no central difference exists (written in place, the
    borders zeroed alone: the bits of the zero-filled subtraction, -0.0 and halves included)."""
    from s2v_gpu.residuals import _with_gradients

    g = torch.Generator().manual_seed(5)
    x = (torch.randint(-5, 6, shape, generator=g).double() * 0.5).to(device)  # ties, zeros, negatives
    got = _with_gradients(x)
    want = torch.zeros((shape[0], 3) + shape[1:], dtype=x.dtype, device=device)
    want[:, 0] = x
    want[:, 1, :, 1:-1] = (x[:, :, 2:] - x[:, :, :-2]) / 2
    want[:, 2, 1:-1] = (x[:, 2:] - x[:, :-2]) / 2
    # bit for bit, signs of zeros too: halves of small integers, so every difference and halving is exact
    assert torch.equal(got.view(torch.int64), want.view(torch.int64))
    assert (got[:, 1, :, [0, -1]] == 0).all() and (got[:, 2, [0, -1]] == 0).all()


def test_metres_follow_the_convention():
    m = to_metres(torch.tensor([[0.5, -0.25]]), 10.0)
    assert m.tolist() == [[5.0, 2.5]]  # x right = east, y down = south


@pytest.fixture(scope="module")
def distorted_site(tmp_path_factory):
    """A hilly site (VENuS zenith 28 degrees): parallax of a smooth DEM error of 12 m."""
    dates = [SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[2.5, -7.5], venus_cloud=0.0, s2_cloud=0.0)]
    root = tmp_path_factory.mktemp("distorted")
    generate(SyntheticConfig(size_px=1024, dates=dates, s2_margin_m=300.0, seed=3,
                             distortion=distortion_preset("hilly", zenith_deg=28.0, canopy_height_m=0.0,
                                                          dem_error_scale_m=8000.0)), root)
    return root


def _weighted_truth(root, result, shift_m) -> np.ndarray:
    """The ground-truth residual of each patch (metres): the global shift minus the estimate minus the
    VENuS displacement, averaged over the patch with the weights a least-squares translation gives it
    (the structure tensor of the Sentinel-2 patch; scipy and numpy only)."""
    from scipy import ndimage

    with rasterio.open(root / DISPLACEMENT_FILE) as src:
        field, t = src.read().astype(np.float64), src.transform
    out = []
    for (left, _, _, top), patch in zip(result.bounds, result.s2_10.double().numpy()):
        n = patch.shape[-1]
        x, y = np.meshgrid(left + (np.arange(n) + 0.5) * 10, top - (np.arange(n) + 0.5) * 10)
        rc = [(t.f - y) / 20 - 0.5, (x - t.c) / 20 - 0.5]
        de, dn = (ndimage.map_coordinates(field[i], rc, order=1, mode="nearest") for i in range(2))
        gy, gx = np.gradient(patch.sum(0))
        a = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]])
        b = [np.sum(gx * gx * de - gx * gy * dn), np.sum(gx * gy * de - gy * gy * dn)]  # rows go south
        d = np.linalg.solve(a, b)
        out.append([d[0], -d[1]])
    return np.asarray(shift_m) - np.asarray(result.registration.shift_m) - np.array(out)


@pytest.mark.slow
def test_measured_residuals_agree_with_the_ground_truth_of_a_distorted_site(distorted_site):
    pair = find_pairs(find_products(distorted_site), "SYNTH-1")[0]
    truth = json.loads((distorted_site / "ground_truth.json").read_text())
    assert truth["distortion"]["preset"] == "hilly" and truth["distortion"]["p95_m"] > 5
    r = process_pair(pair, PipelineConfig(radiometry=RadiometryConfig(min_pixels=200)))
    expected = _weighted_truth(distorted_site, r, truth["dates"][0]["shift_m"])
    assert np.median(np.hypot(*expected.T)) > 2.0  # a global translation leaves metres here
    for group in ("res10", "res20"):
        measured = np.stack([r.patches[f"{group}_dx_m"].numpy(), r.patches[f"{group}_dy_m"].numpy()], 1)
        err = np.hypot(*(measured - expected).T)
        assert np.median(err) <= 0.3, (group, err)
    assert r.stats["res10_median_m"] > 2.0 and r.stats["res10_p95_m"] >= r.stats["res10_median_m"]


def test_residuals_are_recorded_per_patch_and_filter_the_patches(tiny_archive, tmp_path):
    from s2v_gpu.run import execute

    base = ["data=theia", f"paths.products={tiny_archive.root}", *TINY]
    execute(compose_cfg([*base, f"paths.dataset={tmp_path / 'all'}"]))
    site = tmp_path / "all" / "SYNTH-1"
    table = pd.read_csv(site / "patches.tsv", sep="\t")
    index = pd.read_csv(site / "index.csv", sep="\t")
    assert len(table) == index["nb_patches"].sum()
    import fiona

    for _, row in index.iterrows():
        with fiona.open(site / row["patches_gpkg"]) as src:
            props = [dict(f["properties"]) for f in src]
        rows = table[table["pair_id"] == row["patches_gpkg"][: -len("_patches.gpkg")]]
        assert [p["res10_dx_m"] for p in props] == pytest.approx(list(rows["res10_dx_m"]), abs=1e-4)
    mag = np.hypot(table["res10_dx_m"], table["res10_dy_m"])
    limit = float(np.quantile(mag, 0.75))
    summary = execute(compose_cfg([*base, f"paths.dataset={tmp_path / 'filtered'}",
                                   f"pipeline.selection.max_residual_m={limit}"]))
    kept = pd.read_csv(tmp_path / "filtered" / "SYNTH-1" / "patches.tsv", sep="\t")
    assert 0 < len(kept) < len(table) and summary["patches_in_dataset"] == len(kept)
    assert (np.hypot(kept["res10_dx_m"], kept["res10_dy_m"]) <= limit + 1e-3).all()
    assert (np.hypot(kept["res20_dx_m"], kept["res20_dy_m"]) <= limit + 1e-3).all()
    details = pd.read_csv(tmp_path / "filtered" / "SYNTH-1" / "pairs_details.tsv", sep="\t")
    for _, row in details.iterrows():  # every patch of a written pair: kept, or dropped by the filter
        before = (table["pair_id"] == row["pair_id"]).sum()
        assert row["patches_kept"] + row["dropped_residual"] == before
    assert details["dropped_residual"].sum() > 0


@pytest.mark.slow
def test_measured_residuals_agree_with_the_ground_truth_of_an_urban_site(tmp_path):
    """The urban preset (4 m DEM error, 25 m buildings, canopy; VENuS zenith 28 degrees): displacement
    block by block. The 10 m group against the same truth as the hilly site's (the 20 m group's truth
    depends on which structure tensor weights it: 0.22 m with the 20 m patches', 0.33 m with the 10 m
    ones, so it is not asserted here)."""
    dates = [SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[2.5, -7.5], venus_cloud=0.0, s2_cloud=0.0)]
    generate(SyntheticConfig(size_px=1024, dates=dates, s2_margin_m=300.0, seed=3,
                             distortion=distortion_preset("urban", zenith_deg=28.0)), tmp_path)
    pair = find_pairs(find_products(tmp_path), "SYNTH-1")[0]
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    r = process_pair(pair, PipelineConfig(radiometry=RadiometryConfig(min_pixels=200)))
    expected = _weighted_truth(tmp_path, r, truth["dates"][0]["shift_m"])
    assert np.median(np.hypot(*expected.T)) > 0.3  # the translation leaves something to measure
    measured = np.stack([r.patches["res10_dx_m"].numpy(), r.patches["res10_dy_m"].numpy()], 1)
    err = np.hypot(*(measured - expected).T)
    assert np.median(err) <= 0.3, err


@pytest.mark.parametrize("side", [4, 5, 8])
def test_the_smallest_patches_and_flat_ones_give_finite_residuals(side):
    """``size_5m=16`` makes 4 px patches at 20 m (the estimator's border left no sample: NaN, then a
    crash in the warp); a flat pair of patches constrains nothing. Both give finite numbers, the flat
    ones no texture and no shift."""
    from s2v_gpu.residuals import patch_residuals

    g = torch.Generator().manual_seed(3)
    f = torch.rand(6, 4, side, side, generator=g)
    s = torch.roll(f, 1, dims=3)
    f[:3], s[:3] = 0.2, 0.2  # flat
    m = patch_residuals(s, f)
    assert all(bool(torch.isfinite(v).all()) for v in (m["r"], m["texture"], m["rmse"]))
    assert (m["texture"][:3] == 0).all() and (m["r"][:3] == 0).all() and (m["texture"][3:] > 0).all()
