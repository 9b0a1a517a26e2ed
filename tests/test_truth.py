"""A dataset that tells the truth about itself: tables that add up, geometric quality in KARIOS's and
ESA's terms, a seeded split held out by site, and four hostile inputs answered clearly."""

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest

from s2v_gpu.dataset import Sen2VenusDataset
from s2v_gpu.geoquality import geometric_quality
from s2v_gpu.layout import DETAIL_COLUMNS_ADDED, DROP_COLUMNS, read_table
from s2v_gpu.run import execute
from s2v_gpu.split import SplitBy, SplitConfig, assign_splits, read_split, write_split

from .helpers import clone_site
from .test_bad_inputs import VICTIM, _assert_isolated, _run, _victim, _zip
from .test_run import TINY, compose_cfg


def _build(products, dataset, *extra):
    return execute(compose_cfg(["data=theia", f"paths.products={products}", f"paths.dataset={dataset}", *TINY,
                                *extra]))


@pytest.fixture(scope="module")
def two_models(tiny_archive, tmp_path_factory):
    """The tiny site built with each registration model."""
    roots = {}
    for model in ("translation", "local"):
        roots[model] = tmp_path_factory.mktemp(model)
        _build(tiny_archive.root, roots[model], f"pipeline.registration.model={model}",
               "pipeline.registration.local_min_support=0.9")  # a demanding field: the local rule drops some
    return roots


@pytest.mark.parametrize("model", ["translation", "local"])
def test_every_patch_of_the_grid_is_kept_or_dropped_by_one_named_rule(two_models, model):
    details = pd.DataFrame(read_table(two_models[model] / "SYNTH-1" / "pairs_details.tsv", ["pair_id"]))
    counts = details[["patches_total", "patches_kept", *DROP_COLUMNS]].astype(int)
    assert (counts["patches_total"] == counts["patches_kept"] + counts[DROP_COLUMNS].sum(axis=1)).all()
    assert (counts["patches_kept"] > 0).all()
    if model == "translation":
        assert (counts["dropped_local"] == 0).all()


def test_geometric_quality_of_each_pair_is_that_of_its_patches(two_models):
    """The columns of pairs_details.tsv against numpy on the converged residuals of patches.tsv: mean and
    (n-1) standard deviation per axis, RMSE of the vector, CE90 / CE95 as percentiles, in m and px."""
    site = two_models["translation"] / "SYNTH-1"
    details = {d["pair_id"]: d for d in read_table(site / "pairs_details.tsv", ["pair_id"])}
    patches = pd.DataFrame(read_table(site / "patches.tsv", ["pair_id"]))
    for pid, d in details.items():
        for group, res in (("10", 10.0), ("20", 20.0)):
            p = patches[(patches["pair_id"] == pid) & (patches[f"res{group}_converged"] == "1")]
            dx, dy = p[f"res{group}_dx_m"].astype(float).to_numpy(), p[f"res{group}_dy_m"].astype(float).to_numpy()
            r = np.hypot(dx, dy)
            assert int(d[f"geo{group}_n"]) == len(r) > 2
            # the table holds 4 decimals of values computed from 4-decimal residuals: 1e-4 m
            expected = {"mean_dx_m": dx.mean(), "mean_dy_m": dy.mean(), "std_dx_m": dx.std(ddof=1),
                        "std_dy_m": dy.std(ddof=1), "rmse_m": np.sqrt((r**2).mean()), "ce90_m": np.percentile(r, 90),
                        "ce95_m": np.percentile(r, 95), "ce95_px": np.percentile(r, 95) / res}
            for key, value in expected.items():
                assert float(d[f"geo{group}_{key}"]) == pytest.approx(value, abs=2e-4), (pid, group, key)
            assert float(d[f"geo{group}_ce90_m"]) <= float(d[f"geo{group}_ce95_m"])
    # in STAC too, a property per item
    item = json.loads((site / "stac" / f"{pid}.json").read_text())
    assert item["properties"]["s2v:geo10_ce95_m"] == pytest.approx(float(details[pid]["geo10_ce95_m"]))


