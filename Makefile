# Proxy3D — the two commands users need are `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export SPARK_LOCAL_IP := 127.0.0.1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

PYTEST_ARGS ?=

.PHONY: help install demo data test test-slow test-browser test-services lint services services-stop clean dvc-screenshot

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install:  ## create/refresh .venv with the whole stack (idempotent, ~3 min the first time)
	@bash scripts/install.sh

data: install  ## generate the default synthetic dataset into data/ (skipped when present) and check data.dvc
	@bash scripts/data.sh

demo: install data  ## install, build the default data, run the whole pipeline (dvc repro), print where results are
	@$(VENV)/bin/dvc repro
	@bash scripts/where.sh

test: install  ## run the test suite (fast tests; what CI runs)
	@$(PY) -m pytest -m "not slow and not browser and not gpu" $(PYTEST_ARGS)

test-slow: install  ## run slow tests
	@$(PY) -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-browser: install  ## run the real-Chromium UI tests (needs /usr/bin/chromium)
	@$(PY) -m pytest -m "browser" $(PYTEST_ARGS)

test-services: install  ## run the real-server tests (Prefect server + worker, MLflow server; ~6.5 min)
	@$(PY) -m pytest -m "services and not browser and not gpu" $(PYTEST_ARGS)

lint: install  ## ruff
	@$(VENV)/bin/ruff check proxy3d flows tests bench scripts

dvc-screenshot: install  ## regenerate docs/img/dvc.png (dvc dag + dvc exp show in Chromium) after dvc repro
	@$(PY) scripts/dvc_screenshot.py

clean:  ## remove pipeline outputs (keeps data/ and .venv)
	rm -rf artifacts metrics reports mlruns.db mlartifacts

services: install  ## start Prefect server+UI, a worker (pool proxy3d) and MLflow on 127.0.0.1; deploy prefect.yaml
	@bash scripts/services.sh start

services-stop:  ## stop exactly the processes `make services` started (pids in .services/)
	@bash scripts/services.sh stop
