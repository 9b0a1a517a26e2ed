#!/usr/bin/env bash
# Install s2v_gpu and what it needs, on a fresh CPU-only box or on a GPU server, whatever the Python
# policy of the system (PEP 668 "externally managed" distributions included):
#   bash scripts/install.sh            # the package, into ./.venv
#   bash scripts/install.sh test       # the package and the test tools
#   bash scripts/install.sh bench      # the package and the benchmark's reference (OpenCV, scipy)
# Then run with .venv/bin/python (or `source .venv/bin/activate`).
#
# The virtual environment sees the system's site packages, so a torch that is already installed
# (a GPU server's CUDA build) is kept; otherwise the CPU build is installed (torch==2.13.0; set
# S2V_TORCH_SPEC to pick another, e.g. "torch --index-url https://download.pytorch.org/whl/cpu").
# S2V_VENV=path puts the environment elsewhere; S2V_VENV=none installs into the current Python
# (an activated conda environment or virtual environment, a container).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
BASE="${PYTHON:-python3}"
VENV="${S2V_VENV:-.venv}"

if ! "$BASE" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "s2v_gpu needs Python >= 3.11 (found $("$BASE" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ "$VENV" = none ]; then
  PY="$BASE"
else
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[install] creating the virtual environment $VENV (with the system's site packages visible)"
    if ! "$BASE" -m venv --system-site-packages "$VENV"; then
      echo "[install] '$BASE -m venv' failed: on Debian/Ubuntu run 'apt-get install python3-venv' first" >&2
      exit 1
    fi
  fi
  PY="$VENV/bin/python"
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[install] installing PyTorch (${S2V_TORCH_SPEC:-torch==2.13.0}, the CPU build) into $PY"
  # shellcheck disable=SC2086
  "$PY" -m pip install --progress-bar on ${S2V_TORCH_SPEC:-torch==2.13.0}
else
  echo "[install] keeping the installed PyTorch $("$PY" -c 'import torch; print(torch.__version__)')"
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
echo "[install] installing s2v_gpu${extras:+ with [$extras]} and its dependencies into $PY"
"$PY" -m pip install --progress-bar on -e "$target" 2>&1 | { grep -v -e "^Requirement already satisfied" -e "^WARNING: Location" || true; }
if [[ ",$extras," == *",test,"* ]]; then
  # the community loader of the release layout, without its dependencies (torchvision, geopandas...):
  # the tests read our published layout with its real code, its download path stubbed
  echo "[install] installing sen2venus-pytorch-dataset 0.0.4 (no dependencies) for the layout tests"
  "$PY" -m pip install --progress-bar on --no-deps "sen2venus-pytorch-dataset==0.0.4" 2>&1 | { grep -v -e "^WARNING: Location" || true; }
fi
echo "[install] done: run with $PY -m s2v_gpu.run (or 'source $VENV/bin/activate')"
