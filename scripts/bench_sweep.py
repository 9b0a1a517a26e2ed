"""What a sweep of a selection threshold costs against a single run, on the demo archive.

    python scripts/bench_sweep.py [--values 0.01,0.015,0.02,0.025,0.03] [--repeats 3] [--json out.json]

Runs, as a user would (``python -m s2v_gpu.run`` in a subprocess, so interpreter start-up and Hydra
are counted on both sides), into fresh folders each time:

1. one run of the demo (``pipeline.selection.outlier_rmse`` at its default);
2. the multirun ``-m pipeline.selection.outlier_rmse=<values>`` (the per-pair cache is on in a
   multirun: registration, MTF and fit are computed once per pair);
3. the same multirun with ``cache=off`` (what a sweep cost before the cache);

each with the report and STAC on (the default) and off, medians over ``--repeats``. Prints the
ratios sweep / single run. Exit 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--values", default="0.01,0.015,0.02,0.025,0.03")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    try:
        values = [float(v) for v in a.values.split(",")]
    except ValueError:
        p.exit(2, f"--values: not a comma-separated list of numbers: {a.values!r}\n")
    if len(values) < 2 or a.repeats < 1:
        p.exit(2, "--values needs two values or more and --repeats >= 1\n")
    return a


def _timed(args: list[str], folder: Path) -> float:
    flags = [a for a in args if a.startswith("-")]  # Hydra wants its flags before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "s2v_gpu.run", *flags, f"paths.dataset={folder}", "progress=false",
                           f"hydra.run.dir={folder}/hydra", f"hydra.sweep.dir={folder}/multirun", *overrides],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"run failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    a = _args(sys.argv[1:] if argv is None else argv)
    sweep = ["-m", f"pipeline.selection.outlier_rmse={a.values}"]
    cases = {"single": [], "sweep": sweep, "sweep_no_cache": [*sweep, "cache=off"]}
    with tempfile.TemporaryDirectory(prefix="s2v-bench-sweep-") as tmp:
        _timed(["report=false", "stac=false"], Path(tmp) / "warm")  # the demo archive generated once
        out = {}
        for extras, label in ((["report=false", "stac=false"], "without report"), ([], "with report and STAC")):
            times = {name: [] for name in cases}
            for r in range(a.repeats):
                for name, args in cases.items():
                    times[name].append(_timed([*args, *extras], Path(tmp) / f"{label[:4]}{r}{name}"))
            med = {k: statistics.median(v) for k, v in times.items()}
            out[label] = {"seconds": med, "sweep_over_single": med["sweep"] / med["single"],
                          "no_cache_over_single": med["sweep_no_cache"] / med["single"]}
            print(f"{label}: single {med['single']:.1f} s, {len(a.values.split(','))}-value sweep "
                  f"{med['sweep']:.1f} s ({out[label]['sweep_over_single']:.2f}x), without the cache "
                  f"{med['sweep_no_cache']:.1f} s ({out[label]['no_cache_over_single']:.2f}x)", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
