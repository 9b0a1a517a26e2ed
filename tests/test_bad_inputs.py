"""A corpus of broken inputs, made by damaging synthetic products: each one skips its pair with a
clear reason, the other pairs are written, no partial file stays, a rerun after the fix completes
only what is missing."""

import os
import shutil
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.crs import CRS

import s2v_gpu.run as run_mod
from s2v_gpu.run import execute
from s2v_gpu.writer import OutputFolderError

from .test_run import TINY, compose_cfg

HEALTHY = {"2018-06-02", "2018-06-22"}
VICTIM = "2018-06-12"




def _victim(root, sensor):
    return next(p for p in root.iterdir() if p.name.startswith(sensor) and VICTIM.replace("-", "") in p.name)


def _run(root, tmp_path, *extra):
    return execute(compose_cfg(["data=theia", f"paths.products={root}", f"paths.dataset={tmp_path / 'ds'}",
                                *TINY, *extra]))


def _assert_isolated(summary, tmp_path, status, *fragments):
    site_dir = tmp_path / "ds" / "SYNTH-1"
    outcome = {o["pair_id"].rsplit("_", 1)[1]: o for o in summary["outcomes"]}
    assert outcome[VICTIM]["status"] == status, outcome[VICTIM]
    for fragment in fragments:
        assert fragment in outcome[VICTIM]["reason"], outcome[VICTIM]["reason"]
    index = pd.read_csv(site_dir / "index.csv", sep="\t")
    assert set(index["date"]) == HEALTHY
    # no file of the failed pair, no temporary file
    assert not [f for f in site_dir.iterdir() if VICTIM in f.name or f.name.startswith(".tmp-")]
    for _, row in index.iterrows():
        for col in ("tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8", "tensor_05m_b5b6b7b8a",
                    "tensor_20m_b5b6b7b8a", "patches_gpkg"):
            assert (site_dir / row[col]).stat().st_size > 0


def _damage_band(product, band, how):
    path = product / f"{product.name}_FRE_{band}.tif"
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:2000])
    elif how == "zero":
        path.write_bytes(b"")
    elif how == "missing":
        path.unlink()
    elif how == "crs":
        with rasterio.open(path, "r+") as dst:
            dst.crs = CRS.from_epsg(32630)
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
        _unblock_readers_later(path)
    elif how == "device":
        path.unlink()
        path.symlink_to("/dev/zero")
    return path.name


def _unblock_readers_later(fifo, seconds: float = 5.0):
    """Should a reader open ``fifo`` (the bug under test), it would block forever: after ``seconds``
    a writer opens and closes it, so that reader gets an empty file and the test fails instead of
    hanging. Nothing happens when no reader is there."""
    import threading

    def release():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader: nothing is blocked
            pass

    timer = threading.Timer(seconds, release)
    timer.daemon = True
    timer.start()


@pytest.mark.parametrize("sensor, band, how, fragments", [
    ("SENTINEL2", "B3", "truncate", ["RasterReadError", "_FRE_B3.tif"]),
    ("VENUS", "B7", "zero", ["RasterReadError", "_FRE_B7.tif"]),
    ("SENTINEL2", "B8A", "missing", ["MissingFileError", "missing band file", "_FRE_B8A.tif"]),
    ("SENTINEL2", "B4", "crs", ["RasterReadError", "_FRE_B4.tif", "CRS"]),
    ("VENUS", "B3", "fifo", ["RasterReadError", "_FRE_B3.tif", "not a regular file"]),
    ("SENTINEL2", "B2", "device", ["RasterReadError", "_FRE_B2.tif", "not a regular file"]),
])
def test_broken_band(corpus, tmp_path, sensor, band, how, fragments):
    _damage_band(_victim(corpus, sensor), band, how)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", *fragments)


def test_missing_and_wrong_size_masks(corpus, tmp_path):
    venus = _victim(corpus, "VENUS")
    (venus / "MASKS" / f"{venus.name}_CLM_XS.tif").unlink()
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "missing mask file", "_CLM_XS.tif")


def test_mask_of_wrong_size(corpus, tmp_path):
    s2 = _victim(corpus, "SENTINEL2")
    mask = s2 / "MASKS" / f"{s2.name}_SAT_R2.tif"
    with rasterio.open(mask) as src:
        profile = src.profile
    profile.update(width=profile["width"] // 2)
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(np.zeros((1, profile["height"], profile["width"]), profile["dtype"]))
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "_SAT_R2.tif", "differs")


@pytest.mark.parametrize("how, fragments", [("corrupt", ["not a valid XML", "_MTD_ALL.xml"]),
                                            ("missing", ["no ", "_MTD_ALL.xml"])])
