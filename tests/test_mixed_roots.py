"""A dataset root as users leave it: backup copies, renamed folders, folders of someone else's, links,
a site being written; and files of theirs where the run writes its by-products. One pair counts once,
a folder is known by its manifest, and no file that the runs did not write is replaced."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest

from s2v_gpu.aggregate import aggregate
from s2v_gpu.dataset import Sen2VenusDataset
from s2v_gpu.ownership import ForeignFileError
from s2v_gpu.run import execute
from s2v_gpu.synthetic import generate, preset
from s2v_gpu.writer import FolderLock

from .test_run import TINY, compose_cfg


def _build(products, dataset, *extra):
    return execute(compose_cfg(["data=theia", f"paths.products={products}", f"paths.dataset={dataset}", *TINY,
                                *extra]))


@pytest.fixture(scope="module")
def two_sites(tiny_archive, tmp_path_factory):
    """A root with two genuine sites (SYNTH-1, SYNTH-2), built once."""
    root = tmp_path_factory.mktemp("mixed") / "ds"
    _build(tiny_archive.root, root)
    other = generate(preset("tiny", site="SYNTH-2"), tmp_path_factory.mktemp("tiny2"))
    _build(other.root, root, "site=SYNTH-2")
    return root


@pytest.fixture
def root(two_sites, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(two_sites, out, symlinks=True)
    return out


def _counts(root):
    """(sites, pairs, patches) as the aggregate, the Dataset and the report give them."""
    merged = aggregate(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = Sen2VenusDataset(root)
    report = json.loads((root / "report" / "report.json").read_text())
    by_report = (len(report["sites"]), sum(c["pairs"] for c in report["site_counts"]),
                 sum(c["patches"] for c in report["site_counts"]))
    by_dataset = (len({p.site for p in ds.pairs}), len(ds.pairs), len(ds))
    return (len(merged["sites"]), merged["pairs"], merged["patches"]), by_dataset, by_report, merged


def _genuine(two_sites):
    counts = []
    for site in ("SYNTH-1", "SYNTH-2"):
        lines = (two_sites / site / "index.csv").read_text().splitlines()[1:]
        counts.append((len(lines), sum(int(line.split("\t")[-1]) for line in lines)))
    return counts


def test_two_genuine_sites_count_as_two(root, two_sites):
    (p1, n1), (p2, n2) = _genuine(two_sites)
    agg, ds, rep, merged = _counts(root)
    assert agg == ds == rep == (2, p1 + p2, n1 + n2) and p1 >= 2 and p2 >= 2
    assert merged["left_out"] == []


@pytest.mark.parametrize("copies", [["SYNTH-1 copy", "SYNTH-1_old"], ["SYNTH-2-renamed"], ["ATTO"]])
def test_copies_under_other_names_are_left_out_and_named(root, two_sites, copies, caplog):
    """Backup copies (a file manager's names), a copy under another site's name: the manifest records
    SYNTH-1, so only SYNTH-1/ counts; each copy is named with the reason."""
    (p1, n1), (p2, n2) = _genuine(two_sites)
    for name in copies:
        shutil.copytree(root / "SYNTH-1", root / name)
    agg, ds, rep, merged = _counts(root)
    assert agg == ds == rep == (2, p1 + p2, n1 + n2)
    left = {os.path.basename(x["path"]): x["reason"] for x in merged["left_out"]}
    assert set(left) == set(copies) and all("records the site SYNTH-1" in r for r in left.values())
    for name in copies:
        assert f"{name}: left out" in caplog.text
    with pytest.warns(UserWarning, match=copies[0]):
        Sen2VenusDataset(root)


def test_a_site_folder_renamed_by_hand_is_left_out(root, two_sites):
    (p1, n1), _ = _genuine(two_sites)
    (root / "SYNTH-2").rename(root / "SYNTH-3")
    agg, ds, rep, merged = _counts(root)
    assert agg == ds == rep == (1, p1, n1)
    assert [os.path.basename(x["path"]) for x in merged["left_out"]] == ["SYNTH-3"]


def test_a_pair_held_twice_counts_once(root, two_sites):
    """Two folders that both pass the name check but hold the same pair (a row copied into another
    site's index by hand): the first folder in name order keeps it."""
    (p1, n1), (p2, n2) = _genuine(two_sites)
    rows = (root / "SYNTH-1" / "index.csv").read_text().splitlines()
    with open(root / "SYNTH-2" / "index.csv", "a") as f:
        f.write(rows[1] + "\n")
    # SYNTH-2's manifest would not list the copied row's files: only the counting is under test here
    agg, ds, rep, merged = _counts(root)
    assert agg == ds == rep == (2, p1 + p2, n1 + n2)
    assert any("already counted from" in x["reason"] for x in merged["left_out"])


def test_foreign_empty_and_linked_folders_are_named_never_touched(root, two_sites, tmp_path):
    (p1, n1), (p2, n2) = _genuine(two_sites)
    foreign = root / "NOT-OURS"
    foreign.mkdir()
    (foreign / "index.csv").write_bytes(b"\xff\xfe not a table of ours")
    (foreign / "notes.txt").write_text("mine")
    (root / "EMPTY").mkdir()
    (root / "LINKED").symlink_to(root / "SYNTH-1")
    before = {p: p.read_bytes() for p in foreign.iterdir()}
    agg, ds, rep, merged = _counts(root)
    assert agg == ds == rep == (2, p1 + p2, n1 + n2)
    left = {os.path.basename(x["path"]): x["reason"] for x in merged["left_out"]}
    assert set(left) == {"NOT-OURS", "EMPTY", "LINKED"}
    assert "no manifest.json" in left["NOT-OURS"] and "no index.csv" in left["EMPTY"]
    assert "symbolic link" in left["LINKED"]
    assert {p: p.read_bytes() for p in foreign.iterdir()} == before


def test_a_site_being_written_is_merged_with_its_complete_pairs(root, two_sites):
    (p1, n1), (p2, n2) = _genuine(two_sites)
    lock = FolderLock(root / "SYNTH-2")
    lock.acquire()
    try:
        agg, _, _, merged = _counts(root)
    finally:
        lock.release()
    assert agg == (2, p1 + p2, n1 + n2) and merged["being_written"] == [str(root / "SYNTH-2")]


def test_aggregate_command_exit_status_over_mixed_roots(root, tmp_path):
    """0 with a warning per folder left out; 1 when nothing of ours is there; 2 when a file of someone
    else's stands where the aggregate writes (named; the file is untouched); never a traceback."""
    (root / "NOT-OURS").mkdir()
    (root / "NOT-OURS" / "index.csv").write_text("a,b\n1,2\n")

    def run(folder):
        return subprocess.run([sys.executable, "-m", "s2v_gpu.aggregate", f"paths.dataset={folder}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    ok = run(root)
    assert ok.returncode == 0 and "NOT-OURS: left out" in ok.stderr + ok.stdout and "Traceback" not in ok.stderr
    nothing = tmp_path / "nothing"
    shutil.copytree(root / "NOT-OURS", nothing / "NOT-OURS")
    empty = run(nothing)
    assert empty.returncode == 1 and "no site folder of s2v_gpu" in empty.stderr + empty.stdout
    assert "Traceback" not in empty.stderr
    fresh = tmp_path / "fresh"
    shutil.copytree(root / "SYNTH-1", fresh / "SYNTH-1")
    (fresh / "DATASET_CARD.md").write_text("my own card")
    refused = run(fresh)
    assert refused.returncode == 2 and "DATASET_CARD.md exists and was not written by s2v_gpu" in refused.stderr
    assert (fresh / "DATASET_CARD.md").read_text() == "my own card" and "Traceback" not in refused.stderr
    assert sorted(p.name for p in fresh.iterdir()) == ["DATASET_CARD.md", "SYNTH-1"]  # nothing else written


# ------------------------------------------------------------------ by-products: files not ours kept
@pytest.mark.parametrize("where, first, then", [
    ("v2/SYNTH-1.zip", [], ["format=v2", "overwrite=true"]),
    ("v2/index.csv", [], ["format=v2", "overwrite=true"]),
    ("report/report.html", [], ["report=true"]),
    ("stac/collection.json", ["stac=false"], ["stac=true"]),
    ("DATASET_CARD.md", ["stac=false"], ["stac=true"]),
])
def test_a_file_not_ours_where_a_by_product_goes_is_kept_and_named(tiny_archive, tmp_path, where, first, then):
    """The user's file at a by-product's path (the v2 zip or index, the report, the STAC collection,
    the card) after a first run that did not write it: the next run leaves it byte for byte, records
    the refusal naming it in the summary, and keeps the dataset."""
    ds = tmp_path / "ds"
    _build(tiny_archive.root, ds, *first)
    mine = ds / "SYNTH-1" / where
    mine.parent.mkdir(exist_ok=True)
    mine.write_bytes(b"the user's own file")
    summary = _build(tiny_archive.root, ds, *first, *then)
    assert mine.read_bytes() == b"the user's own file"
    errors = [v for k, v in summary.items() if k.endswith("_error")]
    assert len(errors) == 1 and str(mine) in errors[0] and "not written by s2v_gpu" in errors[0]
    assert summary["pairs_in_dataset"] >= 2


def test_a_licence_not_ours_is_kept(tiny_archive, tmp_path):
    site = tmp_path / "ds" / "SYNTH-1"
    site.mkdir(parents=True)
    (site / "LICENCE").write_text("my licence")
    summary = _build(tiny_archive.root, tmp_path / "ds", "layout=published")
    assert (site / "LICENCE").read_text() == "my licence"
    assert "LICENCE exists and was not written" in summary["licence_error"] and summary["pairs_in_dataset"] >= 2


def test_a_folder_of_0_4_adopts_its_own_by_products_once(tiny_archive, tmp_path):
    """A 0.4.x site folder (no ledger in report/, stac/): a resume rewrites its own report and STAC,
    but never adopts a v2/ zip the configuration of that folder did not export."""
    ds = tmp_path / "ds"
    _build(tiny_archive.root, ds, "report=true")
    site = ds / "SYNTH-1"
    manifest = json.loads((site / "manifest.json").read_text())
    manifest["software"]["s2v_gpu"] = "0.4.1"
    (site / "manifest.json").write_text(json.dumps(manifest))
    for sub in ("report", "stac"):
        (site / sub / ".s2v_owned.json").unlink()
    (site / "v2").mkdir()
    (site / "v2" / "SYNTH-1.zip").write_bytes(b"a zip of the user's")
    summary = _build(tiny_archive.root, ds, "report=true")
    assert not any(k.endswith("_error") for k in summary)
    for sub in ("report", "stac"):
        assert (site / sub / ".s2v_owned.json").exists()
    from s2v_gpu.ownership import legacy_names

    assert legacy_names(site, "v2") is None and legacy_names(site, "report") is not None


def test_a_damaged_ledger_proves_nothing(tmp_path):
    from s2v_gpu.ownership import OwnedFolder

    (tmp_path / "a.json").write_text("x")
    (tmp_path / ".s2v_owned.json").write_text("{not json")
    with pytest.raises(ForeignFileError, match="a.json"):
        OwnedFolder(tmp_path).claim(["b.json", "a.json"])
    assert (tmp_path / "a.json").read_text() == "x"
