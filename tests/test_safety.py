"""Nothing lost, nothing touched that is not ours: names that never become paths, files the run did
not make left alone, unique pair ids, one writer per folder, bounded decompression, validated
tables, messages that name the real fault. Each case on files built in ``tmp_path``."""

import gzip
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.crs import CRS

from s2v_gpu.errors import MetadataError, ProductNameError
from s2v_gpu.layout import UnsafeNameError, check_file_name, check_name, parse_pair_id, published_prefix
from s2v_gpu.products.metadata import MAX_DOCUMENT_BYTES, read_metadata_bytes
from s2v_gpu.products.naming import parse_product_name
from s2v_gpu.writer import FolderLock, OutputFolderError, site_folder

from .rasters import rewrite_band
from .test_bad_inputs import VICTIM, _assert_isolated, _run, _victim, _zip
from .test_run import TINY


def _clone(product, new_name):
    """A copy of a product folder under another product name (its files renamed to match, and its
    metadata's PRODUCT_ID too: the reader refuses another product's metadata)."""
    dst = product.with_name(new_name)
    shutil.copytree(product, dst)
    for f in sorted(dst.rglob("*"), reverse=True):
        if f.is_file() and product.name in f.name:
            f = f.rename(f.with_name(f.name.replace(product.name, new_name)))
            if f.name.endswith("_MTD_ALL.xml"):
                f.write_text(f.read_text(encoding="utf-8").replace(product.name, new_name), encoding="utf-8")
    return dst


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "s2v_gpu.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ names and paths
@pytest.mark.parametrize("name", ["VENUS-XS_20180602-105512-000_L2A_.._C_V2-2",
                                  "VENUS-XS_20180602-105512-000_L2A_.hidden_C_V2-2",
                                  "VENUS-XS_20180602-105512-000_L2A_a.b_C_V2-2",
                                  "VENUS-XS_20180602-105512-000_L2A_a b_C_V2-2"])
def test_hostile_site_names_are_not_product_names(name):
    with pytest.raises(ProductNameError):
        parse_product_name(name)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "x\\y", ".hidden", "é", "a" * 65])
def test_unsafe_names_are_refused(name, tmp_path):
    with pytest.raises(UnsafeNameError):
        check_name(name, "site")
    with pytest.raises(OutputFolderError):
        site_folder(tmp_path / "ds", name)
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())


@pytest.mark.parametrize("name", ["../x_31TCJ_2018-06-02_patches.gpkg", "/etc/passwd", "a_31TCJ_2018-06-02.pt",
                                  "SYNTH-1_31TCJ_2018-06-02_05m_b2b3b4b8.pt/../../x.pt"])
def test_index_file_names_must_be_layout_names(name):
    with pytest.raises(UnsafeNameError):
        check_file_name(name, "tensor")


def test_hostile_product_writes_nothing_outside_the_dataset(corpus, tmp_path):
    venus = _victim(corpus, "VENUS")
    _clone(venus, venus.name.replace("_SYNTH-1_", "_.._"))
    mine = tmp_path / "my_thesis.pt"
    mine.write_bytes(b"precious")
    before = {p for p in tmp_path.iterdir()}
    summary = _run(corpus, tmp_path)
    assert any("_L2A_.._C_" in r for r in summary["rejected_names"])
    assert summary["written"] == 3
    assert {p for p in tmp_path.iterdir()} == before | {tmp_path / "ds"}
    assert mine.read_bytes() == b"precious"
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["SYNTH-1"]


@pytest.mark.parametrize("name, extra", [("SYNTH-1", ()), (".s2v_cache", ("cache=on",))])
def test_a_planted_link_for_a_folder_we_write_is_refused(corpus, tmp_path, name, extra):
    """A symbolic link where the run would make the site folder or its cache: refused before any
    write, its target untouched."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / name).symlink_to(elsewhere)
    with pytest.raises(OutputFolderError, match="symbolic link"):
        _run(corpus, tmp_path, *extra)
    assert not any(elsewhere.iterdir())


@pytest.mark.parametrize("name", ["report", "stac", "v2"])
def test_planted_links_in_our_subfolders_send_nothing_outside(corpus, tmp_path, name):
    """A symbolic link put where the run writes its report, catalogue or v2 files is not followed:
    the by-product is refused with its reason, the link's target stays untouched."""
    _run(corpus, tmp_path, "report=true", "format=v2")
    victim = tmp_path / "victim"
    victim.mkdir()
    site = tmp_path / "ds" / "SYNTH-1"
    shutil.rmtree(site / name)
    (site / name).symlink_to(victim)
    summary = _run(corpus, tmp_path, "report=true", "format=v2")
    assert not any(victim.iterdir())
    error = {"report": "report_error", "stac": "stac_error", "v2": "v2_error"}[name]
    assert "symbolic link" in summary[error]