def test_geometric_quality_against_known_vectors():
    """Known vectors: 10 unit vectors along x give mean (1, 0), std (0, 0), RMSE 1, CE90 = CE95 = 1."""
    q = geometric_quality(np.ones(10), np.zeros(10), 10.0)
    assert (q["n"], q["mean_dx_m"], q["std_dx_m"], q["rmse_m"], q["ce90_m"], q["ce95_px"]) == (10, 1, 0, 1, 1, 0.1)
    r = np.arange(1, 101, dtype=float)  # radii 1..100 along y: CE90 is the 90th percentile, 90.1
    q = geometric_quality(np.zeros(100), r, 20.0)
    assert q["ce90_m"] == pytest.approx(90.1) and q["ce95_m"] == pytest.approx(95.05)
    assert q["ce90_px"] == pytest.approx(90.1 / 20) and np.isnan(geometric_quality([], [], 10.0)["rmse_m"])


def test_an_older_details_table_resumes_and_gains_the_new_columns(tiny_archive, tmp_path):
    """A folder whose pairs_details.tsv predates the added columns (0.4.x) resumes without rewriting a
    pair; the table is written again with the columns (empty for the old rows)."""
    _build(tiny_archive.root, tmp_path)
    site = tmp_path / "SYNTH-1"
    table = pd.read_csv(site / "pairs_details.tsv", sep="\t", dtype=str, keep_default_na=False)
    table.drop(columns=DETAIL_COLUMNS_ADDED).to_csv(site / "pairs_details.tsv", sep="\t", index=False)
    (site / "index.csv").write_text((site / "index.csv").read_text())
    summary = _build(tiny_archive.root, tmp_path)
    assert summary["written"] == 0 and summary["pairs_in_dataset"] >= 2
    header = (site / "pairs_details.tsv").read_text().splitlines()[0].split("\t")
    assert header[-len(DETAIL_COLUMNS_ADDED):] == DETAIL_COLUMNS_ADDED


# ---------------------------------------------------------------------------------------- splits
@pytest.fixture
def three_sites(tiny_archive, tmp_path):
    root = tmp_path / "ds"
    _build(tiny_archive.root, root)
    for site in ("SYNTH-2", "SYNTH-3"):
        clone_site(root / "SYNTH-1", root / site, site)
    return root


def test_a_split_by_site_holds_whole_sites_out_and_is_deterministic(three_sites):
    path = write_split(three_sites, SplitConfig(fractions=[0.34, 0.33, 0.33], seed=3))
    first = path.read_bytes()
    table = read_split(three_sites)
    sides = {}
    for pid, side in table.items():
        sides.setdefault(pid.split("_31TCJ_")[0], set()).add(side)
    assert all(len(s) == 1 for s in sides.values()) and {next(iter(s)) for s in sides.values()} == {"train", "val",
                                                                                                   "test"}
    write_split(three_sites, SplitConfig(fractions=[0.34, 0.33, 0.33], seed=3))
    assert path.read_bytes() == first  # seeded: the same table, byte for byte
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out here
        train = Sen2VenusDataset(three_sites, split="train")
        test = Sen2VenusDataset(three_sites, split="test")
    assert {p.site for p in train.pairs}.isdisjoint({p.site for p in test.pairs})
    whole = Sen2VenusDataset(three_sites)
    assert len(train) + len(test) + len(Sen2VenusDataset(three_sites, split="val")) == len(whole)
    with pytest.raises(ValueError, match="choose one of"):
        Sen2VenusDataset(three_sites, split="training")


def test_a_copied_site_folder_never_lands_on_both_sides(three_sites):
    shutil.copytree(three_sites / "SYNTH-1", three_sites / "SYNTH-1 copy")
    write_split(three_sites, SplitConfig(by=SplitBy.pair, fractions=[0.5, 0.0, 0.5]))
    table = pd.read_csv(three_sites / "split.csv", sep="\t")
    with pytest.warns(UserWarning, match="SYNTH-1 copy"):
        counted = Sen2VenusDataset(three_sites).pairs
    assert table["pair_id"].is_unique and len(table) == len(counted)


