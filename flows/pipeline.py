"""Prefect flows for the Proxy3D pipeline. They orchestrate only: every task is one DVC stage
(``dvc repro --single-item <stage>``) and the ML code runs in the stage's own process.

* ``pipeline``: all stages in dvc.yaml order under one MLflow parent run; stages DVC finds up to date
  are recorded as skipped child runs. ``budget``/``method``/``overrides`` are written to params.yaml
  first (like ``dvc exp run -S``), so DVC reruns exactly the stages they touch.
* ``stage``: one stage (``with_upstream`` runs what it depends on first, as plain ``dvc repro <stage>``).
* ``evaluate``: evaluate-only.

Run locally without a server: ``python -m flows.pipeline [--budget 450] [--stage proxies]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import dvc
from proxy3d import tracking

RETRIES = 2


def _is_transient(task_: Any, task_run: Any, state: Any) -> bool:
    """Retry only TransientStageError (lock held, server unavailable), never a broken stage."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result we cannot read is not a reason to retry
        exc = None
    return isinstance(exc, dvc.TransientStageError) or "TransientStageError" in (state.message or "")


def _project(project_dir: str | None) -> Path:
    path = Path(project_dir or os.environ.get("PROXY3D_ROOT") or ".").resolve()
    if not (path / "dvc.yaml").exists():
        raise FileNotFoundError(f"{path / 'dvc.yaml'} not found; set the flow's project_dir (or PROXY3D_ROOT) "
                                "to the Proxy3D checkout")
    return path


def _flow_tags() -> dict[str, str]:
    """Prefect ids as MLflow tags, so a flow run and its MLflow parent run find each other."""
    from prefect.runtime import deployment, flow_run

    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_run_name": str(flow_run.name or "")}
    if deployment.name:
        tags["prefect.deployment"] = str(deployment.name)
    return tags


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE, retries=RETRIES,
      retry_delay_seconds=5, retry_condition_fn=_is_transient)
def run_stage(stage: str, project_dir: str, single_item: bool = True) -> dict[str, Any]:
    """``dvc repro [--single-item] <stage>``; returns {stage, skipped, stage_hash, metrics}."""
    logger = get_run_logger()
    project = Path(project_dir)
    before = dvc.stage_hash(dvc.lock_entry(project, stage))
    args = ["repro", "--single-item", stage] if single_item else ["repro", stage]
    dvc.run_dvc(args, project, on_line=logger.info)
    after = dvc.stage_hash(dvc.lock_entry(project, stage))
    skipped = before == after
    metrics = dvc.read_metrics(project, stage)
    tags = {"dvc.stage": stage, "dvc.stage_hash": after}
    experiment, on = _tracking(project)
    if skipped and on:
        tracking.record_skipped(stage, metrics, tags=tags, experiment=experiment)
        logger.info("stage %s is up to date (dvc.lock unchanged): recorded as skipped", stage)
    elif on:
        tracking.tag_stage_run(stage, {**tags, "proxy3d.skipped": "false"}, experiment=experiment)
    return {"stage": stage, "skipped": skipped, "stage_hash": after, "metrics": metrics}


def _tracking(project: Path) -> tuple[str, bool]:
    """params.yaml's ``tracking.experiment`` and ``tracking.enabled`` (what the stage processes obey, defaults from
    proxy3d.config.TrackingParams): the flow's parent and skipped-stage runs had gone to the experiment "proxy3d"
    whatever the stages used, and were made with tracking disabled."""
    from proxy3d.config import TrackingParams

    path = project / "params.yaml"
    section = ((yaml.safe_load(path.read_text()) if path.exists() else None) or {}).get("tracking") or {}
    settings = TrackingParams(**section)
    return str(settings.experiment), bool(settings.enabled)


def _params_for_tracking(project: Path, flow_params: dict[str, Any]) -> dict[str, Any]:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text()) if path.exists() else {}
    return {**(params or {}), "flow": {k: v for k, v in flow_params.items() if v not in (None, [], "")}}


def _overrides(budget: int | None, method: str | None, overrides: list[str] | None) -> list[str]:
    out = list(overrides or [])
    if budget is not None:
        out.append(f"proxies.budget={int(budget)}")
    if method:
        out.append(f"proxies.method={method}")
    return out


