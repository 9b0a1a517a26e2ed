"""STAC metadata (pystac, validated offline) and the dataset card of a generated dataset."""

import json
import shutil
from datetime import UTC, datetime

import fiona
import pystac
import pytest
from pystac.validation import JsonSchemaSTACValidator
from rasterio.warp import transform

from s2v_gpu.aggregate import aggregate
from s2v_gpu.layout import read_index_rows
from s2v_gpu.run import execute

from .test_run import TINY, compose_cfg


@pytest.fixture(scope="module")
def built(tiny_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("stac")
    execute(compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={root}", *TINY]))
    return root


def _validate(obj: dict, kind) -> None:
    JsonSchemaSTACValidator().validate_core(obj, kind, "1.1.0", obj["id"])


def test_items_describe_each_pair_from_its_own_files(built, tmp_path):
    site = built / "SYNTH-1"
    # moved elsewhere, the catalogue still resolves (every link relative)
    moved = tmp_path / "moved"
    shutil.copytree(site, moved)
    collection = pystac.Collection.from_file(str(moved / "stac" / "collection.json"))
    items = list(collection.get_items())
    rows = {r["patches_gpkg"][: -len("_patches.gpkg")]: r for r in read_index_rows(site)}
    assert sorted(i.id for i in items) == sorted(rows) and len(items) >= 2
    _validate(collection.to_dict(include_self_link=False), pystac.STACObjectType.COLLECTION)
    assert collection.license == "other" and collection.extra_fields["s2v:license_spdx"] == (
        "CC-BY-NC-4.0 AND etalab-2.0 AND CC-BY-4.0")
    assert len([lk.href for lk in collection.links if lk.rel == "license"]) == 3
    for item in items:
        _validate(json.loads((moved / "stac" / f"{item.id}.json").read_text()), pystac.STACObjectType.ITEM)
        row = rows[item.id]
        # the VENuS acquisition time of the product name
        stamp = row["venus_product_id"].split("_")[1][:15]
        assert item.datetime == datetime.strptime(stamp, "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        for key, asset in item.assets.items():
            assert (moved / asset.href.removeprefix("../")).is_file() and asset.href.startswith("../")
            # each asset under the licence of its sensor
            expected = "CC-BY-NC-4.0" if key.startswith("venus") else ("etalab-2.0" if key.startswith("s2")
                                                                         else "CC-BY-4.0")
            assert asset.extra_fields["license"] == expected, key
        # projection from the GeoPackage as fiona reads it; every patch centre inside the WGS84 footprint
        with fiona.open(moved / row["patches_gpkg"]) as src:
            epsg = src.crs.to_epsg()
            centres = [(sum(p[0] for p in f["geometry"]["coordinates"][0][:4]) / 4,
                        sum(p[1] for p in f["geometry"]["coordinates"][0][:4]) / 4) for f in src]
            left, bottom, right, top = src.bounds
        assert item.properties["proj:code"] == f"EPSG:{epsg}"
        assert item.properties["proj:bbox"] == pytest.approx([left, bottom, right, top])
        assert item.properties["s2v:patches"] == int(row["nb_patches"]) == len(centres)
        w, s, e, n = item.bbox
        lons, lats = transform(f"EPSG:{epsg}", "EPSG:4326", [c[0] for c in centres], [c[1] for c in centres])
        assert all(w <= lon <= e and s <= lat <= n for lon, lat in zip(lons, lats))
        assert collection.extent.spatial.bboxes[0][0] <= w and collection.extent.spatial.bboxes[0][2] >= e
        bands = item.assets["s2_20m"].extra_fields["bands"]
        assert [b["name"] for b in bands] == ["B5", "B6", "B7", "B8A"] and bands[0]["eo:center_wavelength"] == 0.705


def test_a_venus_product_without_viewing_angles_still_gets_its_catalogue(corpus, tmp_path):
    """Its index row has no zenith angle (empty): the STAC Items leave the property out instead of the
    whole catalogue and dataset card failing on float('')."""
    import re

    for mtd in corpus.glob("VENUS*/*_MTD_ALL.xml"):
        text = mtd.read_text()
        assert "ZENITH_ANGLE" in text
        mtd.write_text(re.sub(r"<ZENITH_ANGLE[^>]*>[^<]*</ZENITH_ANGLE>", "", text))
    summary = execute(compose_cfg(["data=theia", f"paths.products={corpus}", f"paths.dataset={tmp_path / 'ds'}",
                                   *TINY]))
    site = tmp_path / "ds" / "SYNTH-1"
    assert "stac_error" not in summary and summary["stac"] == str(site / "stac" / "collection.json")
    assert (site / "DATASET_CARD.md").is_file()
    rows = read_index_rows(site)
    assert rows and all(r["venus_zenith_angle"] == "" for r in rows)
    items = list(pystac.Collection.from_file(str(site / "stac" / "collection.json")).get_items())
    assert len(items) == len(rows) and all("s2v:venus_zenith_angle" not in i.properties for i in items)
    for item in items:
        _validate(item.to_dict(include_self_link=False), pystac.STACObjectType.ITEM)


def test_rerun_keeps_foreign_files_and_the_card_names_sources_licence_and_departures(built, tiny_archive):
    stac = built / "SYNTH-1" / "stac"
    (stac / "notes.json").write_text("{}")  # a file of the user's: never removed
    execute(compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={built}", *TINY]))
    assert (stac / "notes.json").exists()
    card = (built / "SYNTH-1" / "DATASET_CARD.md").read_text()
    n_pairs = len(read_index_rows(built / "SYNTH-1"))
    n_patches = sum(int(r["nb_patches"]) for r in read_index_rows(built / "SYNTH-1"))
    assert f"| SYNTH-1 | {n_pairs} | {n_patches} |" in card
    assert "Etalab Open Licence 2.0" in card and "10.3390/data7070096" in card
    assert "CNES / CESBIO / Theia" in card and "processed by CNES for Theia" in card  # each sensor's attribution
    assert "**The VENµS 5 m tensors are for non-commercial use only** (CC BY-NC 4.0" in card
    assert "`CC-BY-NC-4.0 AND etalab-2.0 AND CC-BY-4.0`" in card
    assert "lanczos4" in card and "robust Gauss-Newton" in card
    manifest = json.loads((built / "SYNTH-1" / "manifest.json").read_text())
    assert "DATASET_CARD.md" in manifest["files"]  # ours: recorded


def test_paper_preset_card_lists_no_registration_or_kernel_departure(tiny_archive, tmp_path):
    execute(compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={tmp_path}",
                         "preset=paper", *TINY]))
    card = (tmp_path / "SYNTH-1" / "DATASET_CARD.md").read_text()
    assert "robust Gauss-Newton" not in card and "kernel" not in card


def test_aggregate_writes_the_dataset_collection_over_the_sites(built):
    aggregate(built)
    root = json.loads((built / "stac" / "collection.json").read_text())
    _validate(root, pystac.STACObjectType.COLLECTION)
    children = [lk["href"] for lk in root["links"] if lk["rel"] == "child"]
    assert children == ["../SYNTH-1/stac/collection.json"]
    assert (built / "stac" / children[0]).resolve() == (built / "SYNTH-1" / "stac" / "collection.json").resolve()
    assert "| **all** |" in (built / "DATASET_CARD.md").read_text()
