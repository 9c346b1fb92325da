"""Experiment tracking. The only module that imports mlflow.

Code receives a :class:`Tracker`; tests pass :class:`NullTracker`. :func:`start_run` opens an MLflow run
for one pipeline step, nested under ``MLFLOW_PARENT_RUN_ID`` when that is set (so the Prefect flow's
parent run collects one child per stage even across processes).

Default store: ``sqlite:///<repo>/mlruns.db`` with artifacts in ``<repo>/mlartifacts``; a server via
``MLFLOW_TRACKING_URI``. ``PROXY3D_TRACKING=0`` turns tracking off.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARENT_ENV = "MLFLOW_PARENT_RUN_ID"


class Tracker:
    """Interface: what stages may log. The base class is the null implementation."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...


class NullTracker(Tracker):
    """Discards everything (tracking off, or tests)."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class MlflowTracker(Tracker):
    """Logs to the active MLflow run ``run_id``."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = []
        for k, v in sorted(_flatten(metrics).items()):
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            items.append(Metric(k[:250], fv, ts, step or 0))
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if not path.exists():
            log.warning("artifact %s does not exist; not logged", path)
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))


def repo_root() -> Path:
    """The project checkout (where params.yaml lives), else the working directory."""
    env = os.environ.get("PROXY3D_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in [here, *here.parents]:
        if (p / "params.yaml").exists() or (p / "dvc.yaml").exists():
            return p
    return here


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{repo_root() / 'mlruns.db'}"  # absolute path -> four slashes


def enabled() -> bool:
    return os.environ.get("PROXY3D_TRACKING", "1").lower() not in ("0", "false", "off", "no")


def _client_and_experiment(experiment: str) -> tuple[Any, str]:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        artifact_location = None
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            artifact_location = (repo_root() / "mlartifacts").as_uri()
        exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
    else:
        exp_id = exp.experiment_id
    return client, exp_id


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=repo_root()).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextmanager
def start_run(stage: str, params: Mapping[str, Any] | None = None, experiment: str = "proxy3d",
              tags: Mapping[str, str] | None = None, enabled_: bool | None = None) -> Iterator[Tracker]:
    """Open a run named ``stage`` (child of ``MLFLOW_PARENT_RUN_ID`` if set) and yield its tracker.

    The run ends FINISHED, or FAILED if the block raises (the exception propagates).
    """
    on = enabled() if enabled_ is None else enabled_
    if not on:
        yield NullTracker()
        return
    client, exp_id = _client_and_experiment(experiment)
    run_tags = {"mlflow.runName": stage, "proxy3d.stage": stage, "git_commit": git_commit()}
    parent = os.environ.get(PARENT_ENV)
    if parent:
        run_tags["mlflow.parentRunId"] = parent
    run_tags.update(tags or {})
    run = client.create_run(exp_id, tags=run_tags, run_name=stage)
    tracker = MlflowTracker(client, run.info.run_id)
    try:
        if params:
            tracker.log_params(params)
        yield tracker
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    else:
        root = repo_root()
        for name in ("params.yaml", "dvc.lock"):
            if (root / name).exists():
                tracker.log_artifact(root / name, "pipeline")
        client.set_terminated(run.info.run_id, status="FINISHED")
