"""Runs you can trust: configuration errors refused before any work (exit 2, one line naming the key),
resumes that never mix configurations, provenance in every output, a benchmark that checks before
it measures. Each case fails on the code before this change."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from s2v_gpu.config import config_hash
from s2v_gpu.writer import OutputFolderError

from .test_bad_inputs import KILLER, _run
from .test_run import TINY, compose_cfg

REPO = Path(__file__).resolve().parents[1]


def _cli(args, cwd, module="s2v_gpu.run"):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _one_line(p) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    return lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["data=theia"], ["paths.products is required with data=theia"]),
    (["pipeline.selection.outlier=0.1"], ["pipeline.selection.outlier"]),
    (["+pipeline.selection.outlierr=0.1"], ["pipeline.selection.outlierr", "outlier_rmse"]),
    (["+foo=1"], ["unknown key foo"]),
    (["preset=fancy"], ["preset", "fancy", "paper"]),
    (["pipeline.selection.max_patches=abc"], ["pipeline.selection.max_patches", "abc"]),
    (["pipeline.registration.mode=fancy"], ["pipeline.registration.mode", "paper, robust"]),
    (["layout=release"], ["layout", "clean, published"]),
    (["pipeline.registration.max_distance_m=inf"], ["max_distance_m=inf", "finite"]),
    (["pipeline.radiometry.n_pixels=-5"], ["pipeline.radiometry.n_pixels=-5"]),
    (["paths.products=/nowhere"], ["paths.products=/nowhere", "data=theia"]),
    (["data=theia", "paths.products=/nowhere/é"], ["paths.products"]),
])
def test_configuration_errors_exit_2_on_one_line_before_any_work(tmp_path, args, fragments):
    p = _cli([*args, "paths.dataset=ds"], tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    line = _one_line(p)
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "ds").exists() and not (tmp_path / "demo_products").exists()


def test_a_changed_configuration_is_refused_on_resume_and_rebuilt_on_request(corpus, tmp_path):
    first = _run(corpus, tmp_path)
    site = tmp_path / "ds" / "SYNTH-1"
    index_before = (site / "index.csv").read_bytes()
    with pytest.raises(OutputFolderError, match=r"pipeline\.selection\.outlier_rmse: 0\.02 -> 0\.01"):
        _run(corpus, tmp_path, "pipeline.selection.outlier_rmse=0.01")
    assert (site / "index.csv").read_bytes() == index_before
    with pytest.raises(OutputFolderError, match="registration.mode"):
        _run(corpus, tmp_path, "preset=paper")
    same = _run(corpus, tmp_path)  # the same configuration resumes as before
    assert same["written"] == 0 and same["pairs_in_dataset"] == first["pairs_in_dataset"]
    rebuilt = _run(corpus, tmp_path, "pipeline.selection.outlier_rmse=0.01", "overwrite=true")
    assert rebuilt["written"] == rebuilt["pairs_in_dataset"] > 0
    manifest = json.loads((site / "manifest.json").read_text())
    assert manifest["method"]["pipeline"]["selection"]["outlier_rmse"] == 0.01
    details = pd.read_csv(site / "pairs_details.tsv", sep="\t", dtype=str)
    assert set(details["config_hash"]) == {manifest["config_hash"]}


def test_a_killed_run_resumed_with_another_threshold_is_refused(corpus, tmp_path):
    args = ["data=theia", f"paths.products={corpus}", *TINY, "paths.dataset=run"]
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "KILL_AT": "7"})
    assert killed.returncode == -signal.SIGKILL
    changed = _cli([*args, "pipeline.selection.outlier_rmse=0.03"], tmp_path)
    assert changed.returncode == 2 and "another configuration" in _one_line(changed)
    resumed = _cli(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "run" / "SYNTH-1" / "index.csv", sep="\t")) == 3


def test_every_output_records_what_made_it(corpus, tmp_path):
    summary = _run(corpus, tmp_path)
    site = tmp_path / "ds" / "SYNTH-1"
    manifest = json.loads((site / "manifest.json").read_text())
    for key in ("s2v_gpu", "torch", "kornia", "rasterio", "gdal", "python"):
        assert manifest["software"][key] and manifest["software"][key] != "absent", key
    cfg = compose_cfg(["data=theia", f"paths.products={corpus}", f"paths.dataset={tmp_path / 'ds'}", *TINY])
    assert manifest["config_hash"] == summary["config_hash"] == config_hash(cfg)
    assert manifest["method"]["pipeline"]["registration"]["mode"] == "robust"
    details = pd.read_csv(site / "pairs_details.tsv", sep="\t", dtype=str)
    assert set(details["config_hash"]) == {manifest["config_hash"]}
    assert all(s.startswith("s2v_gpu=") and "torch=" in s for s in details["software"])
    # paths, device and progress do not shape the tensors: the hash ignores them
    other = compose_cfg(["data=theia", f"paths.products={corpus}", "paths.dataset=elsewhere", *TINY,
                         "device=cpu", "progress=true"])
    assert config_hash(other) == config_hash(cfg)


def test_version_is_one_source():
    import tomllib

    import s2v_gpu

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" in project.get("dynamic", [])
    assert project["requires-python"].startswith(">=3.11")
    from importlib.metadata import version

    assert version("s2v_gpu") == s2v_gpu.__version__


def test_install_script_uses_a_virtual_environment_and_shows_progress():
    text = (REPO / "scripts" / "install.sh").read_text()
    assert "-m venv" in text and "--quiet" not in text and "python3-venv" in text
    readme = (REPO / "README.md").read_text()
    assert "Python ≥ 3.11" in readme and ".venv/bin/python -m pytest" in readme


@pytest.mark.parametrize("args, fragment", [
    (["--size-px", "64"], "--size-px 64: at least 1024"),
    (["--repeats", "0"], "--repeats 0"),
])
def test_bench_refuses_impossible_runs_before_measuring(tmp_path, args, fragment):
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), *args, "--cache", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and fragment in p.stderr and "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())


def test_bench_without_opencv_says_so_before_measuring(tmp_path):
    code = ("import sys, runpy; sys.modules['cv2'] = None\n"
            "import importlib.util as u; real = u.find_spec\n"
            "u.find_spec = lambda n, *a: None if n == 'cv2' else real(n, *a)\n"
            f"sys.argv = ['bench.py', '--cache', {str(tmp_path)!r}]\n"
            f"runpy.run_path({str(REPO / 'scripts' / 'bench.py')!r}, run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "opencv-python-headless" in p.stderr and "--no-reference" in p.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("key, value, fragment", [
    ("n_patches", -5, "report.n_patches=-5 must be >= 1"),
    ("max_pairs", 0, "report.max_pairs=0 must be >= 1"),
    ("dpi", 100000, "report.dpi=100000 must be in [10, 600]"),
    ("max_mae", float("nan"), "report.max_mae=nan must be a finite number > 0"),
    ("sample_patches", 0, "report.sample_patches=0 must be >= 1"),
])
def test_report_values_that_would_crash_or_flag_nonsense_are_refused(key, value, fragment):
    """Each of these crashed the report half-way with a traceback (or, for the thresholds, flagged
    everything or nothing)."""
    import dataclasses

    from s2v_gpu.config import ConfigError
    from s2v_gpu.report.app import validate_report
    from s2v_gpu.report.metrics import ReportConfig

    validate_report(ReportConfig())
    with pytest.raises(ConfigError) as refused:
        validate_report(dataclasses.replace(ReportConfig(), **{key: value}))
    assert fragment in str(refused.value)


def test_the_report_apps_refuse_a_bad_value_before_reading_the_folder(tmp_path):
    """One line naming the key, exit 2, before the (missing) folder is looked at."""
    for module in ("s2v_gpu.report", "s2v_gpu.aggregate"):
        p = _cli([f"paths.dataset={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'h'}", "report.dpi=0"],
                 tmp_path, module)
        assert p.returncode == 2 and "report.dpi=0 must be in [10, 600]" in _one_line(p)


@pytest.mark.parametrize("module", ["s2v_gpu.run", "s2v_gpu.report", "s2v_gpu.aggregate"])
def test_every_command_tells_its_version(tmp_path, module):
    import s2v_gpu

    p = _cli(["--version"], tmp_path, module)
    assert p.returncode == 0 and p.stdout.strip() == f"s2v_gpu {s2v_gpu.__version__}"


def test_release_files_are_there():
    assert (REPO / "LICENSE").read_text().startswith(" " * 33 + "Apache License")
    assert "doi: 10.3390/data7070096" in (REPO / "CITATION.cff").read_text()
    assert (REPO / "s2v_gpu" / "py.typed").exists()


def test_a_folder_written_before_new_patch_columns_resumes_and_reports(corpus, tmp_path):
    """patches.tsv gained columns (local_patch_dx_m, local_patch_dy_m) after its first release, at its
    end: a folder written before them (same configuration hash) resumes, its table is rewritten with
    them (0: what the older version applied), the report and the new pairs' rows follow."""
    from s2v_gpu.layout import PATCH_COLUMNS, PATCH_COLUMNS_ADDED, pair_id_of_row, read_index_rows, read_patches

    first = _run(corpus, tmp_path)
    site = tmp_path / "ds" / "SYNTH-1"
    table = pd.read_csv(site / "patches.tsv", sep="\t", dtype=str)
    dropped = table["pair_id"].iloc[-1]
    old = table[table["pair_id"] != dropped].drop(columns=PATCH_COLUMNS_ADDED)
    old.to_csv(site / "patches.tsv", sep="\t", index=False)  # the older version's table
    rows, current = read_patches(site)
    assert not current and {r["local_patch_dx_m"] for r in rows} == {"0"}
    row = next(r for r in read_index_rows(site) if pair_id_of_row(r) == dropped)
    (site / row["tensor_10m_b2b3b4b8"]).unlink()  # its pair is redone, its rows appended to the table
    again = _run(corpus, tmp_path)
    assert again["written"] == 1 and again["pairs_in_dataset"] == first["pairs_in_dataset"]
    rows, current = read_patches(site)
    assert current and (site / "patches.tsv").read_text().splitlines()[0].split("\t") == PATCH_COLUMNS
    assert {r["pair_id"] for r in rows} == set(table["pair_id"]) and len(rows) == len(table)
    from s2v_gpu.report import ReportConfig, build_report

    old.to_csv(site / "patches.tsv", sep="\t", index=False)  # a folder the older version left as it was
    report = build_report(site, ReportConfig(n_patches=2), tmp_path / "report")
    assert (tmp_path / "report" / "report.html").exists() and "residuals" in report["figures"]


