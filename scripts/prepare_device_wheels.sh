#!/usr/bin/env bash
# Download, here, the wheels that the lent GPU machine lacks (it has torch, numpy, scipy, pandas,
# matplotlib, OpenCV, pytest... but no Kornia, rasterio, fiona or Hydra, and no network) into
# .device_wheels/ (ignored by git), for its Python (3.12) and platform (x86-64 manylinux).
# scripts/device_check.sh installs them there. About 45 MiB (the device tool carries at most 64).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
out=.device_wheels
mkdir -p "$out"
grep -qx '/.device_wheels/' .gitignore || echo '/.device_wheels/' >> .gitignore
pkgs=(kornia==0.9.0 kornia_rs rasterio==1.4.3 affine cligj click-plugins fiona==1.10.1 hydra-core==1.3.8
      omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 hydra-submitit-launcher==1.2.0 submitit==1.5.4
      hydra-joblib-launcher==1.2.0)
for p in "${pkgs[@]}"; do
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$out" "$p" -q 2>/dev/null \
    || "$PY" -m pip wheel --no-deps -q -w "$out" "$p" \
    || { echo "prepare_device_wheels: no wheel for $p" >&2; exit 1; }  # pure-Python sdists are built here
done
du -sh "$out"
