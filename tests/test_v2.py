"""format=v2: per-patch GeoTIFFs in one zip per site, read back through GDAL exactly as the index
writes their paths; Sentinel-2 B11 B12 co-registered like the other bands."""

import csv
import os

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import from_bounds
from scipy import ndimage

from s2v_gpu.dataset import patch_geometries
from s2v_gpu.layout import read_index_rows, read_table
from s2v_gpu.run import execute
from s2v_gpu.v2 import V2_COLUMNS

from .test_run import TINY, compose_cfg


@pytest.fixture(scope="module")
def built(tiny_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    summary = execute(compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={root}",
                                   "format=v2", "stac=false", *TINY]))
    assert "v2_error" not in summary
    return root / "SYNTH-1"


def _v2_rows(site):
    with open(site / "v2" / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_path_opens_through_gdal_as_written_and_holds_the_tensors(built, monkeypatch):
    rows = _v2_rows(built)
    index = {r["patches_gpkg"][: -len("_patches.gpkg")]: r for r in read_index_rows(built)}
    assert len(rows) == sum(int(r["nb_patches"]) for r in index.values()) > 0
    monkeypatch.chdir(built / "v2")  # the paths are relative to the index's folder
    for row in rows:
        pid, k = row["pair_id"], int(row["patch"])
        assert (row["venus_licence"], row["sentinel2_licence"]) == ("CC-BY-NC-4.0", "etalab-2.0")
        crs, bounds = patch_geometries(built / index[pid]["patches_gpkg"])
        for column, (ours, res, bands) in V2_COLUMNS.items():
            assert row[column].startswith("/vsizip/")
            with rasterio.open(row[column]) as src:  # exactly the string of the index
                data = src.read()
                assert src.crs.to_string() == crs and src.res == (res, res)
                assert src.bounds == pytest.approx(bounds[k])
                assert [d.split()[0] for d in src.descriptions] == list(bands) and src.scales[0] == 1e-4
                # each file under its sensor's licence (VENuS CC BY-NC 4.0, Sentinel-2 Etalab 2.0)
                assert src.tags()["LICENSE"] == ("CC-BY-NC-4.0" if column.endswith("_05m") else "etalab-2.0")
            tensor = torch.load(built / index[pid][ours], weights_only=True)[k].numpy()
            assert data.dtype == np.int16 and np.array_equal(data, tensor)


def test_swir_is_shifted_like_the_other_bands(built, tiny_archive):
    """B11 of the output against the product's B11 moved by the pair's registration shift (scipy, an
    independent resampler): close, and much closer than the unmoved product."""
    details = {d["pair_id"]: d for d in read_table(built / "pairs_details.tsv", ["pair_id"])}
    index = read_index_rows(built)
    moved_err, unmoved_err = [], []
    for row in index:
        pid = row["patches_gpkg"][: -len("_patches.gpkg")]
        dx_px, dy_px = float(details[pid]["shift_dx_m"]) / 20, -float(details[pid]["shift_dy_m"]) / 20
        _, bounds = patch_geometries(built / row["patches_gpkg"])
        swir = torch.load(built / row["tensor_20m_b11b12"], weights_only=True).numpy() / 1e4
        band = next(tiny_archive.root.glob(f"{row['sentinel2_product_id']}*/*_FRE_B11.tif"))
        with rasterio.open(band) as src:
            for k, (left, bottom, right, top) in enumerate(bounds):
                pad = 8  # 20 m pixels around the patch for the interpolation
                win = from_bounds(left - pad * 20, bottom - pad * 20, right + pad * 20, top + pad * 20,
                                  src.transform).round_offsets().round_lengths()
                raw = src.read(1, window=win).astype(np.float64) / 1e4
                moved = ndimage.shift(raw, (-dy_px, -dx_px), order=5, mode="nearest")[pad:-pad, pad:-pad]
                moved_err.append(np.abs(moved - swir[k, 0])[4:-4, 4:-4].mean())
                unmoved_err.append(np.abs(raw[pad:-pad, pad:-pad] - swir[k, 0])[4:-4, 4:-4].mean())
    print("B11 mean abs error, moved", np.median(moved_err), "unmoved", np.median(unmoved_err))
    assert np.median(moved_err) < 1e-3 and np.median(moved_err) < 0.1 * np.median(unmoved_err)


def test_v2_is_refused_without_the_swir_bands():
    from s2v_gpu.config import ConfigError, validate

    cfg = compose_cfg(["format=v2", "pipeline.swir_20m=false"])
    with pytest.raises(ConfigError, match="pipeline.swir_20m"):
        validate(cfg)


def test_the_zip_is_stored_not_deflated_so_gdal_seeks_into_it(built):
    import zipfile

    with zipfile.ZipFile(built / "v2" / "SYNTH-1.zip") as z:
        infos = z.infolist()
    assert infos and all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    assert os.path.getsize(built / "v2" / "SYNTH-1.zip") > 0


def test_the_dataset_serves_the_swir_group_and_stac_lists_it(built, tiny_archive):
    from s2v_gpu.dataset import Sen2VenusDataset
    from s2v_gpu.stac import write_site_stac

    ds = Sen2VenusDataset(built, groups=("20m", "swir"))
    sample = ds[0]
    assert sample["s2_20m_b11b12"].shape == (2, 16, 16) and sample["s2_20m"].shape == (4, 16, 16)
    import json

    write_site_stac(built)
    item = json.loads(next((built / "stac").glob("SYNTH-1_*.json")).read_text())
    assert [b["name"] for b in item["assets"]["s2_20m_b11b12"]["bands"]] == ["B11", "B12"]


def test_v2_with_the_local_model_moves_swir_with_the_other_20m_bands(tiny_archive, tmp_path):
    """With registration.model=local each patch is resampled at its own translation: B11 B12 too."""
    from s2v_gpu.pairing import find_pairs
    from s2v_gpu.pipeline import PipelineConfig, process_pair
    from s2v_gpu.products import find_products

    pair = find_pairs(find_products(tiny_archive.root), "SYNTH-1")[0]
    cfg = PipelineConfig(swir_20m=True)
    cfg.patches.size_5m, cfg.radiometry.min_pixels = 64, 200
    plain = process_pair(pair, cfg)
    cfg.registration.model = "local"
    local = process_pair(pair, cfg)
    assert local.s2_swir.shape == (len(local.patch_index), 2, 16, 16)
    moved = [k for k, t in enumerate(local.patches["local_trusted"].tolist())
             if t and local.patches["local_dx_m"][k].abs() + local.patches["local_dy_m"][k].abs() > 0.05]
    assert moved, "no patch got a field: the test would prove nothing"
    same = {p: k for k, p in enumerate(plain.patch_index)}
    for k in moved:  # where a field was applied, B8A and B11 both differ from the global shift's patch
        j = same[local.patch_index[k]]
        assert not torch.equal(local.s2_20[k, 3], plain.s2_20[j, 3])
        assert not torch.equal(local.s2_swir[k, 0], plain.s2_swir[j, 0])