def test_broken_metadata(corpus, tmp_path, how, fragments):
    venus = _victim(corpus, "VENUS")
    mtd = venus / f"{venus.name}_MTD_ALL.xml"
    if how == "corrupt":
        mtd.write_text(mtd.read_text()[:500])
    else:
        mtd.unlink()
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", *fragments)


def test_unparsable_product_name_is_reported(corpus, tmp_path):
    (corpus / "SENTINEL2A_2018-broken_L2A_T31TCJ_C_V2-2").mkdir()
    summary = _run(corpus, tmp_path)
    assert any("SENTINEL2A_2018-broken" in r for r in summary["rejected_names"])
    assert summary["written"] == 3


def test_a_fifo_named_like_a_product_zip_is_not_opened(corpus, tmp_path):
    """A FIFO (or a link to nothing) named like a product zip would block the run on its first read:
    it is not a product, it is listed among the rejected names, the other pairs are written."""
    fifo = corpus / "VENUS-XS_20180702-104812-000_L2A_SYNTH-1_C_V2-9.zip"
    os.mkfifo(fifo)
    _unblock_readers_later(fifo)
    (corpus / "VENUS-XS_20180703-104812-000_L2A_SYNTH-1_C_V2-2.zip").symlink_to(corpus / "nothing.zip")
    summary = _run(corpus, tmp_path)
    rejected = " ".join(summary["rejected_names"])
    assert "20180702" in rejected and "20180703" in rejected and "not a regular file" in rejected
    assert summary["written"] == 3


def _zip(product):
    z = product.with_name(product.name + ".zip")
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(product.rglob("*")):
            if f.is_file():
                zf.write(f, f"{product.name}/{f.relative_to(product).as_posix()}")
    shutil.rmtree(product)
    return z


def test_corrupt_zip(corpus, tmp_path):
    z = _zip(_victim(corpus, "SENTINEL2"))
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "corrupt or unreadable zip")


def test_zip_with_a_missing_member(corpus, tmp_path):
    z = _zip(_victim(corpus, "VENUS"))
    tmp = z.with_suffix(".part")
    with zipfile.ZipFile(z) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith("_FRE_B11.tif"):
                zout.writestr(item, zin.read(item))
    os.replace(tmp, z)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", "missing band file", "_FRE_B11.tif")


def test_pair_without_overlap(corpus, tmp_path):
    s2 = _victim(corpus, "SENTINEL2")
    for f in s2.rglob("*.tif"):
        with rasterio.open(f, "r+") as dst:
            t = dst.transform
            dst.transform = rasterio.Affine(t.a, 0, t.c + 50_000, 0, t.e, t.f)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "skipped", "do not overlap")


def _declare_huge(band, side):
    """Rewrite ``band`` as a sparse tiled GeoTIFF of ``side`` x ``side`` pixels (same origin, pixel size
    and CRS): a few kB on disk, gigabytes once read."""
    with rasterio.open(band) as src:
        profile = src.profile
    profile.update(width=side, height=side, tiled=True, blockxsize=256, blockysize=256, sparse_ok=True)
    with rasterio.open(band, "w", **profile):
        pass
    assert band.stat().st_size < 2**20


def test_a_huge_declared_raster_is_refused_before_reading(corpus, tmp_path):
    """VENuS and Sentinel-2 headers declaring 40000 x 40000 / 20000 x 20000 pixels (200 km): the
    buffers of their common grid would exhaust the memory and the process would be killed without a
    message; the pair is refused from the headers alone, naming the VENuS product (here only the two
    files whose headers define the grids are rewritten: reading the others is what must not start)."""
    venus, s2 = _victim(corpus, "VENUS"), _victim(corpus, "SENTINEL2")
    _declare_huge(venus / f"{venus.name}_FRE_B1.tif", 40000)
    _declare_huge(s2 / f"{s2.name}_FRE_B2.tif", 20000)
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "skipped", "not a VENuS tile", venus.name, "40000 x 40000")


def test_fully_nodata_sentinel2(corpus, tmp_path):
    s2 = _victim(corpus, "SENTINEL2")
    for f in s2.glob("MASKS/*_EDG_R*.tif"):
        with rasterio.open(f, "r+") as dst:
            dst.write(np.ones((1, dst.height, dst.width), np.uint8))
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "skipped", "no valid Sentinel-2 pixel")


def test_too_few_matches(corpus, tmp_path):
    """Sentinel-2 replaced by noise: nothing to match; the pair is refused, not averaged."""
    s2 = _victim(corpus, "SENTINEL2")
    rng = np.random.default_rng(0)
    for f in s2.glob("*_FRE_B*.tif"):
        with rasterio.open(f, "r+") as dst:
            dst.write(rng.integers(100, 3000, (1, dst.height, dst.width)).astype(np.int16))
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "skipped", "registration refused")


