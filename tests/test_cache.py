"""The sweep cache: a threshold sweep reuses each pair's registration, MTF and fit, and gives exactly
the tensors of a run without it; anything else that changes recomputes; foreign files run no code."""

import hashlib
import logging
import os
import pickle

import pytest

from s2v_gpu.cache import CACHE_DIR
from s2v_gpu.layout import read_index_rows
from s2v_gpu.run import execute

from .test_run import TINY, compose_cfg

STAC_OFF = ["stac=false"]


def _run(archive, base, sub, *extra):
    cfg = compose_cfg(["data=theia", f"paths.products={archive.root}", f"paths.dataset={base}", *TINY, *STAC_OFF,
                       *extra])
    return execute(cfg, base / sub)


def _digest(folder):
    """sha256 of every tensor and table a run wrote in a site folder."""
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".pt", ".csv") or p.name == "patches.tsv")
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


def _entries(base):
    return sorted(p.name for p in (base / CACHE_DIR).glob("*.pt"))


def test_a_threshold_sweep_reuses_the_pairs_and_writes_the_same_bytes(tiny_archive, tmp_path, caplog):
    base = tmp_path / "sweep"
    # a threshold that drops some patches on the tiny archive, and the default
    loose, tight = "pipeline.selection.outlier_rmse=0.02", "pipeline.selection.outlier_rmse=0.0025"
    first = _run(tiny_archive, base, "a", "cache=on", loose)
    cached = _entries(base)
    assert len(cached) == first["pairs"]  # skipped pairs too: their reason is cached
    with caplog.at_level(logging.INFO, logger="s2v_gpu.run"):
        summary = _run(tiny_archive, base, "b", "cache=on", tight)
    assert _entries(base) == cached  # nothing recomputed
    hits = [r for r in caplog.records if "taken from the cache" in r.getMessage()]
    assert len(hits) == summary["pairs"]
    # exactly the bytes of runs without the cache
    _run(tiny_archive, tmp_path / "plain", "b", "cache=off", tight)
    _run(tiny_archive, tmp_path / "plain", "a", "cache=off", loose)
    for sub in ("a", "b"):  # the cache holds this process's own tensors: the same operations, byte for byte
        assert _digest(base / sub / "SYNTH-1") == _digest(tmp_path / "plain" / sub / "SYNTH-1")
    kept = [sum(int(r["nb_patches"]) for r in read_index_rows(base / s / "SYNTH-1")) for s in ("a", "b")]
    assert kept[1] < kept[0], "the tight threshold must drop patches, or this test proves nothing"
    assert not (tmp_path / "plain" / CACHE_DIR).exists()  # a single run does not cache by default (auto)


def test_another_method_setting_or_a_changed_product_recomputes(tiny_archive, tmp_path):
    base = tmp_path / "sweep"
    _run(tiny_archive, base, "a", "cache=on")
    first = set(_entries(base))
    _run(tiny_archive, base, "b", "cache=on", "pipeline.radiometry.fit_max_rmse=0.15")
    second = set(_entries(base)) - first
    assert len(second) == len(first)  # every pair under a new key
    venus = next(p for p in tiny_archive.root.iterdir() if p.name.startswith("VENUS"))
    some_file = next(p for p in venus.rglob("*.tif"))
    stat = some_file.stat()
    os.utime(some_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        _run(tiny_archive, base, "c", "cache=on")
    finally:
        os.utime(some_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len(set(_entries(base)) - first - second) == 1  # the pair of that product only


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(_Payload.target),))


def test_a_foreign_cache_file_runs_no_code_and_is_recomputed(tiny_archive, tmp_path, caplog):
    base = tmp_path / "sweep"
    _run(tiny_archive, base, "a", "cache=on")
    reference = _digest(base / "a" / "SYNTH-1")
    _Payload.target = tmp_path / "pwned"
    for entry in (base / CACHE_DIR).glob("*.pt"):
        entry.write_bytes(pickle.dumps({"format": 1, "tensors": _Payload()}))
    with caplog.at_level(logging.WARNING, logger="s2v_gpu.cache"):
        _run(tiny_archive, base, "b", "cache=on")
    assert not _Payload.target.exists()
    assert any("unusable" in r.getMessage() for r in caplog.records)
    assert _digest(base / "b" / "SYNTH-1") == reference


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_no_cache_outside_sweeps_unless_asked(tiny_archive, tmp_path, mode):
    _run(tiny_archive, tmp_path, "a", f"cache={mode}")
    assert not (tmp_path / CACHE_DIR).exists()


def test_a_cache_entry_of_the_wrong_shape_is_recomputed(tiny_archive, tmp_path, caplog):
    import torch

    base = tmp_path / "sweep"
    _run(tiny_archive, base, "a", "cache=on")
    reference = _digest(base / "a" / "SYNTH-1")
    for entry in (base / CACHE_DIR).glob("*.pt"):
        record = torch.load(entry, weights_only=True)
        if "tensors" in record:  # a pair that gave patches: its S2 patches cut in half
            record["tensors"]["s10"] = record["tensors"]["s10"][..., :8]
            torch.save(record, entry)
    with caplog.at_level(logging.WARNING, logger="s2v_gpu.cache"):
        _run(tiny_archive, base, "b", "cache=on")
    assert any("unexpected shapes" in r.getMessage() for r in caplog.records)
    assert _digest(base / "b" / "SYNTH-1") == reference
