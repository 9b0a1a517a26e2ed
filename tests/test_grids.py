"""The common grid of a pair and its nested grids, on hand-made footprints with known answers."""

import pytest
import torch
from affine import Affine
from rasterio.crs import CRS

from s2v_gpu.grids import CommonGrid, common_grid, is_aligned, source_window, translated
from s2v_gpu.pairing import find_pairs
from s2v_gpu.products import TheiaProduct, find_products
from s2v_gpu.products.product import Grid
from s2v_gpu.synthetic import SyntheticConfig, SyntheticDate, generate

UTM31 = CRS.from_epsg(32631)


def _grid(left, top, res, w, h, crs=UTM31):
    return Grid(crs, Affine(res, 0.0, left, 0.0, -res, top), w, h)


def test_intersection_snapped_to_whole_20m_cells_of_the_venus_grid():
    venus = _grid(300000.0, 5000000.0, 5.0, 2000, 2000)  # 10 km square
    s2 = _grid(304013.0, 4996987.0, 10.0, 2000, 2000)  # starts inside, off the 20 m cells
    g = common_grid(venus, s2)
    # left edge rounded up to the next 20 m cell of the VENuS grid, top edge down to one
    assert (g.left - venus.transform.c) % 20.0 == 0 and g.left >= 304013.0 and g.left - 304013.0 < 20.0
    assert (venus.transform.f - g.top) % 20.0 == 0 and g.top <= 4996987.0 and 4996987.0 - g.top < 20.0
    right, bottom = g.left + 5.0 * g.width, g.top - 5.0 * g.height
    assert right <= 310000.0 and bottom >= 4990000.0  # inside both footprints
    assert g.width % 4 == 0 and g.height % 4 == 0
    assert 310000.0 - right < 20.0 and bottom - 4990000.0 < 20.0  # and as large as the cells allow


def test_nested_grids_share_the_footprint():
    g = CommonGrid(UTM31, 300000.0, 5000000.0, 400, 200)
    for res, factor in ((5.0, 1), (10.0, 2), (20.0, 4)):
        sub = g.at(res)
        assert (sub.width, sub.height) == (400 // factor, 200 // factor) and sub.res == res
        assert sub.bounds == g.bounds
    e = g.expanded(10.0, 3)
    assert (e.width, e.height) == (206, 106)
    assert e.bounds == (300000.0 - 30, 5000000.0 - 1000 - 30, 302000.0 + 30, 5000000.0 + 30)


def test_no_overlap_or_too_small_gives_none():
    venus = _grid(300000.0, 5000000.0, 5.0, 200, 200)
    assert common_grid(venus, _grid(400000.0, 5000000.0, 10.0, 100, 100)) is None
    touching = _grid(300990.0, 5000000.0, 10.0, 100, 100)  # 10 m of overlap: less than one 20 m cell
    assert common_grid(venus, touching) is None
    assert common_grid(venus, _grid(300000.0, 5000000.0, 10.0, 100, 100), min_size_px=256) is None


def test_sentinel2_in_another_utm_zone_is_intersected_in_the_venus_crs():
    venus = _grid(300000.0, 5000000.0, 5.0, 2000, 2000)
    # the same area in the neighbouring zone (31N -> 30N): EPSG:32630 coordinates of a large window
    s2 = _grid(760000.0, 5020000.0, 10.0, 8000, 8000, CRS.from_epsg(32630))
    g = common_grid(venus, s2)
    assert g is not None and g.crs == UTM31
    assert g.width > 0 and (g.left - 300000.0) % 20.0 == 0


@pytest.mark.parametrize("dx, dy, aligned", [(0.0, 0.0, True), (20.0, -30.0, True), (5.0, 0.0, False),
                                             (0.0, 0.001, False)])
def test_alignment_and_translation(dx, dy, aligned):
    base = _grid(300000.0, 5000000.0, 10.0, 100, 100)
    moved = translated(base, dx, dy)
    assert moved.transform.c == base.transform.c + dx and moved.transform.f == base.transform.f + dy
    assert is_aligned(base, moved) is aligned
    assert not is_aligned(base, _grid(300000.0, 5000000.0, 20.0, 50, 50))
    assert not is_aligned(base, _grid(300000.0, 5000000.0, 10.0, 100, 100, CRS.from_epsg(32630)))


@pytest.fixture(scope="module")
def other_zone(tmp_path_factory):
    """A tiny archive whose Sentinel-2 tile is in the neighbouring UTM zone (30 N, the site in 31 N)."""
    root = tmp_path_factory.mktemp("zone30")
    date = SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=[0.0, 0.0], venus_cloud=0.0, s2_cloud=0.0)
    generate(SyntheticConfig(size_px=256, dates=[date], s2_epsg=32630, origin=[280000.0, 4830000.0],
                             s2_margin_m=200.0), root)
    return TheiaProduct(find_pairs(find_products(root), "SYNTH-1")[0].s2)


@pytest.mark.parametrize("dx, dy", [(0.0, 0.0), (1.3, -2.6), (-3.45, 0.8)])
def test_patches_of_a_reprojected_window_move_as_the_translated_grid(other_zone, dx, dy):
    """Off the VENuS grid the local model resamples patches from the raw window at extra
    displacements mapped by the reprojection's Jacobian: a constant displacement (target pixels)
    gives what reading the grid translated by as many metres gives (the mapping is affine to far
    below 1e-3 px over a patch): equal to 1e-5 (float32 sums; the values are ~0.1)."""
    target = _grid(280000.0 + 200.0, 4830000.0 - 200.0, 10.0, 64, 64)
    win = source_window(other_zone, ("B2", "B4"), target, pad_px=5, kernel="keys")
    ids = torch.tensor([0, 3])  # 32 px patches of the 64 x 64 grid: top left, bottom right
    disp = torch.tensor([dx, dy], dtype=torch.float64).view(1, 2, 1, 1).expand(2, 2, 32, 32)
    out, ok = win.sample_patches(win.stack.reflectance, ids, 32, disp, "keys")
    moved = source_window(other_zone, ("B2", "B4"), translated(target, dx * 10.0, -dy * 10.0),
                          kernel="keys").sample("keys")
    assert out.shape == (2, 2, 32, 32)
    for k, (rows, cols) in enumerate([(slice(0, 32), slice(0, 32)), (slice(32, 64), slice(32, 64))]):
        m = moved.valid[rows, cols]  # a few pixels of the synthetic tile are flagged (water, saturation)
        assert bool(ok[k]) == bool(m.all()) and m.float().mean() > 0.8
        torch.testing.assert_close(out[k][:, m], moved.reflectance[:, rows, cols][:, m], atol=1e-5, rtol=0)
    still = win.sample("keys")
    assert (out[0] - still.reflectance[:, :32, :32]).abs().max() > 1e-3 or dx == dy == 0.0
