"""The synthetic products carry the ground truth they claim."""

import pytest
import torch
import torch.nn.functional as F

from s2v_gpu.products import TheiaProduct, find_products
from s2v_gpu.synthetic import SyntheticConfig, SyntheticDate, generate


def _one_date(**kw):
    date = SyntheticDate("2019-05-01", dt_minutes=3.0, shift_m=kw.pop("shift", [0.0, 0.0]),
                         venus_cloud=0.0, s2_cloud=0.0)
    return SyntheticConfig(size_px=192, s2_margin_m=100.0, dates=[date], noise_std=0.0, saturated_fraction=0.0,
                           venus_edge_fraction=0.0, keep_arrays=True, **kw)


def _pair(archive):
    v = next(p for p in archive.products if p.name.startswith("VENUS"))
    s = next(p for p in archive.products if p.name.startswith("SENTINEL2"))
    return TheiaProduct(v), TheiaProduct(s)


def test_s2_is_a_linear_function_of_venus(tmp_path):
    archive = generate(_one_date(), tmp_path)
    venus, s2 = _pair(archive)
    bounds = venus.grid("XS").bounds
    v = venus.read(("B3", "B4", "B7", "B11"), bounds).reflectance
    s = s2.read(("B2", "B3", "B4", "B8"), bounds).reflectance
    # compare 80 m block means: the two sensors' different blurs average out
    v10 = F.avg_pool2d(v[None], 16)[0]
    s = F.avg_pool2d(s[None], 8)[0]
    gains, offsets = archive.truth["radiometry"]["gains"], archive.truth["radiometry"]["offsets"]
    for i, band in enumerate(("B2", "B3", "B4", "B8")):
        x, y = v10[i].flatten().double(), s[i].flatten().double()
        slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
        intercept = y.mean() - slope * x.mean()
        assert slope.item() == pytest.approx(gains[band], rel=0.02)
        assert intercept.item() == pytest.approx(offsets[band], abs=0.004)


def test_grids_are_nested_and_centred(tmp_path):
    archive = generate(_one_date(), tmp_path)
    venus, s2 = _pair(archive)
    gv, g1, g2 = venus.grid("XS"), s2.grid("R1"), s2.grid("R2")
    assert (gv.res, g1.res, g2.res) == (5.0, 10.0, 20.0)
    # the S2 window covers the site and its origin lies on the 20 m grid of the tile
    assert g1.bounds[0] <= gv.bounds[0] and g1.bounds[3] >= gv.bounds[3]
    assert g1.transform.c % 20 == 0 and g1.transform.f % 20 == 0
    assert g1.bounds == g2.bounds


def test_shift_moves_sentinel2_content(tmp_path):
    """A 10 m east shift shows as exactly one 10 m pixel between two otherwise equal products."""
    a = generate(_one_date(shift=[0.0, 0.0]), tmp_path / "a")
    b = generate(_one_date(shift=[10.0, 0.0]), tmp_path / "b")
    sa = _pair(a)[1].read(("B2",)).reflectance[0]
    sb = _pair(b)[1].read(("B2",)).reflectance[0]
    # content at column j of a is at column j + 1 of b
    assert torch.allclose(sa[5:-5, 5:-6], sb[5:-5, 6:-5], atol=1e-4)


def test_neighbouring_utm_zone(tmp_path):
    cfg = _one_date(s2_epsg=32630, origin=[280000.0, 4830000.0])
    archive = generate(cfg, tmp_path)
    venus, s2 = _pair(archive)
    assert s2.grid("R1").crs.to_epsg() == 32630 and venus.grid("XS").crs.to_epsg() == 32631
    assert archive.truth["s2_epsg"] == 32630


def test_zipped_archive_has_theia_layout(tmp_path):
    import zipfile

    cfg = _one_date(zip=True)
    archive = generate(cfg, tmp_path)
    for path in archive.products:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        stem = path.name[:-4]
        assert f"{stem}/{stem}_MTD_ALL.xml" in names
        assert any(n.startswith(f"{stem}/MASKS/") and n.endswith("_CLM_" + ("XS" if "VENUS" in stem else "R1") + ".tif")
                   for n in names)
    assert len(find_products(tmp_path)) == 2


def test_same_seed_same_products(tmp_path):
    a = generate(_one_date(), tmp_path / "a")
    b = generate(_one_date(), tmp_path / "b")
    for pa, pb in zip(sorted(a.products), sorted(b.products)):
        for f in sorted(pa.rglob("*.tif")):
            assert f.read_bytes() == (pb / f.relative_to(pa)).read_bytes(), f.name


