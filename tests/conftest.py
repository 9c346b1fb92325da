"""Shared fixtures: hermetic, tiny, deterministic."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PROXY3D_TRACKING", "0")  # tests opt in to MLflow explicitly
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
# the venv's bin first, as under make: torch builds DeepSpeed's shm_comm extension with the first `ninja` on PATH,
# and a system ninja (another version: other command hashes in .ninja_log) rebuilds what scripts/install.sh built
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory):
    """Tracking on, against a fresh SQLite MLflow store in a temp folder (also PROXY3D_ROOT) for one test
    module, with no inherited parent run or DVC stage; the environment is restored afterwards."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
        mp.setenv("PROXY3D_TRACKING", "1")
        mp.setenv("PROXY3D_ROOT", str(root))
        mp.delenv("MLFLOW_PARENT_RUN_ID", raising=False)
        mp.delenv("DVC_STAGE", raising=False)
        yield root


@pytest.fixture
def services_tracking(services, monkeypatch: pytest.MonkeyPatch):
    """``proxy3d.tracking`` reading the MLflow server of the module's ``services`` fixture (tests/_servers.py)."""
    from proxy3d import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", services.mlflow_url)
    monkeypatch.setenv("PROXY3D_TRACKING", "1")
    return tracking
