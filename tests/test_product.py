"""Reading synthetic and real Theia products through the real readers (rasterio, no mocks)."""

import shutil
import zipfile

import numpy as np
import pytest
import torch

from s2v_gpu.errors import MetadataError, MissingFileError, ProductNameError, RasterReadError
from s2v_gpu.products import MaskConfig, TheiaProduct, find_products
from s2v_gpu.synthetic import TRUTH_FILE

from .rasters import rewrite_band


def _products(archive, sensor):
    return [p for p in archive.products if p.name.startswith(sensor)]


def test_discovery_finds_every_product(tiny_archive, tiny_zip_archive):
    found = find_products(tiny_archive.root)
    assert sorted(p for p, _ in found) == sorted(tiny_archive.products)
    assert {n.sensor for _, n in found} == {"VENUS", "SENTINEL2"}
    assert sorted(p for p, _ in find_products(tiny_zip_archive.root)) == sorted(tiny_zip_archive.products)
    assert all(p.suffix == ".zip" for p in tiny_zip_archive.products)


def test_metadata_of_synthetic_products(tiny_archive):
    truth = tiny_archive.truth
    for date in truth["dates"]:
        if "venus" in date:
            v = TheiaProduct(tiny_archive.root / date["venus"])
            assert v.sensor == "VENUS" and v.name.zone == truth["site"] == "SYNTH-1"
            assert v.quantification == 1000.0 and v.metadata.quantification_from_document
            assert v.metadata.mean_viewing_zenith == pytest.approx(truth["venus_zenith"], abs=1e-6)
            assert v.metadata.cloud_percent == pytest.approx(100 * date["venus_cloud_fraction"], abs=0.5)
            assert v.metadata.acquired == v.name.acquired
        if "s2" in date:
            s = TheiaProduct(tiny_archive.root / date["s2"])
            assert s.quantification == 10000.0 and s.metadata.zone == "T31TCJ"
            assert s.metadata.epsg == truth["s2_epsg"]


@pytest.mark.parametrize("sensor, group, bands", [
    ("VENUS", "XS", ("B3", "B4", "B7", "B11")),
    ("SENTINEL2", "R1", ("B2", "B3", "B4", "B8")),
    ("SENTINEL2", "R2", ("B5", "B6", "B7", "B8A")),
])
def test_window_reads_match_ground_truth(tiny_archive, device, sensor, group, bands):
    for path in _products(tiny_archive, sensor):
        product = TheiaProduct(path)
        arrays = tiny_archive.arrays[path.name][group]
        grid = product.grid(group)
        res = grid.res
        # a window well inside, on the grid
        r0, c0, h, w = 7, 11, 40, 30
        left = grid.transform.c + c0 * res
        top = grid.transform.f - r0 * res
        stack = product.read(bands, (left, top - h * res, left + w * res, top), device=device)
        assert stack.reflectance.shape == (len(bands), h, w) and stack.reflectance.dtype == torch.float32
        assert stack.reflectance.device.type == device.type
        expected = np.stack([arrays.bands[b][r0:r0 + h, c0:c0 + w] for b in bands]) / product.quantification
        valid = stack.valid.cpu().numpy()
        got = stack.reflectance.cpu().numpy()
        np.testing.assert_allclose(got[:, valid], expected[:, valid].astype(np.float32), rtol=0, atol=1e-7)
        assert (got[:, ~valid] == 0).all()
        assert stack.grid.transform.c == left and stack.grid.transform.f == top