def test_sentinel2_band_offsets_are_ground_truth(tmp_path):
    """Per-band Sentinel-2 offsets (the band-to-band registration error) are written in the truth and
    are what the batched residual estimator measures between the same band with and without them."""
    import json

    import rasterio
    import torch

    from s2v_gpu.residuals import patch_residuals
    from s2v_gpu.synthetic.distortion import distortion_preset

    date = [SyntheticDate("2019-05-01", venus_cloud=0.0, s2_cloud=0.0)]
    kw = dict(size_px=256, dates=date, seed=2, saturated_fraction=0.0)  # saturated roofs would not move
    plain = generate(SyntheticConfig(**kw), tmp_path / "plain")
    moved = generate(SyntheticConfig(**kw,
                                     distortion=distortion_preset("flat", s2_band_offset_px=0.3)), tmp_path / "moved")
    offsets = json.loads((moved.root / "ground_truth.json").read_text())["s2_band_offsets_px"]
    assert len(offsets) == 10 and max(abs(v) for o in offsets.values() for v in o) > 0.05
    s2 = next(p for p in moved.products if p.name.startswith("SENTINEL2"))
    ref = next(p for p in plain.products if p.name.startswith("SENTINEL2"))
    for band in ("B4", "B8A"):
        images = []
        for product in (ref, s2):
            with rasterio.open(product / f"{product.name}_FRE_{band}.tif") as src:
                images.append(torch.from_numpy(src.read(1).astype("float64") / 10000)[16:-16, 16:-16])
        r = patch_residuals(images[1][None, None], images[0][None, None])["r"][0]
        assert r.tolist() == pytest.approx(offsets[band], abs=0.03), (band, r, offsets[band])


def test_landscape_is_the_one_the_numpy_generator_drew():
    """The generator samples the landscape with torch (on any device) since 0.2: at the CPU it is bit
    for bit the landscape the numpy generator drew (values below printed by the numpy version), so the
    demo and benchmark products did not change."""
    from s2v_gpu.synthetic.landscape import Landscape
    from s2v_gpu.synthetic.sensor import value_noise

    x = torch.tensor([360012.5, 361234.0, 372000.25, 355000.0], dtype=torch.float64)
    y = torch.tensor([4829990.0, 4825000.5, 4817777.0, 4831111.0], dtype=torch.float64)
    assert value_noise(x, y, 7, 1200.0).tolist() == [
        0.3253628733511847, 0.09707333574398097, 0.4090978896023206, 0.2597415531926732]
    land = Landscape(11, (367000.0, 4823000.0), 14000.0)
    cls, key, texture = land.sample(x, y)
    assert cls.tolist() == [2, 2, 5, 1]
    assert key.tolist() == [0.32711249589920044, 0.9292613863945007, 0.6339367628097534, 0.8639469742774963]
    assert texture.tolist() == pytest.approx([1.0166592389579563, 1.1095835989388496, 1.0, 0.891447676134041],
                                             rel=1e-14)
    refl, _ = land.reflectance(x, y, [torch.linspace(0.01, 0.3, 8, dtype=torch.float64).numpy()], [3])
    assert refl[0].tolist() == pytest.approx(
        [0.09537991987062772, 0.09847812206008072, 0.1998820070539202, 0.04733665378999052], rel=1e-14)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_generator_writes_the_cpu_products(tmp_path):
    """Rendered on a GPU (how the device check makes a full site in seconds), the products are the
    CPU's: at most 1 DN apart (float32 convolutions summed in another order) on at most 0.1 % of the
    pixels, the masks equal but for 0.1 % of the pixels, the same ground truth."""
    import numpy as np

    from s2v_gpu.synthetic.distortion import distortion_preset

    date = [SyntheticDate("2019-05-01", shift_m=[2.5, -3.0], venus_cloud=0.2, s2_cloud=0.2)]
    cfg = SyntheticConfig(size_px=320, s2_margin_m=200.0, dates=date, keep_arrays=True, s2_epsg=32630,
                          distortion=distortion_preset("urban"))
    cpu, gpu = generate(cfg, tmp_path / "cpu"), generate(cfg, tmp_path / "cuda", "cuda")
    assert gpu.truth["dates"][0]["shift_m"] == cpu.truth["dates"][0]["shift_m"]
    assert gpu.truth["radiometry"] == cpu.truth["radiometry"]
    assert gpu.truth["distortion"]["median_m"] == pytest.approx(cpu.truth["distortion"]["median_m"], rel=1e-6)
    for name, groups in cpu.arrays.items():
        for group, arrays in groups.items():
            other = gpu.arrays[name][group]
            for kind in ("bands", "masks"):
                for band, a in getattr(arrays, kind).items():
                    diff = np.abs(a.astype(np.int64) - getattr(other, kind)[band].astype(np.int64))
                    if kind == "bands":
                        assert diff.max() <= 1, (name, band)
                    assert (diff > 0).mean() <= 1e-3, (name, group, kind, band, (diff > 0).mean())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_generator_refuses_a_device_it_does_not_have(tmp_path):
    import subprocess
    import sys

    for device, fragment in (("cuda", "no CUDA device here"), ("banana", "--device banana")):
        p = subprocess.run([sys.executable, "-m", "s2v_gpu.synthetic", str(tmp_path / "out"), "--device", device],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and fragment in p.stderr.splitlines()[-1], p.stderr
    assert not (tmp_path / "out").exists()