# ------------------------------------------------------------------------------------- ownership
def test_files_the_run_did_not_make_are_never_deleted_nor_overwritten(corpus, tmp_path):
    site = tmp_path / "ds" / "SYNTH-1"
    site.mkdir(parents=True)
    theirs = {"notes.pt": b"user tensor", "aoi.gpkg": b"user gpkg", ".tmp-123-x.pt": b"user temp",
              "SYNTH-1_31TCJ_2018-06-12_05m_b2b3b4b8.pt": b"a file with our name, not ours"}
    for name, data in theirs.items():
        (site / name).write_bytes(data)
    summary = _run(corpus, tmp_path)
    _assert_isolated_keep = {o["pair_id"]: o for o in summary["outcomes"]}
    victim = _assert_isolated_keep[f"SYNTH-1_31TCJ_{VICTIM}"]
    assert victim["status"] == "failed" and "refusing to overwrite" in victim["reason"]
    assert "SYNTH-1_31TCJ_2018-06-12_05m_b2b3b4b8.pt" in victim["reason"]
    for name, data in theirs.items():
        assert (site / name).read_bytes() == data, name
    assert summary["written"] == 2
    again = _run(corpus, tmp_path)  # a rerun (resume) deletes none of them either
    assert again["written"] == 0
    for name, data in theirs.items():
        assert (site / name).read_bytes() == data, name


@pytest.mark.parametrize("name", ["index.csv", "patches.tsv", "summary.json", "report/report.html"])
def test_foreign_tables_without_a_manifest_are_refused(corpus, tmp_path, name):
    site = tmp_path / "ds" / "SYNTH-1"
    (site / name).parent.mkdir(parents=True)
    (site / name).write_text("my own file\n")
    with pytest.raises(OutputFolderError, match="no manifest.json"):
        _run(corpus, tmp_path)
    assert (site / name).read_text() == "my own file\n"


# -------------------------------------------------------------------------------- unique pair ids
def test_two_venus_acquisitions_on_one_day_get_distinct_ids(corpus, tmp_path):
    venus = _victim(corpus, "VENUS")
    later = venus.name.replace(venus.name[18:24], f"{int(venus.name[18:24]) + 500:06d}")  # 5 min later
    _clone(venus, later)
    summary = _run(corpus, tmp_path)
    site = tmp_path / "ds" / "SYNTH-1"
    index = pd.read_csv(site / "index.csv", sep="\t", dtype=str)
    assert summary["written"] == 4 and len(index) == 4
    same_day = index[index["date"] == VICTIM]
    assert sorted(same_day["venus_product_id"]) == sorted([venus.name, later])
    ids = [n[: -len("_patches.gpkg")] for n in same_day["patches_gpkg"]]
    assert ids == [f"SYNTH-1_31TCJ_{VICTIM}", f"SYNTH-1_31TCJ_{VICTIM}-{later[18:24]}"]
    assert parse_pair_id(ids[1])["time"] == later[18:24]
    files = [f for c in index.columns if c.startswith(("tensor_", "patches")) for f in index[c]]
    assert len(files) == len(set(files))  # no two rows share a file
    for _, row in index.iterrows():
        assert torch.load(site / row["tensor_10m_b2b3b4b8"]).shape[0] == int(row["nb_patches"])


# ------------------------------------------------------------------------------ one writer only
def test_a_second_run_on_a_folder_being_written_is_refused(corpus, tmp_path):
    site = tmp_path / "ds" / "SYNTH-1"
    site.mkdir(parents=True)
    lock = FolderLock(site)
    lock.acquire()
    try:
        with pytest.raises(OutputFolderError, match=f"pid {os.getpid()}"):
            _run(corpus, tmp_path)
        p = _cli(["data=theia", f"paths.products={corpus}", f"paths.dataset={tmp_path / 'ds'}", *TINY], tmp_path)
        assert p.returncode == 2, p.stderr[-2000:]
        assert "being written by another run" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    finally:
        lock.release()
    assert _run(corpus, tmp_path)["written"] == 3  # released: no stale lock


# ------------------------------------------------------------------------- bounded decompression
def test_metadata_zip_bomb_is_refused_before_inflating(corpus, tmp_path):
    z = _zip(_victim(corpus, "VENUS"))
    tmp = z.with_suffix(".part")
    bomb = b"<a>" + b" " * (MAX_DOCUMENT_BYTES + 10) + b"</a>"
    with zipfile.ZipFile(z) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = bomb if item.filename.endswith("_MTD_ALL.xml") else zin.read(item)
            zout.writestr(item.filename, data)
    os.replace(tmp, z)
    with zipfile.ZipFile(z) as zf:  # a small member that inflates past the cap
        info = next(i for i in zf.infolist() if i.filename.endswith("_MTD_ALL.xml"))
        assert info.compress_size < 2**20 < MAX_DOCUMENT_BYTES < info.file_size
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "_MTD_ALL.xml", "refused")


