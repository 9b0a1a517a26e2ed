#!/usr/bin/env bash
# Download, here, the wheels that the lent GPU machine lacks (it has torch, numpy, scipy, pandas,
# matplotlib, OpenCV, pytest... but no Kornia, rasterio, fiona, Hydra, pystac or jsonschema, and no network) into
# .device_wheels/ (ignored by git), for its Python (3.12) and platform (x86-64 manylinux).
# scripts/device_check.sh installs them there. About 50 MiB (the device tool carries at most 64).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
out=.device_wheels
mkdir -p "$out"
grep -qx '/.device_wheels/' .gitignore || echo '/.device_wheels/' >> .gitignore
pkgs=(kornia==0.9.0 kornia_rs rasterio==1.4.3 affine cligj click-plugins fiona==1.10.1 hydra-core==1.3.8
      omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 hydra-submitit-launcher==1.2.0 submitit==1.5.4
      hydra-joblib-launcher==1.2.0
      # STAC (pystac 1.15 is a meta-package of its core and extensions) and its offline validation
      jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.30.0
      pystac==1.15.2 pystac-core==1.15.2 pystac-ext-classification==2.0.1 pystac-ext-datacube==2.2.1
      pystac-ext-eo==1.1.1 pystac-ext-file==2.1.1 pystac-ext-grid==1.1.1 pystac-ext-item-assets==1.0.1
      pystac-ext-label==1.0.2 pystac-ext-mgrs==1.0.1 pystac-ext-mlm==1.4.1 pystac-ext-pointcloud==1.0.1
      pystac-ext-projection==2.0.1 pystac-ext-raster==1.1.1 pystac-ext-render==2.0.0 pystac-ext-sar==1.0.1
      pystac-ext-sat==1.0.1 pystac-ext-scientific==1.0.1 pystac-ext-storage==2.0.1 pystac-ext-table==1.2.1
      pystac-ext-timestamps==1.1.1 pystac-ext-version==1.2.1 pystac-ext-view==1.0.1
      pystac-ext-xarray-assets==1.0.1)
for p in "${pkgs[@]}"; do
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$out" "$p" -q 2>/dev/null \
    || "$PY" -m pip wheel --no-deps -q -w "$out" "$p" \
    || { echo "prepare_device_wheels: no wheel for $p" >&2; exit 1; }  # pure-Python sdists are built here
done
du -sh "$out"