@pytest.mark.parametrize("block", [None, 997])
@pytest.mark.parametrize("mg2_bits", [[1, 3, 5, 6, 7, 8], []])
def test_validity_is_the_union_of_injected_flags(tiny_archive, mg2_bits, block, monkeypatch):
    """(``block``: the flags combined a few rows at a time, the last block shorter.)"""
    if block is not None:
        from s2v_gpu.products import product as product_module

        monkeypatch.setattr(product_module, "FLAG_BLOCK_PIXELS", block)
    masks = MaskConfig(mg2_invalid_bits=mg2_bits)
    checked_other_bands = 0
    for path in tiny_archive.products:
        product = TheiaProduct(path)
        for group, arrays in tiny_archive.arrays[path.name].items():
            bands = product.groups[group][:4]
            stack = product.read(bands, masks=masks)
            f = arrays.flags
            invalid = f["edge"] | f["cloud"] | f["shadow"]
            for b in bands:
                invalid |= arrays.saturated[b]
            if 1 in mg2_bits:
                invalid |= f["water"]
            np.testing.assert_array_equal(stack.valid.numpy(), ~invalid)
            # saturation of a band not read does not invalidate
            others = [b for b in product.groups[group] if b not in bands]
            if others and (~invalid).any():
                only = np.zeros_like(invalid)
                for b in others:
                    only |= arrays.saturated[b]
                only &= ~invalid
                assert stack.valid.numpy()[only].all()
                checked_other_bands += int(only.sum())
    assert checked_other_bands > 0


def test_fully_cloudy_venus_date_is_all_invalid(tiny_archive):
    date = tiny_archive.truth["dates"][-1]
    assert date["venus_cloud_fraction"] > 0.9
    stack = TheiaProduct(tiny_archive.root / date["venus"]).read(("B3",))
    assert not stack.valid.any()


def test_channels_of_stored_integers_leave_them_untouched(device):
    """Reflectance of some channels from the stored int16 (a range is read as a view, others as a
    copy): DN / quantification on valid pixels, 0 elsewhere; the stored integers never change."""
    from s2v_gpu.products.product import BandStack

    g = torch.Generator().manual_seed(2)
    dn = torch.randint(-10000, 16000, (4, 6, 7), generator=g, dtype=torch.int16).to(device)
    valid = (torch.rand(6, 7, generator=g) > 0.3).to(device)
    stack, kept = BandStack(None, valid, ("B2", "B3", "B4", "B8"), None, dn=dn, quantification=1000.0), dn.clone()
    expected = dn.double() / 1000.0 * valid
    for index in ([0], [1, 2, 3], [3, 0], [0, 2], None):
        got, want = stack.channels(index), expected if index is None else expected[index]
        assert got.dtype == torch.float32 and torch.allclose(got.double(), want)
    assert torch.equal(dn, kept)


def test_zip_and_folder_read_the_same(tiny_archive, tiny_zip_archive):
    for folder, zipped in zip(sorted(tiny_archive.products), sorted(tiny_zip_archive.products)):
        a, b = TheiaProduct(folder), TheiaProduct(zipped)
        assert b.is_zip and a.name == b.name
        group = next(iter(a.groups))
        bands = a.groups[group][:4]
        sa, sb = a.read(bands), b.read(bands)
        assert torch.equal(sa.reflectance, sb.reflectance) and torch.equal(sa.valid, sb.valid)
        assert a.metadata.mean_viewing_zenith == b.metadata.mean_viewing_zenith


def test_sre_is_selectable(tiny_archive):
    product = TheiaProduct(_products(tiny_archive, "VENUS")[0])
    fre = product.read(("B3",), kind="FRE")
    sre = product.read(("B3",), kind="SRE")
    v = fre.valid & sre.valid
    assert torch.allclose(sre.reflectance[:, v], fre.reflectance[:, v] * 0.98, atol=1.01e-3)


def test_window_outside_the_raster_is_invalid(tiny_archive):
    product = TheiaProduct(_products(tiny_archive, "SENTINEL2")[0])
    g = product.grid("R1")
    left, bottom, right, top = g.bounds
    stack = product.read(("B2",), (left - 100, top - 200, left + 100, top + 50))
    assert stack.reflectance.shape == (1, 25, 20)
    assert not stack.valid[:5].any() and not stack.valid[:, :10].any()
    assert stack.valid[5:, 10:].float().mean() > 0.5