def _flow_run_dead(flow_run_id: str) -> bool:
    """True when Prefect knows the flow run ended (Crashed, Failed, Cancelled, Completed) or forgot it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except (ObjectNotFound, ValueError):
        return True
    return state is not None and state.is_final()


@contextmanager
def _project_root(project: Path) -> Iterator[None]:
    """``PROXY3D_ROOT=project`` while the flow runs, so its in-process tracking (the parent run's store and the
    params.yaml/dvc.lock it logs, skipped-stage runs, stage tags) resolves to the flow's project and not to the
    worker's working directory, as the stage processes (cwd=project, same variable) do. The variables are
    restored after, MLFLOW_TRACKING_URI included: MLflow exports the store it was given there, and a later
    flow of the same worker for another project must not inherit it."""
    saved = {k: os.environ.get(k) for k in ("PROXY3D_ROOT", "MLFLOW_TRACKING_URI")}
    os.environ["PROXY3D_ROOT"] = str(project)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_stages(name: str, stages: list[str], project: Path, flow_params: dict[str, Any],
                single_item: bool = True) -> list[dict[str, Any]]:
    with _project_root(project):
        return _run_stages_in(name, stages, project, flow_params, single_item)


def _run_stages_in(name: str, stages: list[str], project: Path, flow_params: dict[str, Any],
                   single_item: bool) -> list[dict[str, Any]]:
    logger = get_run_logger()
    results: list[dict[str, Any]] = []
    experiment, on = _tracking(project)
    closed = tracking.close_orphaned_runs(_flow_run_dead, experiment) if on else []
    if closed:
        logger.warning("closed %d MLflow runs left RUNNING by dead flow runs: %s", len(closed), ", ".join(closed))
    with tracking.pipeline_run(name, _params_for_tracking(project, flow_params), experiment=experiment,
                               tags=_flow_tags(), enabled_=None if on else False) as parent:
        logger.info("MLflow parent run %s (%s)", parent.run_id, tracking.tracking_uri() if parent.run_id else "off")
        for stage in stages:
            result = run_stage.with_options(task_run_name=stage)(stage, str(project), single_item)
            parent.log_metrics({f"{stage}/{k}": v for k, v in result["metrics"].items()})
            results.append(result)
        parent.set_tags({"proxy3d.skipped_stages": ",".join(r["stage"] for r in results if r["skipped"]) or "-"})
    return results


@flow(name="pipeline", log_prints=True)
def pipeline(budget: int | None = None, method: str | None = None, overrides: list[str] | None = None,
             project_dir: str | None = None) -> list[dict[str, Any]]:
    """Run every DVC stage in order under one MLflow parent run.

    budget / method set ``proxies.budget`` / ``proxies.method``; ``overrides`` are more
    ``section.key=value`` entries. They are written to params.yaml before the first stage.
    """
    project = _project(project_dir)
    applied = dvc.apply_overrides(project, _overrides(budget, method, overrides))
    return _run_stages("pipeline", dvc.stage_names(project), project, {"overrides": applied})


@flow(name="stage", log_prints=True)
def stage(stage: str, with_upstream: bool = False, overrides: list[str] | None = None,
          project_dir: str | None = None) -> list[dict[str, Any]]:
    """Run one stage (``with_upstream``: also the stages it depends on, as ``dvc repro <stage>`` would)."""
    project = _project(project_dir)
    dvc.check_stage(project, stage)
    applied = dvc.apply_overrides(project, overrides or [])
    return _run_stages(f"stage:{stage}", [stage], project, {"overrides": applied, "stage": stage},
                       single_item=not with_upstream)


@flow(name="evaluate", log_prints=True)
def evaluate(budget: int | None = None, method: str | None = None, overrides: list[str] | None = None,
             project_dir: str | None = None) -> list[dict[str, Any]]:
    """Evaluate-only: rerun ``evaluate`` on the existing checkpoint and proxies."""
    project = _project(project_dir)
    applied = dvc.apply_overrides(project, _overrides(budget, method, overrides))
    return _run_stages("evaluate", ["evaluate"], project, {"overrides": applied})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.pipeline", description="run the Prefect pipeline flow locally")
    p.add_argument("--stage", help="run only this stage (default: the whole pipeline)")
    p.add_argument("--budget", type=int)
    p.add_argument("--method")
    p.add_argument("-S", "--set-param", action="append", default=[], help="section.key=value (repeatable)")
    p.add_argument("--project-dir", default=None)
    a = p.parse_args(argv)
    if a.stage:
        stage(a.stage, overrides=_overrides(a.budget, a.method, a.set_param), project_dir=a.project_dir)
    else:
        pipeline(a.budget, a.method, a.set_param, project_dir=a.project_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
