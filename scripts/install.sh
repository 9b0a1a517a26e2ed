#!/usr/bin/env bash
# Install s2v_gpu and what it needs, on a fresh CPU-only box or on a GPU server.
#   bash scripts/install.sh            # the package
#   bash scripts/install.sh test       # the package and the test tools
# PyTorch: a torch that is already importable (a GPU server's CUDA build) is kept. Otherwise the CPU
# build is installed (torch==2.13.0 is the CPU wheel on our development machines; on another machine
# set S2V_TORCH_SPEC, e.g. "torch --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet ${S2V_TORCH_SPEC:-torch==2.13.0}
fi
if [ -n "$extras" ]; then
  "$PY" -m pip install --quiet -e ".[$extras]"
else
  "$PY" -m pip install --quiet -e .
fi