def test_bounds_off_the_grid_raise(tiny_archive):
    product = TheiaProduct(_products(tiny_archive, "SENTINEL2")[0])
    left, bottom, right, top = product.grid("R1").bounds
    with pytest.raises(ValueError, match="not on the 10.0 m pixel grid"):
        product.read(("B2",), (left + 3, bottom, right, top))


def test_bands_of_two_groups_raise(tiny_archive):
    product = TheiaProduct(_products(tiny_archive, "SENTINEL2")[0])
    with pytest.raises(ValueError, match="several resolution groups"):
        product.read(("B2", "B5"))


# ----------------------------------------------------------------------------------- bad inputs
@pytest.fixture
def product_copy(tiny_archive, tmp_path):
    src = _products(tiny_archive, "SENTINEL2")[0]
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_missing_band(product_copy):
    (product_copy / f"{product_copy.name}_FRE_B3.tif").unlink()
    product = TheiaProduct(product_copy)
    with pytest.raises(MissingFileError, match=f"{product_copy}.*missing band file .*_FRE_B3.tif"):
        product.read(("B2", "B3"))


def test_missing_mask(product_copy):
    (product_copy / "MASKS" / f"{product_copy.name}_CLM_R1.tif").unlink()
    product = TheiaProduct(product_copy)
    with pytest.raises(MissingFileError, match="missing mask file MASKS/.*_CLM_R1.tif"):
        product.read(("B2",))
    # tolerant reading skips it
    assert product.read(("B2",), masks=MaskConfig(allow_missing=True)).valid.any()


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage"])
def test_unreadable_tif(product_copy, damage):
    band = product_copy / f"{product_copy.name}_FRE_B4.tif"
    data = band.read_bytes()
    band.write_bytes({"truncate": data[: len(data) // 3], "zero": b"", "garbage": b"II*\x00" + b"\x17" * 500}[damage])
    product = TheiaProduct(product_copy)
    with pytest.raises(RasterReadError, match="_FRE_B4.tif") as info:
        product.read(("B2", "B3", "B4"))
    assert isinstance(info.value, OSError)


def test_mask_of_wrong_size(product_copy, tiny_archive):
    import rasterio

    mask = product_copy / "MASKS" / f"{product_copy.name}_EDG_R1.tif"
    with rasterio.open(mask) as src:
        profile = src.profile
    profile.update(width=profile["width"] - 3)
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(np.zeros((1, profile["height"], profile["width"]), np.uint8))
    with pytest.raises(RasterReadError, match="_EDG_R1.tif: grid .* differs"):
        TheiaProduct(product_copy).read(("B2",))


@pytest.mark.parametrize("outside", [False, True])
def test_reencoded_rasters_read_the_same(product_copy, outside):
    """Products re-encoded with float32 bands/masks or wider integer masks (values unchanged, no-data
    as NaN in the float band) give exactly the same reflectance and validity, inside the raster and
    through a window that leaves it."""
    import rasterio

    product = TheiaProduct(product_copy)
    grid = product.grid("R1")
    left, bottom, right, top = grid.bounds
    bounds = (left - 30, top - 200, left + 170, top + 30) if outside else None  # None: the whole raster
    bands = ("B2", "B3", "B8")
    before = product.read(bands, bounds)

    def rewrite(path, dtype, nan_nodata=False):
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read(1)
        profile.update(dtype=dtype)
        out = data.astype(dtype)
        if nan_nodata:
            out[data == product.nodata] = np.nan
            profile.update(nodata=np.nan)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(out[None])

    name = product_copy.name
    rewrite(product_copy / f"{name}_FRE_B3.tif", "float32", nan_nodata=True)
    rewrite(product_copy / "MASKS" / f"{name}_SAT_R1.tif", "float32")
    rewrite(product_copy / "MASKS" / f"{name}_MG2_R1.tif", "uint16")
    rewrite(product_copy / "MASKS" / f"{name}_CLM_R1.tif", "int16")
    after = TheiaProduct(product_copy).read(bands, bounds)
    assert torch.equal(after.valid, before.valid) and (~before.valid).any() and before.valid.any()
    assert torch.equal(after.reflectance, before.reflectance)


@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32"])
def test_a_band_value_beyond_int16_is_refused_not_wrapped(product_copy, dtype):
    """40000 in a re-encoded band does not fit the int16 digital numbers: read into the int16 buffer it
    would wrap to -25536, a valid-looking negative reflectance. The band is refused, naming its file;
    the same file within range reads as the original (inside the raster and through a window that
    leaves it, whose fill is the no-data)."""
    band = product_copy / f"{product_copy.name}_FRE_B3.tif"
    grid = TheiaProduct(product_copy).grid("R1")
    left, bottom, right, top = grid.bounds
    bounds = (left - 30, top - 200, left + 170, top + 30)
    before = TheiaProduct(product_copy).read(("B3",), bounds)
    data = rewrite_band(band, "int32").astype(np.int32)  # the original values, in a wider type
    if dtype == "uint16":  # no -10000 in uint16: its no-data becomes the file's tag, 0
        nodata_pixels = data == -10000
        rewrite_band(band, dtype, np.where(nodata_pixels, 0, data), nodata=0)
    else:
        rewrite_band(band, dtype, data)
    same = TheiaProduct(product_copy).read(("B3",), bounds)
    assert torch.equal(same.valid, before.valid) and torch.equal(same.reflectance, before.reflectance)
    high = np.where(data == -10000, 0 if dtype == "uint16" else data, data + 40000)
    rewrite_band(band, dtype, high, nodata=0 if dtype == "uint16" else None)
    with pytest.raises(RasterReadError, match=r"_FRE_B3.tif: value 4\d+ outside the int16 range"):
        TheiaProduct(product_copy).read(("B2", "B3"), bounds)


def test_a_band_s_own_nodata_tag_marks_invalid_pixels(product_copy):
    """A band whose GeoTIFF tags another no-data than the metadata's (65535 in a uint16 re-encoding,
    -9999 in an int16 one): those pixels are invalid, not reflectance 6.5 or -1."""
    band = product_copy / f"{product_copy.name}_FRE_B4.tif"
    before = TheiaProduct(product_copy).read(("B4",))
    data = rewrite_band(band, "int32").astype(np.int32)
    holes = np.zeros_like(data, dtype=bool)
    holes[3:9, 5:20] = True
    assert (data[holes] != -10000).all()
    for dtype, tag in (("uint16", 65535), ("int16", -9999)):
        values = np.where(holes, tag, np.where(data == -10000, tag, data))
        rewrite_band(band, dtype, values, nodata=tag)
        got = TheiaProduct(product_copy).read(("B4",))
        expected_valid = before.valid & torch.from_numpy(~holes)
        assert torch.equal(got.valid, expected_valid)
        assert torch.equal(got.reflectance[:, expected_valid], before.reflectance[:, expected_valid])


@pytest.mark.parametrize("mask", ["CLM", "SAT", "MG2", "EDG"])
def test_a_nan_in_a_float_mask_is_an_unknown_flag_so_invalid(product_copy, mask):
    """A mask re-encoded as float32 with NaN where its flags are unknown: those pixels are invalid
    (0.3.2 read NaN as 0, "no flag", for CLM, SAT and MG2: clear, unsaturated, valid)."""
    path = product_copy / "MASKS" / f"{product_copy.name}_{mask}_R1.tif"
    before = TheiaProduct(product_copy).read(("B2", "B3"))
    flags = rewrite_band(path, "float32").astype(np.float32)
    flags[2:6, 4:30] = np.nan
    rewrite_band(path, "float32", flags)
    got = TheiaProduct(product_copy).read(("B2", "B3"))
    unknown = torch.zeros_like(before.valid)
    unknown[2:6, 4:30] = True
    assert (before.valid & unknown).any()
    assert torch.equal(got.valid, before.valid & ~unknown)


def test_band_with_another_crs(product_copy):
    import rasterio
    from rasterio.crs import CRS

    band = product_copy / f"{product_copy.name}_FRE_B8.tif"
    with rasterio.open(band, "r+") as dst:
        dst.crs = CRS.from_epsg(32630)
    with pytest.raises(RasterReadError, match="_FRE_B8.tif: CRS .* differs"):
        TheiaProduct(product_copy).read(("B2", "B8"))


def test_bad_xml(product_copy):
    (product_copy / f"{product_copy.name}_MTD_ALL.xml").write_text("<Muscate_Metadata_Document><oops>")
    with pytest.raises(MetadataError, match="_MTD_ALL.xml: not a valid XML"):
        TheiaProduct(product_copy)
    assert TheiaProduct(product_copy, require_metadata=False).quantification == 10000.0


def test_missing_xml(product_copy):
    (product_copy / f"{product_copy.name}_MTD_ALL.xml").unlink()
    with pytest.raises(MissingFileError, match="no .*_MTD_ALL.xml"):
        TheiaProduct(product_copy)


def test_unknown_product_name(product_copy):
    renamed = product_copy.with_name("MY_PRODUCT")
    product_copy.rename(renamed)
    with pytest.raises(ProductNameError, match="MY_PRODUCT: not a Theia L2A product name"):
        TheiaProduct(renamed)


def test_corrupt_zip(tiny_zip_archive, tmp_path):
    src = tiny_zip_archive.products[0]
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(RasterReadError, match="corrupt or unreadable zip"):
        TheiaProduct(bad)


def test_zip_missing_member(tiny_zip_archive, tmp_path):
    src = next(p for p in tiny_zip_archive.products if p.name.startswith("SENTINEL2"))
    dst = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith("_FRE_B2.tif"):
                zout.writestr(item, zin.read(item))
    with pytest.raises(MissingFileError, match="missing band file .*_FRE_B2.tif"):
        TheiaProduct(dst).read(("B2",))


def test_ground_truth_file_written(tiny_archive):
    import json

    truth = json.loads((tiny_archive.root / TRUTH_FILE).read_text())
    assert truth["dates"][0]["shift_m"] == [3.2, -2.1]
    assert len(truth["radiometry"]["W_10m"]) == 5 and len(truth["radiometry"]["W_10m"][0]) == 4


# ----------------------------------------------------------------------------------- real products
def test_real_tiny_products(real_data):
    found = find_products(real_data / "theia_tiny_products")
    assert len(found) == 4
    assert {n.zone for _, n in found} == {"38KPD", "38KPE"}
    assert all(n.letter == "D" and n.version == (1, 4) for _, n in found)
    for path, _name in found:
        # no MTD_ALL.xml, no R2 masks, no MG2: tolerant reading
        product = TheiaProduct(path, require_metadata=False)
        assert product.metadata is None and product.quantification == 10000.0
        r1 = product.read(("B2", "B3", "B4", "B8"), masks=MaskConfig(allow_missing=True))
        r2 = product.read(("B5", "B6", "B7", "B8A"), masks=MaskConfig(allow_missing=True))
        (h1, w1), (h2, w2) = r1.reflectance.shape[1:], r2.reflectance.shape[1:]
        assert abs(h1 - 2 * h2) <= 1 and abs(w1 - 2 * w2) <= 1  # same footprint to a pixel, 10 m vs 20 m
        assert r1.valid.all()
        refl = r1.reflectance
        assert 0.0 < refl.mean() < 0.5 and refl.max() < 1.0  # plausible surface reflectances
        with pytest.raises(MissingFileError):
            product.read(("B2",))  # strict by default: MG2 is absent
        with pytest.raises(MissingFileError):
            TheiaProduct(path)  # strict by default: MTD_ALL.xml is absent
