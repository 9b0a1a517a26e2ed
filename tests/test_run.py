"""The run app: Hydra config, the SEN2VENuS layout on disk, resume after an interruption, sweeps."""

import subprocess
import sys

import fiona
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import s2v_gpu.run as run_mod
from s2v_gpu.config import ConfigError
from s2v_gpu.layout import INDEX_COLUMNS
from s2v_gpu.run import execute

TINY = ["pipeline.patches.size_5m=64", "pipeline.radiometry.min_pixels=200", "progress=false", "report=false"]


def compose_cfg(overrides):
    with initialize_config_module(config_module="s2v_gpu.conf", version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=overrides))


def _cfg(tiny_archive, tmp_path, *extra):
    return compose_cfg(["data=theia", f"paths.products={tiny_archive.root}", f"paths.dataset={tmp_path / 'ds'}",
                        *TINY, *extra])


def test_layout_loads_with_plain_libraries(tiny_archive, tmp_path):
    cfg = _cfg(tiny_archive, tmp_path)
    summary = execute(cfg)
    site_dir = tmp_path / "ds" / "SYNTH-1"
    assert summary["written"] >= 1 and summary["pairs"] == 4
    index = pd.read_csv(site_dir / "index.csv", sep="\t")
    assert list(index.columns) == INDEX_COLUMNS
    assert len(index) == summary["pairs_in_dataset"] == summary["written"]
    statuses = {o["pair_id"]: o["status"] for o in summary["outcomes"]}
    assert statuses["SYNTH-1_31TCJ_2018-07-12"] == "skipped"  # the fully cloudy VENuS date
    for _, row in index.iterrows():
        assert row["vns_site"] == "SYNTH-1" and row["s2_tile"] == "31TCJ"
        assert row["tensor_05m_b2b3b4b8"] == f"SYNTH-1_31TCJ_{row['date']}_05m_b2b3b4b8.pt"
        n = row["nb_patches"]
        shapes = {"tensor_05m_b2b3b4b8": 64, "tensor_10m_b2b3b4b8": 32, "tensor_05m_b5b6b7b8a": 64,
                  "tensor_20m_b5b6b7b8a": 16}
        tensors = {}
        for col, size in shapes.items():
            t = torch.load(site_dir / row[col])
            assert t.dtype == torch.int16 and t.shape == (n, 4, size, size)
            refl = t.float() / 10000
            assert 0.0 < refl.mean() < 0.5 and refl.max() < 1.0  # reflectance x 10000
            tensors[col] = refl
        # 10 m patch = 2x2 average of the 5 m patch, to the radiometric fit's accuracy
        v10 = torch.nn.functional.avg_pool2d(tensors["tensor_05m_b2b3b4b8"], 2)
        assert (v10 - tensors["tensor_10m_b2b3b4b8"]).abs().mean() < 0.02
        with fiona.open(site_dir / row["patches_gpkg"]) as src:
            feats = list(src)
            assert src.crs.to_epsg() == 32631
        assert len(feats) == n
        assert [f["properties"]["patch"] for f in feats] == list(range(n))
        assert all(f["properties"]["pair_id"] == f"SYNTH-1_31TCJ_{row['date']}" for f in feats)
        grid = [f["properties"]["grid_index"] for f in feats]
        assert grid == sorted(grid)
        x0, y0 = tiny_archive.truth["bounds"][0], tiny_archive.truth["bounds"][3]
        for f, g in zip(feats, grid):
            ring = f["geometry"]["coordinates"][0]
            cols = 320 // 64
            assert ring[0] == pytest.approx((x0 + (g % cols) * 320, y0 - (g // cols) * 320))
    details = pd.read_csv(site_dir / "pairs_details.tsv", sep="\t")
    assert set(details["pair_id"]) == {f"SYNTH-1_31TCJ_{d}" for d in index["date"]}
    assert {"shift_dx_m", "n_matches", "shift_spread_m", "w_10m", "dropped_outlier"} <= set(details.columns)


def _snapshot(site_dir):
    out = {}
    for f in sorted(site_dir.iterdir()):
        if f.suffix == ".pt" or f.name in ("index.csv",):
            out[f.name] = f.read_bytes()
        elif f.suffix == ".gpkg":
            with fiona.open(f) as src:
                out[f.name] = [(dict(x["properties"]), x["geometry"]["coordinates"]) for x in src]
    return out


def test_interrupted_run_resumes_to_identical_output(tiny_archive, tmp_path, monkeypatch):
    reference_dir = tmp_path / "ref"
    execute(_cfg(tiny_archive, reference_dir))
    reference = _snapshot(reference_dir / "ds" / "SYNTH-1")

    calls = {"n": 0}
    real_write = run_mod.write_pair

    def dying_writer(writer, cfg, pair, result, names, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            # killed in the middle of the second pair: one tensor written, then the process dies
            from s2v_gpu.writer import to_int16, write_tensor

            writer.manifest["pending"][names["pair_id"]] = [names["tensor_05m_b2b3b4b8"]]
            writer._save_manifest()
            write_tensor(writer.site_dir / names["tensor_05m_b2b3b4b8"], to_int16(result.v05_10))
            raise KeyboardInterrupt
        real_write(writer, cfg, pair, result, names, *args)

    monkeypatch.setattr(run_mod, "write_pair", dying_writer)
    cfg = _cfg(tiny_archive, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        execute(cfg)
    site_dir = tmp_path / "run" / "ds" / "SYNTH-1"
    assert len(pd.read_csv(site_dir / "index.csv", sep="\t")) == 1
    monkeypatch.setattr(run_mod, "write_pair", real_write)
    summary = execute(cfg)
    assert [o["status"] for o in summary["outcomes"]].count("complete") == 1
    assert _snapshot(site_dir) == reference
    assert not [f for f in site_dir.iterdir() if f.name.startswith(".tmp-")]
    # a third run has nothing left to do
    again = execute(cfg)
    assert again["written"] == 0 and again["pairs_in_dataset"] == len(pd.read_csv(site_dir / "index.csv", sep="\t"))


def test_published_layout_names(tiny_archive, tmp_path):
    execute(_cfg(tiny_archive, tmp_path, "layout=published"))
    index = pd.read_csv(tmp_path / "ds" / "SYNTH-1" / "index.csv", sep="\t")
    assert index["tensor_05m_b5b6b7b8a"].iloc[0].startswith("SYNTH-1__31TCJ_")
    assert index["tensor_05m_b5b6b7b8a"].iloc[0].endswith("_05m_b4b5b6b8a.pt")


@pytest.mark.parametrize("override, message", [
    ("pipeline.selection.outlier_rmse=-0.02", "outlier_rmse=-0.02 must be > 0"),
    ("pairing.max_dt_minutes=-1", "max_dt_minutes=-1.0 must be >= 0"),
    ("pipeline.registration.max_distance_m=inf", "max_distance_m=inf: must be a finite number"),
    ("pipeline.registration.phase_min_tiles=0", "phase_min_tiles=0 must be >= 1"),
    ("demo.seed=-1", "demo.seed=-1 must be >= 0"),
    ("pipeline.registration.phase_min_peak=1.5", r"phase_min_peak=1.5 must be in \[0, 1\]"),
    ("pipeline.registration.refine_coarse_step=0", r"refine_coarse_step=0 must be in \[1, 16\]"),
    ("pipeline.registration.refine_coarse_tol_px=0", r"refine_coarse_tol_px=0.0 must be in \(0, 1\]"),
    ("site=..", "site='..'"),
])
def test_bad_values_are_refused_before_any_work(tiny_archive, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        execute(_cfg(tiny_archive, tmp_path, override))
    assert not (tmp_path / "ds").exists()


def test_unknown_site_and_missing_folder(tiny_archive, tmp_path):
    with pytest.raises(ConfigError, match="site=ATTO: no VENuS product of that site") as refused:
        execute(_cfg(tiny_archive, tmp_path, "site=ATTO"))
    assert "did you mean" not in str(refused.value)  # ATTO is a site, just not here
    with pytest.raises(ConfigError, match="did you mean SYNTH-1[?]"):  # a typo of a site found
        execute(_cfg(tiny_archive, tmp_path, "site=SYNTH1"))
    with pytest.raises(ConfigError, match="did you mean ALSACE, a SEN2VENuS site with no product here"):
        execute(_cfg(tiny_archive, tmp_path, "site=ALSCE"))
    cfg = compose_cfg(["data=theia", f"paths.products={tmp_path / 'nowhere'}", *TINY])
    with pytest.raises(ConfigError, match="folder not found"):
        execute(cfg)


def test_presets_compose():
    cfg = compose_cfg(["preset=paper"])
    assert cfg.pipeline.registration.mode == "paper" and not cfg.pipeline.registration.refine
    assert cfg.pipeline.selection.max_patches == 500 and cfg.pipeline.selection.outlier_rmse == 0.02
    assert cfg.pipeline.registration.tile_size == 366 and cfg.pipeline.registration.max_distance_m == 15.0
    cfg = compose_cfg([])
    assert cfg.pipeline.registration.mode == "robust" and cfg.paths.products is None
    assert compose_cfg(["device=cpu"]).device.name == "cpu"


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "s2v_gpu.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_cli_wrong_key_and_bad_value_fail_with_a_message(tiny_archive, tmp_path):
    p = _cli(["data=theia", f"paths.products={tiny_archive.root}", "pipeline.selection.outlier=0.1"], tmp_path)
    assert p.returncode != 0 and "outlier" in p.stderr
    p = _cli(["data=theia", f"paths.products={tiny_archive.root}", "pipeline.selection.outlier_rmse=-1"], tmp_path)
    assert p.returncode == 2 and "outlier_rmse=-1.0 must be > 0" in p.stdout + p.stderr


def test_multirun_sweep_writes_each_value_apart(tiny_archive, tmp_path):
    p = _cli(["-m", "data=theia", f"paths.products={tiny_archive.root}", "paths.dataset=ds", *TINY,
              "pipeline.selection.outlier_rmse=0.001,0.003,0.02", "hydra.sweep.dir=sweep"], tmp_path)
    # outlier_rmse=0.001 keeps nothing: the sweep says which job wrote nothing, and exits 1
    assert p.returncode == 1, p.stderr[-3000:]
    counts = {}
    for value in ("0.001", "0.003", "0.02"):
        # one dataset folder per combination, named by Hydra's override_dirname
        (folder,) = (tmp_path / "ds").glob(f"*pipeline.selection.outlier_rmse={value}")
        index = folder / "SYNTH-1" / "index.csv"
        counts[value] = int(pd.read_csv(index, sep="\t")["nb_patches"].sum()) if index.exists() else 0
    assert counts["0.001"] < counts["0.003"] <= counts["0.02"] and counts["0.02"] > 0
    table = pd.read_csv(tmp_path / "sweep" / "sweep_summary.tsv", sep="\t")
    assert len(table) == 3
    assert sorted(table["patches"]) == sorted(counts.values())
    status = dict(zip(table["overrides"].str.extract(r"outlier_rmse=([0-9.]+)")[0], table["status"]))
    assert status == {"0.001": "empty", "0.003": "ok", "0.02": "ok"}
    assert "nothing could be processed" in table.loc[table["status"] == "empty", "reason"].iloc[0]


def test_site_all_builds_every_site_found(tmp_path):
    from s2v_gpu.synthetic import generate, preset

    generate(preset("tiny", site="SYNTH-1"), tmp_path / "products" / "a")
    generate(preset("tiny", site="SYNTH-2"), tmp_path / "products" / "b")  # same ground: the S2 products coincide
    summary = execute(compose_cfg(["data=theia", f"paths.products={tmp_path / 'products'}",
                                   f"paths.dataset={tmp_path / 'ds'}", *TINY, "site=all"]))
    assert summary["site"] == "all" and sorted(summary["sites"]) == ["SYNTH-1", "SYNTH-2"]
    for site in ("SYNTH-1", "SYNTH-2"):
        index = pd.read_csv(tmp_path / "ds" / site / "index.csv", sep="\t")
        assert len(index) == summary["sites"][site]["pairs_in_dataset"] > 0 and set(index["vns_site"]) == {site}
    assert summary["pairs_in_dataset"] == sum(s["pairs_in_dataset"] for s in summary["sites"].values())