def test_assignment_follows_the_patch_shares():
    units = {f"S{k}": 100 for k in range(10)}
    chosen = assign_splits(units, [0.8, 0.1, 0.1], seed=0)
    assert sorted(chosen.values()).count("train") == 8 and sorted(chosen.values()).count("test") == 1
    assert assign_splits({"ONLY": 5}, [0.8, 0.1, 0.1], seed=0) == {"ONLY": "train"}


def test_split_command_card_and_refusals(three_sites, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "s2v_gpu.split", f"paths.dataset={three_sites}", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)

    bad = run("split.fractions=[0.5,0.6,0.1]")
    assert bad.returncode == 2 and "split.fractions" in bad.stderr and not (three_sites / "split.csv").exists()
    by_pair = run("split.by=pair")
    assert by_pair.returncode == 0 and "test scores will be optimistic" in by_pair.stderr + by_pair.stdout
    ok = run()
    assert ok.returncode == 0
    from s2v_gpu.card import dataset_card

    card = dataset_card(three_sites)
    assert "## Split" in card and "| train |" in card and "Sites on both sides" not in card


# ------------------------------------------------------------------------------- hostile inputs
def test_another_products_metadata_is_refused_naming_both(corpus, tmp_path):
    venus = _victim(corpus, "VENUS")
    other = next(p for p in corpus.iterdir() if p.name.startswith("VENUS") and p != venus)
    (venus / f"{venus.name}_MTD_ALL.xml").write_bytes((other / f"{other.name}_MTD_ALL.xml").read_bytes())
    _assert_isolated(_run(corpus, tmp_path), tmp_path, "failed", f"its PRODUCT_ID is {other.name}", venus.name)


def test_a_member_climbing_out_of_the_zip_is_never_read(corpus, tmp_path, caplog):
    """A member ``../../x/..._FRE_B3.tif`` beside the genuine one: ignored, named in the log, the pair
    is written from the genuine member."""
    z = _zip(_victim(corpus, "VENUS"))
    name = z.name[:-4]
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(f"../../x/{name}_FRE_B3.tif", b"not a raster")
        zf.writestr(f"/abs/{name}_FRE_B4.tif", b"not a raster")
    summary = _run(corpus, tmp_path)
    outcome = {o["pair_id"].rsplit("_", 1)[1]: o for o in summary["outcomes"]}
    assert outcome[VICTIM]["status"] == "written", outcome[VICTIM]
    assert f"'../../x/{name}_FRE_B3.tif' climbs out of the archive" in caplog.text
    assert f"'/abs/{name}_FRE_B4.tif'" in caplog.text


@pytest.mark.parametrize("value", ["paths.products=/data/Données", "paths.products=/data/x]y", "site=Ä"])
def test_a_value_hydra_cannot_lex_gets_the_quoting_hint(value):
    """Hydra's own parser refuses the value; the one line we print carries the hint."""
    from hydra.errors import HydraException

    from s2v_gpu.app import one_line

    with pytest.raises(HydraException) as err:
        compose_cfg([value, "data=theia"])
    assert "quote the value" in one_line(err.value) and "\n" not in one_line(err.value)


def test_the_quoting_hint_reaches_the_user_on_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "s2v_gpu.run", "paths.products=/data/Données", "data=theia"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "quote the value" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_write_cut_by_the_file_size_limit_names_the_cause_and_the_file(tiny_archive, tmp_path):
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
            "sys.argv = ['s2v_gpu.run'] + sys.argv[1:]; import s2v_gpu.run as r; r.main()")
    out = subprocess.run([sys.executable, "-c", code, "data=theia", f"paths.products={tiny_archive.root}",
                          f"paths.dataset={tmp_path / 'ds'}", *TINY], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    summary = json.loads((tmp_path / "ds" / "SYNTH-1" / "summary.json").read_text())
    failed = [o for o in summary["outcomes"] if o["status"] == "failed"]
    assert failed and all("File too large" in o["reason"] and "ulimit -f" in o["reason"] for o in failed), failed
    assert any(".pt" in o["reason"] for o in failed) and "unexpected pos" not in out.stderr
    assert not [f for f in (tmp_path / "ds" / "SYNTH-1").iterdir() if f.name.startswith(".tmp-")]
