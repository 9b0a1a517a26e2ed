"""Quality report and Dataset over a generated folder."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from s2v_gpu.dataset import Sen2VenusDataset, read_index, split_by_pairs, split_by_sites
from s2v_gpu.mtf import band_sigmas_px, centred_gaussian_kernel
from s2v_gpu.report import ReportConfig, build_report
from s2v_gpu.run import execute

from .helpers import clone_site
from .test_run import TINY, compose_cfg


@pytest.fixture(scope="module")
def dataset(tiny_archive, tmp_path_factory):
    """The tiny archive processed twice under two site names (a second 'site' for the splits)."""
    root = tmp_path_factory.mktemp("report")
    execute(compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={root}", *TINY]))
    # the site cloned under another name (its files, tables and manifest say SYNTH-2) stands for a
    # second site: a plain copy would be a backup copy, left out
    clone_site(root / "SYNTH-1", root / "SYNTH-2", "SYNTH-2")
    return root


def _numpy_downsample(img: np.ndarray, sigma: float, factor: int) -> np.ndarray:
    """Separable correlation with the same centred taps, 'reflect' like torch, sampled at block centres."""
    k = centred_gaussian_kernel(sigma, factor, dtype=torch.float64).numpy()
    size = len(k)
    pad = (size - factor) // 2
    extra = (size - factor) % 2

    def axis(a, ax):
        a = np.pad(a, [(0, 0)] * ax + [(pad, pad + extra)] + [(0, 0)] * (a.ndim - ax - 1), mode="reflect")
        n = (a.shape[ax] - size) // factor + 1
        out = np.zeros(a.shape[:ax] + (n,) + a.shape[ax + 1:])
        for t in range(size):
            sl = [slice(None)] * a.ndim
            sl[ax] = slice(t, t + factor * n, factor)
            out += k[t] * a[tuple(sl)]
        return out

    return axis(axis(img, 1), 0)


def test_metrics_agree_with_numpy(dataset, tmp_path):
    cfg = ReportConfig(n_patches=12, max_pairs=10, seed=3)
    report = build_report(dataset, cfg, tmp_path / "report")
    entries = {e.pair_id: e for e in read_index(dataset) if e.site == "SYNTH-1"}
    groups = {("B2", "B3", "B4", "B8"): ("tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8", 2, 10.0),
              ("B5", "B6", "B7", "B8A"): ("tensor_05m_b5b6b7b8a", "tensor_20m_b5b6b7b8a", 4, 20.0)}
    for bands, (vcol, scol, factor, res) in groups.items():
        errors = {b: [] for b in bands}
        for pid, j in report["selection"]["SYNTH-1"]:
            e = entries[pid]
            v = torch.load(e.folder / e.files[vcol])[j].numpy().astype(np.float64) / 10000
            s = torch.load(e.folder / e.files[scol])[j].numpy().astype(np.float64) / 10000
            for c, (b, sig) in enumerate(zip(bands, band_sigmas_px(bands, res))):
                errors[b].append((_numpy_downsample(v[c], sig, factor) - s[c]).ravel())
        for b in bands:
            err = np.concatenate(errors[b])
            assert report["metrics"]["SYNTH-1"][b]["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-6)
            assert report["metrics"]["SYNTH-1"][b]["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-6)
    assert len(report["selection"]["SYNTH-1"]) == 12


def test_figures_and_html(dataset, tmp_path):
    import re

    from s2v_gpu import __version__

    out = tmp_path / "report"
    report = build_report(dataset, ReportConfig(), out)
    page = (out / "report.html").read_text()
    assert {"pairs_per_site", "dates_per_site", "time_deltas", "patches_per_site", "patches_per_pair", "mae", "rmse",
            "shifts", "drops", "residuals", "sample_patches"} <= set(report["figures"])
    # self-contained: every image is embedded (a copied report.html shows them all), no other file is loaded
    images = re.findall(r"<img src='([^']*)'", page)
    assert len(images) == len(report["figures"]) and all(i.startswith("data:image/png;base64,") for i in images)
    assert not re.search(r"(src|href)=['\"](?!data:|#|pairs\.tsv)", page)
    for name in report["figures"]:  # also as files, at a print resolution
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[16:24] != b"" and len(png) > 2000
    # captions on every table and figure, provenance, each pair listed once (the table is folded)
    assert page.count("<caption>") == page.count("<table") and page.count("<figcaption>") == len(images)
    assert f"s2v_gpu={__version__}" in page and "configuration hash" in page and "Theia" in page
    pairs = read_index(dataset)
    for p in pairs:  # (the fixture's second site is a copy of the first: same pair ids)
        assert page.count(f"<td>{p.pair_id}</td>") == sum(q.pair_id == p.pair_id for q in pairs)
    tsv = (out / "pairs.tsv").read_text().splitlines()
    assert len(tsv) == len(pairs) + 1 and tsv[0].startswith("pair_id\t")
    assert "SYNTH-2" in page and "MAE" in page


def test_flags(dataset, tmp_path):
    report = build_report(dataset, ReportConfig(max_mae=1e-6, weak_max_spread_m=-1.0), tmp_path / "r")
    assert any("MAE" in f for f in report["flags"]) and report["weak_registrations"]
    # the match count judges SIFT seeds only (a phase seed counts tiles, a handful by design)
    from s2v_gpu.layout import read_table

    modes = {d["pair_id"]: d["registration_mode"] for d in read_table(dataset / "SYNTH-1" / "pairs_details.tsv",
                                                                       ["pair_id"])}
    report = build_report(dataset, ReportConfig(weak_min_matches=10_000), tmp_path / "r2")
    flagged = {w.split(":")[0] for w in report["weak_registrations"]}
    assert flagged == {p for p, m in modes.items() if "phase" not in m}


def test_run_writes_the_site_report(tiny_archive, tmp_path):
    extra = [o for o in TINY if o != "report=false"]
    execute(compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={tmp_path}", *extra]))
    assert (tmp_path / "SYNTH-1" / "report" / "report.html").exists()


def test_dataloader_batches(dataset):
    ds = Sen2VenusDataset(dataset, groups=("10m", "20m"))
    assert len(ds) == sum(e.n for e in read_index(dataset))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=2, shuffle=True,
                                 generator=torch.Generator().manual_seed(0))))
    assert batch["s2_10m"].shape == (4, 4, 32, 32) and batch["venus_05m_10mbands"].shape == (4, 4, 64, 64)
    assert batch["s2_20m"].shape == (4, 4, 16, 16) and batch["venus_05m_20mbands"].shape == (4, 4, 64, 64)
    assert batch["s2_10m"].dtype == torch.float32 and 0 < batch["s2_10m"].mean() < 0.5
    only10 = Sen2VenusDataset(dataset, groups=("10m",))[0]
    assert "s2_20m" not in only10 and only10["patch"] == 0


def test_dataset_samples_carry_geometry_transforms_and_negative_indices(dataset):
    import pickle

    import fiona

    ds = Sen2VenusDataset(dataset / "SYNTH-1", groups=("10m",), geo=True,
                          transforms=lambda s: {**s, "flipped": s["s2_10m"].flip(-1)})
    assert repr(ds).startswith("Sen2VenusDataset(root=") and f"patches={len(ds)}" in repr(ds)
    last, first = ds[-1], ds[0]
    assert torch.equal(last["s2_10m"], ds[len(ds) - 1]["s2_10m"]) and torch.equal(first["flipped"],
                                                                                  first["s2_10m"].flip(-1))
    with pytest.raises(IndexError):
        ds[len(ds)]
    # the stdlib GeoPackage reader gives what fiona reads
    entry = ds.pairs[0]
    with fiona.open(entry.folder / f"{entry.pair_id}_patches.gpkg") as src:
        ring = next(iter(src))["geometry"]["coordinates"][0]
        epsg = src.crs.to_epsg()
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assert first["crs"] == f"EPSG:{epsg}" and first["bounds"] == pytest.approx((min(xs), min(ys), max(xs), max(ys)))
    # the tensors a process touched are not pickled into the workers
    plain = Sen2VenusDataset(dataset / "SYNTH-1", groups=("10m",))
    plain[0]
    assert plain._cache and not pickle.loads(pickle.dumps(plain))._cache


def test_splits_keep_whole_pairs_and_sites_apart(dataset):
    pairs = read_index(dataset)
    train, test = split_by_sites(pairs, ["SYNTH-2"])
    assert test and all(p.site == "SYNTH-2" for p in test) and all(p.site != "SYNTH-2" for p in train)
    train_ds = Sen2VenusDataset(dataset, pairs=train)
    assert {train_ds[i]["site"] for i in range(len(train_ds))} == {"SYNTH-1"}
    train, test = split_by_pairs(pairs, 0.34, seed=1)
    assert not {(p.site, p.pair_id) for p in train} & {(p.site, p.pair_id) for p in test}
    assert len(train) + len(test) == len(pairs)


def test_published_names_are_read_through_the_index(tiny_archive, tmp_path):
    execute(compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={tmp_path}",
                         "layout=published", *TINY]))
    ds = Sen2VenusDataset(tmp_path / "SYNTH-1")
    assert len(ds) > 0 and ds[0]["s2_20m"].shape == (4, 16, 16)


def _browser() -> str | None:
    import shutil

    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def _screenshot(browser: str, page, png, tmp_path, height: int):
    """The page as a real headless browser renders it (flags for a machine without network)."""
    import subprocess

    import numpy as np
    from PIL import Image

    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'browser-profile'}", "--hide-scrollbars",
                    f"--window-size=1200,{height}", f"--screenshot={png}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_in_a_real_browser_at_1_and_29_sites(dataset, tmp_path):
    """The page, copied alone elsewhere, shows its figures in Chromium; at 29 sites (the release's)
    it stays a readable length (the 0.1 page was 44,000 px tall at 14 sites)."""
    import shutil

    from s2v_gpu.sites import PUBLISHED

    many = tmp_path / "many"
    for site in sorted(PUBLISHED):
        clone_site(dataset / "SYNTH-1", many / site, site)
    for name, root, height in (("one", dataset / "SYNTH-1", 9000), ("many", many, 20000)):
        build_report(root, ReportConfig(), tmp_path / name)
        alone = tmp_path / f"{name}_alone" / "report.html"  # copied without its PNG files
        alone.parent.mkdir()
        shutil.copy(tmp_path / name / "report.html", alone)
        shot = _screenshot(_browser(), alone, tmp_path / f"{name}.png", tmp_path, height)
        blue = (np.abs(shot - [31, 119, 180]).sum(-1) < 10).sum()  # the pairs-per-site bars (tab:blue)
        assert blue > 2000, f"{name}: the embedded figures did not render"
        rows = np.where((shot < 250).any(axis=(1, 2)))[0]
        assert rows.max() < height - 10, f"{name}: page taller than {height} px"
        if name == "many":
            assert 5000 < rows.max() < 16000
