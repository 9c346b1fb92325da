#!/usr/bin/env bash
# Create or refresh .venv with the whole stack. Idempotent: skips work when the
# stamp file is newer than pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.installed
PY=${PYTHON:-python3}
# DeepSpeed's CPU shared-memory collective (a C++ extension it JIT-compiles on first use, 45-80 s), built here
# into the TORCH_EXTENSIONS_DIR that the Makefile and tests/conftest.py use, through build_shm_op (the same
# builder, so the same flags) and with .venv/bin first on PATH (the ninja of the Makefile and of conftest.py:
# the system ninja logs other command hashes and would rebuild it): tests and `make demo` share one build.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}
SHM_SO=$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/deepspeed_shm_comm.so
prebuild_shm_comm() {
  echo "install: building DeepSpeed's shm_comm extension into $TORCH_EXTENSIONS_DIR"
  PATH="$PWD/$VENV/bin:$PATH" DS_ACCELERATOR=cpu "$VENV/bin/python" -c 'from deepspeed.comm.torch import build_shm_op
build_shm_op()'  # None off Linux (DeepSpeed then uses gloo alone): nothing to build
}
if [[ -f $STAMP && $STAMP -nt pyproject.toml && $STAMP -nt scripts/install.sh && $STAMP -nt constraints.txt ]]; then
  [[ -f $SHM_SO ]] || prebuild_shm_comm
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
prebuild_shm_comm
touch "$STAMP"
echo "install: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