def test_a_local_model_folder_of_another_revision_is_another_configuration(monkeypatch):
    """0.3.1 changed the local model's tensors (and not the translation model's): its hash carries a
    revision, so a local-model folder of 0.3.0 is refused rather than mixed; translation hashes stay."""
    import s2v_gpu.config as config

    translation, local = compose_cfg(TINY), compose_cfg([*TINY, "pipeline.registration.model=local"])
    assert "local_model_revision" not in config.method_config(translation)
    assert config.method_config(local)["local_model_revision"] == config.LOCAL_MODEL_REVISION
    before_t, before_l = config_hash(translation), config_hash(local)
    monkeypatch.setattr(config, "LOCAL_MODEL_REVISION", config.LOCAL_MODEL_REVISION - 1)
    assert config_hash(translation) == before_t and config_hash(local) != before_l


def test_the_coarse_refinement_keys_shape_only_refined_folders():
    """0.4.0's refinement keys enter the hash of the folders they shape (a 0.3.x robust folder is then
    another configuration, refused rather than mixed) and not of those without a refinement: the
    paper preset's tensors are 0.3.3's byte for byte (checked on the demo), so its folders resume."""
    import s2v_gpu.config as config

    robust, paper = compose_cfg(TINY), compose_cfg([*TINY, "preset=paper"])
    assert config.method_config(robust)["pipeline"]["registration"]["refine_coarse_step"] == 2
    assert "refine_coarse_step" not in config.method_config(paper)["pipeline"]["registration"]
    other = compose_cfg([*TINY, "pipeline.registration.refine_coarse_step=1"])
    assert config_hash(other) != config_hash(robust)
    paper_other = compose_cfg([*TINY, "preset=paper", "pipeline.registration.refine_coarse_step=1"])
    assert config_hash(paper_other) == config_hash(paper)