def test_gzip_metadata_bomb_is_refused():
    with pytest.raises(MetadataError, match="inflates to more than"):
        read_metadata_bytes(gzip.compress(b" " * (MAX_DOCUMENT_BYTES + 10)), "bomb.xml.gz")


# ---------------------------------------------------------------------------- validated tables
@pytest.mark.parametrize("damage, fragment", [
    (lambda t: t.replace("SYNTH-1_31TCJ_2018-06-02_05m_b2b3b4b8.pt", "../../outside_05m_b2b3b4b8.pt"),
     "not a file name of the layout"),
    (lambda t: t.replace("\t", ","), "not a tab-separated table"),
    (None, "binary content"),
])
def test_damaged_index_is_refused_not_half_trusted(corpus, tmp_path, damage, fragment):
    _run(corpus, tmp_path)
    index = tmp_path / "ds" / "SYNTH-1" / "index.csv"
    if damage is None:
        index.write_bytes(b"\x00\x01\x02" * 100)
    else:
        index.write_text(damage(index.read_text()))
    p = _cli(["data=theia", f"paths.products={corpus}", f"paths.dataset={tmp_path / 'ds'}", *TINY], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert fragment in p.stderr and "index.csv" in p.stderr and "Traceback" not in p.stderr


def test_index_row_whose_files_vanished_is_redone(corpus, tmp_path):
    first = _run(corpus, tmp_path)
    site = tmp_path / "ds" / "SYNTH-1"
    reference = (site / f"SYNTH-1_31TCJ_{VICTIM}_20m_b5b6b7b8a.pt").read_bytes()
    (site / f"SYNTH-1_31TCJ_{VICTIM}_20m_b5b6b7b8a.pt").unlink()
    again = _run(corpus, tmp_path)
    assert again["written"] == 1 and again["pairs_in_dataset"] == first["pairs_in_dataset"]
    assert (site / f"SYNTH-1_31TCJ_{VICTIM}_20m_b5b6b7b8a.pt").read_bytes() == reference


# ------------------------------------------------------------------------ messages that name faults
def test_uint8_band_is_refused(corpus, tmp_path):
    s2 = _victim(corpus, "SENTINEL2")
    band = s2 / f"{s2.name}_FRE_B4.tif"
    with rasterio.open(band) as src:
        data = src.read(1)
    rewrite_band(band, "uint8", np.clip(data // 40, 0, 255))
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "_FRE_B4.tif", "uint8")


def test_float_band_holding_unit_reflectance_is_refused(corpus, tmp_path):
    s2 = _victim(corpus, "SENTINEL2")
    band = s2 / f"{s2.name}_FRE_B4.tif"
    with rasterio.open(band) as src:
        data = src.read(1)
    rewrite_band(band, "float32", data / 10000.0)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "_FRE_B4.tif", "reflectance in 0..1")


def _edit_metadata(product, pattern: str, replacement: str) -> None:
    """Substitute ``pattern`` (which must occur) in the product's MTD_ALL.xml."""
    import re

    mtd = product / f"{product.name}_MTD_ALL.xml"
    text = mtd.read_text()
    assert re.search(pattern, text), pattern
    mtd.write_text(re.sub(pattern, replacement, text))


def test_zero_quantification_is_named(corpus, tmp_path):
    _edit_metadata(_victim(corpus, "VENUS"), r"(<REFLECTANCE_QUANTIFICATION_VALUE>)[^<]*", r"\g<1>0")
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "_MTD_ALL.xml", "REFLECTANCE_QUANTIFICATION_VALUE")


def test_a_tenfold_quantification_error_skips_the_pair_and_says_so(corpus, tmp_path):
    """Sentinel-2's REFLECTANCE_QUANTIFICATION_VALUE written 1000 instead of 10000: its reflectance is
    10x VENuS's; the paper's pre-fit RMSE filter refuses every patch, and the reason gives the ratio."""
    _edit_metadata(_victim(corpus, "SENTINEL2"), r"(<REFLECTANCE_QUANTIFICATION_VALUE>)10000<", r"\g<1>1000<")
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "skipped", "RMSE >", "REFLECTANCE_QUANTIFICATION_VALUE wrong?")


@pytest.mark.parametrize("value", ["nan", "-10000.5", "40000"])
def test_an_impossible_nodata_value_is_named(corpus, tmp_path, value):
    """A no-data value no int16 pixel can equal (NaN matches nothing): every no-data pixel would be
    read as a valid -1.0 reflectance; the product is refused naming its metadata document."""
    _edit_metadata(_victim(corpus, "SENTINEL2"), r'(<SPECIAL_VALUE name="nodata">)-10000<', rf"\g<1>{value}<")
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "_MTD_ALL.xml", "SPECIAL_VALUE nodata")


