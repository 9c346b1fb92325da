#!/usr/bin/env bash
# Build the default synthetic dataset into data/ when missing, record it in data.dvc, and fail loudly
# when the generator's output no longer matches the committed data.dvc (determinism guard).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
if [[ ! -d data/scenes ]]; then
  echo "data: generating the synthetic dataset into data/ (proxy3d synth data)"
  "$BIN/proxy3d" synth data
fi
if [[ -f data.dvc ]]; then
  "$BIN/dvc" commit -f -q data.dvc
else
  "$BIN/dvc" add -q data
fi
if git ls-files --error-unmatch data.dvc >/dev/null 2>&1; then
  if ! git diff --exit-code --stat data.dvc; then
    echo "data: ERROR: data/ differs from the committed data.dvc." >&2
    echo "      If you changed the generator on purpose, commit the new data.dvc;" >&2
    echo "      if you use real data, see README 'Use real data' (dvc add data)." >&2
    exit 1
  fi
fi
