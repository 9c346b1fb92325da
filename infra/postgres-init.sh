#!/usr/bin/env bash
# Runs once on an empty volume: one database each for MLflow and Prefect, owned by $POSTGRES_USER.
set -euo pipefail
for db in "$MLFLOW_DB" "$PREFECT_DB"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\";"
done