def test_duplicate_processing_versions_keep_the_newest(corpus, tmp_path):
    s2 = _victim(corpus, "SENTINEL2")
    old = s2.with_name(s2.name.replace("_V2-2", "_V1-4"))
    shutil.copytree(s2, old)
    for f in sorted(old.rglob("*"), reverse=True):
        if f.is_file():
            f.rename(f.with_name(f.name.replace("_V2-2", "_V1-4")))
    _damage_band(old, "B2", "zero")  # the old version is broken: it must not be used
    summary = _run(corpus, tmp_path)
    assert summary["written"] == 3
    index = pd.read_csv(tmp_path / "ds" / "SYNTH-1" / "index.csv", sep="\t")
    assert index.loc[index["date"] == VICTIM, "sentinel2_product_id"].item().endswith("_V2-2")


def test_unexpected_exception_is_recorded_with_traceback(corpus, tmp_path, monkeypatch):
    real = run_mod.process_pair

    def flaky(pair, cfg, device, **kw):
        if pair.date == VICTIM:
            return 1 / 0
        return real(pair, cfg, device, **kw)

    monkeypatch.setattr(run_mod, "process_pair", flaky)
    summary = _run(corpus, tmp_path)
    _assert_isolated(summary, tmp_path, "failed", "ZeroDivisionError")
    victim = next(o for o in summary["outcomes"] if VICTIM in o["pair_id"])
    assert "Traceback" in victim["traceback"] and "flaky" in victim["traceback"]


def test_disk_full_while_writing_a_tensor(corpus, tmp_path, monkeypatch):
    import errno

    import s2v_gpu.writer as writer

    real = writer.torch.save
    calls = {"n": 0}

    def full_disk(obj, f):
        calls["n"] += 1
        if calls["n"] == 7:  # the third tensor of the second pair
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f)

    monkeypatch.setattr(writer.torch, "save", full_disk)
    summary = _run(corpus, tmp_path)
    _assert_isolated(summary, tmp_path, "failed", "No space left on device")
    # the cause fixed, a rerun completes only what is missing
    monkeypatch.setattr(writer.torch, "save", real)
    again = _run(corpus, tmp_path)
    assert again["written"] == 1 and {o["status"] for o in again["outcomes"]} >= {"complete", "written"}


def test_output_folder_not_writable(corpus, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "SYNTH-1").write_text("a file where the site folder should be")
    with pytest.raises(OutputFolderError, match="cannot write into"):
        execute(compose_cfg(["data=theia", f"paths.products={corpus}", f"paths.dataset={locked}", *TINY]))


def test_rerun_after_the_fix_completes_only_what_is_missing(corpus, tmp_path):
    s2 = _victim(corpus, "SENTINEL2")
    band = s2 / f"{s2.name}_FRE_B3.tif"
    backup = band.read_bytes()
    band.write_bytes(backup[:1000])
    first = _run(corpus, tmp_path)
    assert first["failed"] == 1 and first["written"] == 2
    band.write_bytes(backup)
    second = _run(corpus, tmp_path)
    assert second["written"] == 1 and [o["status"] for o in second["outcomes"]].count("complete") == 2


KILLER = r"""
import os, signal, sys
import s2v_gpu.run as run
import s2v_gpu.writer as writer
real_save = writer.torch.save
calls = {"n": 0}
def save(obj, f):
    calls["n"] += 1
    if calls["n"] == int(os.environ["KILL_AT"]):
        f.write(b"half a tensor")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f)
writer.torch.save = save
sys.argv = ["s2v_gpu.run"] + sys.argv[1:]
run.main()
"""


@pytest.mark.parametrize("kill_at", [5, 7])  # between two pairs (first tensor of pair 2), mid-pair
def test_killed_process_resumes_to_identical_bytes(corpus, tmp_path, kill_at):
    args = ["data=theia", f"paths.products={corpus}", *TINY]
    ref = subprocess.run([sys.executable, "-m", "s2v_gpu.run", *args, "paths.dataset=ref"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = subprocess.run([sys.executable, "-c", KILLER, *args, "paths.dataset=run"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "KILL_AT": str(kill_at)})
    assert killed.returncode == -signal.SIGKILL
    rerun = subprocess.run([sys.executable, "-m", "s2v_gpu.run", *args, "paths.dataset=run"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    a, b = tmp_path / "ref" / "SYNTH-1", tmp_path / "run" / "SYNTH-1"
    names = sorted(f.name for f in a.iterdir() if f.suffix in (".pt", ".csv"))
    assert names == sorted(f.name for f in b.iterdir() if f.suffix in (".pt", ".csv"))
    for name in names:  # same machine, software, configuration and threads: the same operations, byte for byte
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert not [f for f in b.iterdir() if f.name.startswith(".tmp-")]
