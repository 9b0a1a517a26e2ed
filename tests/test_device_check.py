"""The device check cannot rot between GPU leases: its CPU rehearsal runs every step here."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_rehearses_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), "--cpu", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=480, env=env)
    out = tmp_path / "out"
    steps = {r["step"]: r["status"] for r in csv.DictReader((out / "steps.tsv").open(), delimiter="\t")}
    assert steps == {"install": "ok", "env": "ok", "tests": "ok", "bench_quarter": "ok", "demo": "ok"}, \
        (steps, p.stdout[-2000:], p.stderr[-2000:])
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("device_check: cpu") and "steps ok 5/5" in last
    bench = json.loads((out / "bench_quarter.json").read_text())
    assert bench["pipeline_s"] > 0 and bench["shift_error_m"] < 1.0
    assert json.loads((out / "env.json").read_text())["torch"]
    assert (out / "demo_dataset" / "SYNTH-1" / "index.csv").exists()
