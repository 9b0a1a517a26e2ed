#!/usr/bin/env bash
# The one-call device check (a lent GPU machine: bare, torch installed, no network), or its CPU
# rehearsal, which CI runs so that the script cannot rot between leases:
#
#   bash scripts/prepare_device_wheels.sh            # here, once: wheels for what the device lacks
#   bash scripts/device_check.sh OUTDIR              # there (carry .device_wheels): CUDA
#   bash scripts/device_check.sh --cpu OUTDIR        # anywhere: the same steps on the CPU, small sizes
#
# Steps (each with its own time limit; the whole stops by itself within 8 minutes): install the
# carried wheels, record the machine (GPU model, torch/CUDA versions), the CUDA tests (CPU: a quick
# subset), scripts/bench.py at a full site, the run app on the demo archive on the device and, if time
# is left, a quarter site (CPU: one small size). Everything lands in OUTDIR (logs, bench
# JSON, env.json, steps.tsv); the last line printed is one summary line.
set -uo pipefail
mode=cuda
if [ "${1:-}" = "--cpu" ]; then mode=cpu; shift; fi
out="${1:?usage: scripts/device_check.sh [--cpu] OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
budget="${S2V_CHECK_BUDGET_S:-470}"
start=$SECONDS
printf 'step\tstatus\tseconds\n' > "$out/steps.tsv"

# step NAME LIMIT_S CMD...: run with what is left of the budget (at most LIMIT_S), log to OUTDIR
step() {
  local name=$1 limit=$2; shift 2
  local left=$((budget - (SECONDS - start)))
  local t=$((limit < left ? limit : left))
  if [ "$t" -le 5 ]; then printf '%s\tskipped (no time left)\t0\n' "$name" >> "$out/steps.tsv"; return 1; fi
  local t0=$SECONDS
  timeout "$t" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local status=$([ $rc -eq 0 ] && echo ok || ([ $rc -eq 124 ] && echo "timed out after ${t}s" || echo "failed rc=$rc"))
  printf '%s\t%s\t%s\n' "$name" "$status" $((SECONDS - t0)) >> "$out/steps.tsv"
  return $rc
}

# the carried wheels (if any) into /tmp/s2v_site, then an import check of what the pipeline needs
install_cmd='if [ "$1" = cuda ] && ls .device_wheels/*.whl > /dev/null 2>&1; then
  "$0" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/s2v_site \
    .device_wheels/*.whl || exit 1; fi
"$0" -c "import s2v_gpu.run, kornia, rasterio, fiona, hydra, pystac, jsonschema; print(\"imports ok\")"'
[ -d .device_wheels ] && export PYTHONPATH="/tmp/s2v_site:$PWD${PYTHONPATH:+:$PYTHONPATH}" \
  || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step install 120 bash -c "$install_cmd" "$PY" "$mode"  # (the wheels are the device's: Python 3.12)
step env 30 "$PY" scripts/device_env.py "$out/env.json"
if [ "$mode" = cuda ]; then
  # the order is what a short lease must not lose: the CUDA tests, the full-site figures of the README,
  # the app on the device, then the quarter site if time is left. Each bench renders its pair on the
  # GPU (python -m s2v_gpu.synthetic --device cuda: the CPU's products) and times the CPU references
  # once (--reference-repeats 1), the pipeline three times.
  step tests 120 "$PY" -m pytest -q -rfE --durations=10 -p no:cacheprovider -k "cuda" tests
  step bench_full 230 "$PY" scripts/bench.py --size-px 5560 --repeats 3 --reference-repeats 1 --device cuda \
    --json "$out/bench_full.json"
  step demo 60 "$PY" -m s2v_gpu.run device=cuda "paths.dataset=$out/demo_dataset" "hydra.run.dir=$out/demo_run" progress=false
  step bench_quarter 150 "$PY" scripts/bench.py --size-px 2780 --repeats 3 --reference-repeats 1 --device cuda \
    --json "$out/bench_quarter.json"
else
  ref=$("$PY" -c "import cv2, scipy" > /dev/null 2>&1 || echo --no-reference)
  step tests 90 "$PY" -m pytest -q -x -p no:cacheprovider -k "cpu and (apply_shift or sample_points or mtf)" \
    tests/test_stages.py
  # shellcheck disable=SC2086
  step bench_quarter 120 "$PY" scripts/bench.py --size-px 1024 --repeats 1 --device cpu --cache "$out/bench_cache" \
    --json "$out/bench_quarter.json" $ref
  step demo 90 "$PY" -m s2v_gpu.run data=tiny device=cpu "paths.demo=$out/demo_products" \
    "paths.dataset=$out/demo_dataset" "hydra.run.dir=$out/demo_run" progress=false report=false
fi
"$PY" scripts/device_env.py --summary "$out" | tee "$out/summary.txt"
