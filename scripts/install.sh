#!/usr/bin/env bash
# Create or refresh .venv with the whole stack. Idempotent: skips work when the
# stamp file is newer than pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.installed
PY=${PYTHON:-python3}
if [[ -f $STAMP && $STAMP -nt pyproject.toml && $STAMP -nt scripts/install.sh && $STAMP -nt constraints.txt ]]; then
  echo "install: .venv is up to date"; exit 0
fi
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip
# sam2 builds from source: without these its isolated build env downloads another torch (~2 GB)
# and tries nvcc. The constraint file exists on machines that cap torch to the local copy.
BUILD_ARGS=()
if [[ -f /etc/xdg/pip/constraints.txt ]]; then
  BUILD_ARGS+=(--build-constraint /etc/xdg/pip/constraints.txt)
fi
# constraints.txt pins every package to the versions the README's numbers were measured with
SAM2_BUILD_CUDA=0 "$VENV/bin/python" -m pip install "${BUILD_ARGS[@]}" -c constraints.txt -e ".[dev,browser]"
touch "$STAMP"
echo "install: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
