"""Many sites through Hydra launchers: a real multirun over two synthetic sites with submitit's local
executor (real subprocesses), then the merged index."""

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from s2v_gpu.run import resolve_device
from s2v_gpu.synthetic import SyntheticDate, generate, preset

from .test_run import TINY


@pytest.fixture(scope="module")
def two_sites(tiny_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("two_sites")
    shutil.copytree(tiny_archive.root, root / "site1")
    dates = [SyntheticDate("2018-08-01", shift_m=[2.0, 5.0], venus_cloud=0.0, s2_cloud=0.02),
             SyntheticDate("2018-08-11", shift_m=[-3.0, 1.0], venus_cloud=0.02, s2_cloud=0.0)]
    generate(preset("tiny", site="SYNTH-2", tile="31TDJ", origin=[420000.0, 4850000.0], seed=9, dates=dates),
             root / "site2")
    return root


def test_submitit_local_multirun_and_merge(two_sites, tmp_path):
    cmd = [sys.executable, "-m", "s2v_gpu.run", "-m", "site=SYNTH-1,SYNTH-2", "data=theia",
           f"paths.products={two_sites}", "paths.dataset=ds", "hydra/launcher=local", "hydra.sweep.dir=sweep",
           *TINY]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    # each job ran in its own process under submitit and wrote its own site folder
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2
    for site in ("SYNTH-1", "SYNTH-2"):
        index = pd.read_csv(tmp_path / "ds" / site / "index.csv", sep="\t")
        assert len(index) >= 1 and set(index["vns_site"]) == {site}
    p = subprocess.run([sys.executable, "-m", "s2v_gpu.aggregate", "paths.dataset=ds"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    merged = pd.read_csv(tmp_path / "ds" / "index.csv", sep="\t")
    assert set(merged["vns_site"]) == {"SYNTH-1", "SYNTH-2"}
    per_site = sum(len(pd.read_csv(tmp_path / "ds" / s / "index.csv", sep="\t")) for s in ("SYNTH-1", "SYNTH-2"))
    assert len(merged) == per_site
    assert (tmp_path / "ds" / "report" / "report.html").exists()
    # a site rerun resumes: nothing left to write
    p = subprocess.run([sys.executable, "-m", "s2v_gpu.run", "site=SYNTH-2", "data=theia",
                        f"paths.products={two_sites}", "paths.dataset=ds", *TINY], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "0 written now" in p.stdout + p.stderr


def test_launcher_presets_compose():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="s2v_gpu.conf", version_base="1.3"):
        launchers = (("slurm_gpu", "SlurmLauncher"), ("local", "LocalLauncher"), ("multi_gpu", "JoblibLauncher"))
        for name, target in launchers:
            cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
        assert cfg.hydra.launcher.n_jobs == 4
        cfg = compose("config", overrides=["hydra/launcher=slurm_gpu"], return_hydra_config=True)
        assert cfg.hydra.launcher.gpus_per_node == 1


def test_jobs_pin_different_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [str(resolve_device("auto", k)) for k in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]
    assert str(resolve_device("auto", None)) == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert str(resolve_device("auto", 3)) == "cuda"


@pytest.mark.slow
def test_a_parallel_threshold_sweep_computes_each_pair_once(tiny_archive, tmp_path):
    """Two jobs of a sweep running at once (submitit's local executor: real processes) share the
    cache: each pair is computed by one of them, the other waits on its lock and reads it."""
    cmd = [sys.executable, "-m", "s2v_gpu.run", "-m", "pipeline.selection.outlier_rmse=0.02,0.0025", "data=theia",
           f"paths.products={tiny_archive.root}", "paths.dataset=ds", "hydra/launcher=local",
           "hydra.sweep.dir=sweep", "stac=false", *TINY]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    logs = "".join(f.read_text() for f in (tmp_path / "sweep").rglob("*.log"))
    n_pairs = len(list((tmp_path / "ds" / ".s2v_cache").glob("*.pt")))
    assert n_pairs == 4 and logs.count("taken from the cache") == n_pairs, logs[-3000:]
    kept = [pd.read_csv(tmp_path / "ds" / f"pipeline.selection.outlier_rmse={v}" / "SYNTH-1" / "index.csv",
                        sep="\t")["nb_patches"].sum() for v in ("0.02", "0.0025")]
    assert kept[1] < kept[0]
