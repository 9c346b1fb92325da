# Prefect process worker with the whole Proxy3D stack (the flows run `dvc repro` inside this image).
# Build context: the repository root. Java is for PySpark (spacespan).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /workspace
COPY pyproject.toml README.md constraints.txt ./
COPY proxy3d ./proxy3d
COPY flows ./flows
# the same pinned versions as `make install` (scripts/install.sh): the worker runs the stages, so its
# libraries must be the ones the README's numbers were measured with
RUN SAM2_BUILD_CUDA=0 pip install --no-cache-dir -c constraints.txt -e ".[dev]" "dvc[s3]" boto3
ENV PREFECT_HOME=/workspace/.prefect DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