@pytest.mark.parametrize("sensor, how", [("VENUS", "rotated"), ("VENUS", "6 m pixels"),
                                         ("SENTINEL2", "south-up"), ("SENTINEL2", "sheared")])
def test_a_grid_that_is_not_north_up_at_its_resolution_is_named(corpus, tmp_path, sensor, how):
    """A geotransform with a rotation or shear term, a south-up one or another pixel size than the
    group's (5 m VENuS, 10 / 20 m Sentinel-2): the footprints and windows, computed as north-up square
    pixels of that size, would place the pixels elsewhere without an error. The pair fails naming the
    file and the geotransform."""
    product = _victim(corpus, sensor)
    for f in product.rglob("*.tif"):
        with rasterio.open(f, "r+") as dst:
            t = dst.transform
            if how == "rotated":
                dst.transform = rasterio.Affine.translation(t.c, t.f) * rasterio.Affine.rotation(1.0) * \
                    rasterio.Affine.scale(t.a, t.e)
            elif how == "6 m pixels":
                dst.transform = rasterio.Affine(6.0, 0, t.c, 0, -6.0, t.f)
            elif how == "south-up":
                dst.transform = rasterio.Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * dst.height)
            else:
                dst.transform = rasterio.Affine(t.a, 0.5, t.c, 0, t.e, t.f)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "RasterReadError", "is not north-up with square")


@pytest.mark.parametrize("sensor, epsg, fragment", [
    ("SENTINEL2", 4326, "not a projected CRS"),  # geographic degrees
    ("VENUS", 2229, "US survey foot, not metres"),  # projected in feet: its 5-unit pixels are 1.5 m
])
def test_a_crs_that_is_not_projected_in_metres_is_named(corpus, tmp_path, sensor, epsg, fragment):
    product = _victim(corpus, sensor)
    for f in product.rglob("*.tif"):
        with rasterio.open(f, "r+") as dst:
            dst.crs = CRS.from_epsg(epsg)
            if epsg == 4326:
                dst.transform = rasterio.Affine(0.0001, 0, 1.0, 0, -0.0001, 43.0)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", fragment)


def test_geopackage_write_failure_names_the_file(corpus, tmp_path, monkeypatch):
    import s2v_gpu.writer as writer

    real = writer.fiona.open
    calls = {"n": 0}

    def failing(path, mode="r", **kw):
        calls["n"] += 1
        if mode == "w" and calls["n"] == 2:
            raise RuntimeError("no such table: patches")
        return real(path, mode, **kw)

    monkeypatch.setattr(writer.fiona, "open", failing)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "_patches.gpkg", "cannot write")


def test_published_prefix_rule():
    assert published_prefix("VENUS-XS_20180616-105512-000_L2A_NARYN_C_V2-2") == "NARYN_C_"
    assert published_prefix("VENUS-XS_20180616-105512-000_L2A_ALSACE_C_V2-2") == "ALSACE_C"
    assert published_prefix("VENUS-XS_20180616-105512-000_L2A_BAMBENW2_C_V2-2") == "BAMBENW2"
    assert published_prefix("VENUS-XS_20180616-105512-000_L2A_SUDOUE-2_C_V2-2") == "SUDOUE-2"
    assert published_prefix("VENUS-XS_20180616-105512-000_L2A_SO1_C_V2-2") == "SO1_C_V2"


def test_a_tampered_manifest_cannot_name_files_to_delete(corpus, tmp_path):
    import json

    _run(corpus, tmp_path)
    site = tmp_path / "ds" / "SYNTH-1"
    (site / "thesis.tex").write_text("mine")
    manifest = json.loads((site / "manifest.json").read_text())
    manifest["pending"]["x"] = ["thesis.tex"]
    (site / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputFolderError, match="not a file of the layout"):
        _run(corpus, tmp_path)
    assert (site / "thesis.tex").read_text() == "mine"


def test_a_pair_that_fails_after_its_patch_rows_leaves_none(corpus, tmp_path, monkeypatch):
    import pandas as pd

    import s2v_gpu.writer as writer

    real = writer.write_tsv

    def failing(path, rows, columns):
        if path.name == "index.csv" and any(VICTIM in r["date"] for r in rows):
            raise OSError(28, "No space left on device")
        return real(path, rows, columns)

    monkeypatch.setattr(writer, "write_tsv", failing)
    summary = _run(corpus, tmp_path)
    _assert_isolated(summary, tmp_path, "failed", "No space left on device")
    table = pd.read_csv(tmp_path / "ds" / "SYNTH-1" / "patches.tsv", sep="\t")
    assert not table["pair_id"].str.contains(VICTIM).any()
    assert set(table["pair_id"]) == {f"SYNTH-1_31TCJ_{d}" for d in ("2018-06-02", "2018-06-22")}
