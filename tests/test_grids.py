"""The common grid of a pair and its nested grids, on hand-made footprints with known answers."""

import pytest
from affine import Affine
from rasterio.crs import CRS

from s2v_gpu.grids import CommonGrid, common_grid, is_aligned, translated
from s2v_gpu.products.product import Grid

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
