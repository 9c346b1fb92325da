#!/usr/bin/env bash
# Print where a finished pipeline left its results.
cd "$(dirname "$0")/.."
echo
echo "Pipeline finished. Results:"
for p in metrics/*.json reports/*; do [[ -e $p ]] && echo "  $p"; done
echo "  MLflow runs: sqlite:///$(pwd)/mlruns.db  (browse: .venv/bin/mlflow ui --backend-store-uri sqlite:///$(pwd)/mlruns.db)"
echo "  DVC metrics: .venv/bin/dvc metrics show"
