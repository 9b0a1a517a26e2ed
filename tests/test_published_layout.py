"""``layout=published`` as the community reads it: the release's LICENCE per site, its 8-character
prefix, its per-site zenith angle, and the real ``sen2venus-pytorch-dataset`` loader (0.0.4) reading
every sample bit-identically to our Dataset. The loader's download path and its geometry helpers are
never called: their imports (torchvision, geopandas, xarray, rioxarray, py7zr) are stubbed."""

import importlib
import sys
import types

import pandas as pd
import pytest
import torch

from s2v_gpu.dataset import Sen2VenusDataset
from s2v_gpu.sites import published_zenith
from s2v_gpu.synthetic import generate, preset

from .test_run import TINY, compose_cfg


@pytest.fixture(scope="module")
def naryn(tmp_path_factory):
    """A tiny synthetic archive of a site with a short name (NARYN: the prefix is NARYN_C_)."""
    root = tmp_path_factory.mktemp("naryn")
    generate(preset("tiny", site="NARYN"), root)
    return root


@pytest.fixture(scope="module", params=["pt", "v2"])
def published(naryn, tmp_path_factory, request):
    """The release's layout, also with format=v2 (its extra B11 B12 column and v2/ folder must not
    disturb the community loader)."""
    from s2v_gpu.run import execute

    ds = tmp_path_factory.mktemp("published")
    execute(compose_cfg(["data=theia", f"paths.products={naryn}", f"paths.dataset={ds}", *TINY,
                         "layout=published", f"format={request.param}"]))
    return ds


def test_release_prefix_licence_and_zenith(published):
    site = published / "NARYN"
    licence = (site / "LICENCE").read_text()
    # per sensor, as the paper distributes them: VENuS CC BY-NC 4.0, Sentinel-2 Etalab 2.0, the rest CC BY 4.0
    assert "CC-BY-NC-4.0): the VENuS 5 m tensors" in licence and "etalab-2.0): the Sentinel-2 tensors" in licence
    assert "CC-BY-4.0): every other file" in licence and "non-commercial use only" in licence
    index = pd.read_csv(site / "index.csv", sep="\t", dtype=str)
    assert len(index) == 3
    for _, row in index.iterrows():
        assert row["tensor_10m_b2b3b4b8"] == f"NARYN_C__31TCJ_{row['date']}_10m_b2b3b4b8.pt"
        assert row["tensor_05m_b5b6b7b8a"] == f"NARYN_C__31TCJ_{row['date']}_05m_b4b5b6b8a.pt"
        assert row["vns_site"] == "NARYN"
        assert float(row["venus_zenith_angle"]) == pytest.approx(published_zenith("NARYN")) == 5.010906


def _community_loader(monkeypatch):
    """The real sen2venus.dataset.sen2venus module, its unused heavy imports stubbed for the test."""
    try:
        spec = importlib.util.find_spec("sen2venus")
    except ValueError:
        spec = None
    if spec is None:
        pytest.skip("sen2venus-pytorch-dataset is not installed (bash scripts/install.sh test installs it)")
    for name in ("torchvision", "torchvision.datasets", "torchvision.datasets.utils", "geopandas", "xarray",
                 "rioxarray", "py7zr"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["torchvision.datasets.utils"].download_url = lambda *a, **k: pytest.fail("the loader downloaded")
    for name in [m for m in sys.modules if m.startswith("sen2venus")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("sen2venus.dataset.sen2venus")


@pytest.mark.parametrize("subset", ["rgbnir", "rededge"])
def test_the_community_loader_reads_every_sample_bit_identically(published, subset, monkeypatch):
    loader = _community_loader(monkeypatch)
    site = loader.Sen2VenusSite(str(published), "NARYN", subset=subset)
    ours = Sen2VenusDataset(published / "NARYN", groups=("10m",) if subset == "rgbnir" else ("20m",))
    assert len(site) == len(ours) > 0
    keys = ("s2_10m", "venus_05m_10mbands") if subset == "rgbnir" else ("s2_20m", "venus_05m_20mbands")
    theirs = sorted((site[i] for i in range(len(site))), key=lambda t: t[0].sum().item())
    mine = sorted(((ours[i][keys[0]], ours[i][keys[1]]) for i in range(len(ours))), key=lambda t: t[0].sum().item())
    for (lr, hr), (s2, venus) in zip(theirs, mine):
        assert torch.equal(lr, s2) and torch.equal(hr, venus)


def test_without_licence_the_loader_would_download(published, tmp_path, monkeypatch):
    """Why the LICENCE matters: without it the loader decides the site is not there."""
    loader = _community_loader(monkeypatch)
    site = loader.Sen2VenusSite.__new__(loader.Sen2VenusSite)
    site.site_root = published / "NARYN"
    assert site.is_folder_valid()
    copy = tmp_path / "NARYN"
    copy.mkdir()
    for f in (published / "NARYN").iterdir():
        if f.is_file() and f.name != "LICENCE":
            (copy / f.name).write_bytes(f.read_bytes())
    site.site_root = copy
    assert not site.is_folder_valid()


def test_the_report_of_a_published_folder_knows_its_site(published):
    """The report takes the site from the index (not from a file-name prefix such as NARYN_C_), so
    the per-site figures, the time deltas among them, have their data."""
    from s2v_gpu.dataset import read_index
    from s2v_gpu.report import build_report
    from s2v_gpu.report.build import _tables

    report = build_report(published / "NARYN")
    assert report["sites"] == ["NARYN"]
    assert report["site_counts"] == [{"site": "NARYN", "pairs": 3, "patches": report["site_counts"][0]["patches"],
                                      "published_patches": 3814}]
    # the per-patch residuals are reported per site: a table, histograms and a map
    assert {"residuals", "residual_maps"} <= set(report["figures"])
    assert [r["site"] for r in report["residuals"]] == ["NARYN", "NARYN"]
    assert (published / "NARYN" / "report" / "residuals.tsv").exists()
    _, details = _tables(read_index(published / "NARYN"))
    assert len(details) == 3 and set(details["vns_site"]) == {"NARYN"} and details["dt_minutes"].notna().all()
