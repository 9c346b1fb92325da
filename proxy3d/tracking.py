"""Experiment tracking. The only module that imports mlflow.

Code receives a :class:`Tracker`; tests pass :class:`NullTracker`. :func:`start_run` opens an MLflow run
for one pipeline step, nested under ``MLFLOW_PARENT_RUN_ID`` when that is set (so the Prefect flow's
parent run collects one child per stage even across processes).

Plain ``dvc repro`` / ``dvc exp run`` (no ``MLFLOW_PARENT_RUN_ID``): a stage finds the ``dvc`` process
that runs it (DVC sets ``DVC_STAGE`` in every stage's environment; :mod:`proxy3d.dvcproc` finds the process
by walking parent pids in ``/proc``) and nests under that dvc execution's parent run, created by its first
stage and tagged ``dvc.invocation=<host>:<boot>:<pid>:<start ticks>``, so each ``dvc`` execution gets
exactly one parent. The parent is re-opened RUNNING while a stage runs and ended FINISHED (FAILED once a
stage failed) after it, so nothing is left running when dvc stops; parents of dvc processes that died are
marked KILLED.
A stage started by hand (not under dvc) opens a top-level run.

Default store: ``sqlite:///<repo>/mlruns.db`` with artifacts in ``<repo>/mlartifacts``; a server via
``MLFLOW_TRACKING_URI``. ``PROXY3D_TRACKING=0`` turns tracking off.

Orchestration helpers (used by ``flows/``, which must not import mlflow): :func:`pipeline_run` opens the
parent run of one pipeline execution and exports its id to child processes; :func:`record_skipped`
records an up-to-date stage; :func:`tag_stage_run` adds tags (DVC stage hash) to a stage's child run;
:func:`recent_runs` / :func:`child_runs` read runs back as plain dicts for ``proxy3d runs``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from proxy3d.dvcproc import DVC_STAGE_ENV, dvc_alive, dvc_invocation

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


_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def mlflow_key(key: str) -> str:
    """A metric/param name MLflow accepts: ``semantic@700.acc`` -> ``semantic_at_700.acc``; other characters -> ``_``."""
    return _INVALID_KEY_CHARS.sub("_", key.replace("@", "_at_"))[:250]


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
        items = [Param(mlflow_key(k), str(v)[:6000]) for k, v in sorted(flat.items())]
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
            items.append(Metric(mlflow_key(k), fv, ts, step or 0))
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


def store_root() -> Path:
    """Where the default MLflow store lives: :func:`repo_root`, except that a ``dvc exp run --temp`` or queued
    experiment, which runs in a throwaway copy under ``<project>/.dvc/tmp/exps/``, logs to the project's store
    (in the copy, DVC deleted its runs with the copy)."""
    root = repo_root()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{store_root() / 'mlruns.db'}"  # absolute path -> four slashes


def enabled() -> bool:
    return os.environ.get("PROXY3D_TRACKING", "1").lower() not in ("0", "false", "off", "no")


class TrackingError(RuntimeError):
    """The MLflow store refused a read (no such run, server unreachable); the message is MLflow's, first
    line only."""


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise TrackingError(f"{what}: {str(e.message).splitlines()[0]} (store {tracking_uri()})") from None


def _client(read: bool = False) -> Any:
    """The MLflow client of :func:`tracking_uri`. ``read`` (``proxy3d runs``): an unreachable server fails
    after one try of at most 10 s instead of MLflow's retries for minutes, and a SQLite store that does not
    exist is an error rather than a new empty database."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri()
    if read:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        db = _sqlite_path(uri)
        if db is not None and not db.is_file():
            raise TrackingError(f"tracking store {uri}: no such database file {db}; run a stage or the "
                                "pipeline first (it creates the store), or set MLFLOW_TRACKING_URI to an "
                                "existing store")
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _client_and_experiment(experiment: str) -> tuple[Any, str]:
    """The client and ``experiment``'s id, creating the experiment (for writers)."""
    client = _client()
    uri = tracking_uri()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        artifact_location = None
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            artifact_location = (store_root() / "mlartifacts").as_uri()
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


def git_dirty() -> str:
    """"true" when tracked files differ from HEAD (the run is not reproducible from the commit alone)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True, check=True, cwd=repo_root()).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return "true" if out.strip() else "false"


@contextmanager
def start_run(stage: str, params: Mapping[str, Any] | None = None, experiment: str = "proxy3d",
              tags: Mapping[str, str] | None = None, enabled_: bool | None = None) -> Iterator[Tracker]:
    """Open a run named ``stage`` and yield its tracker.

    The run is a child of ``MLFLOW_PARENT_RUN_ID`` if set, else of the enclosing ``dvc`` execution's parent
    run when a DVC stage runs it (see the module doc), else top-level. The run ends FINISHED, or FAILED if
    the block raises (the exception propagates).
    """
    on = enabled() if enabled_ is None else enabled_
    if not on:
        yield NullTracker()
        return
    client, exp_id = _client_and_experiment(experiment)
    run_tags = {"mlflow.runName": stage, "proxy3d.stage": stage, "git_commit": git_commit(),
                "git_dirty": git_dirty()}
    parent = os.environ.get(PARENT_ENV)
    dvc_parent = None
    if os.environ.get(DVC_STAGE_ENV):
        run_tags["dvc.stage"] = os.environ[DVC_STAGE_ENV]
        invocation = None if parent else dvc_invocation()
        if invocation:
            parent = dvc_parent = _open_dvc_parent(client, exp_id, *invocation)
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
        if dvc_parent:
            _close_dvc_parent(client, dvc_parent, stage, run.info.run_id, failed=True)
        raise
    else:
        root = repo_root()
        for name in ("params.yaml", "dvc.lock"):
            if (root / name).exists():
                tracker.log_artifact(root / name, "pipeline")
        client.set_terminated(run.info.run_id, status="FINISHED")
        if dvc_parent:
            _close_dvc_parent(client, dvc_parent, stage, run.info.run_id, failed=False)


# --- the parent run of a plain `dvc repro` / `dvc exp run` ---------------------------------------------------

def _open_dvc_parent(client: Any, exp_id: str, key: str, command: str) -> str:
    """The parent run of dvc execution ``key``, re-opened RUNNING; the first stage creates it."""
    found = client.search_runs([exp_id], f"tags.`dvc.invocation` = '{key}'", max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    # dvc was killed mid-stage: nobody else will end its parent (or the stage's run)
    _close_orphans(client, exp_id, "dvc.invocation", lambda k: not dvc_alive(k), "dvc process")
    name = command if len(command) <= 120 else command[:117] + "..."
    tags = {"mlflow.runName": name, "proxy3d.kind": "pipeline", "proxy3d.driver": "dvc", "dvc.invocation": key,
            "dvc.command": command[:5000], "git_commit": git_commit(), "git_dirty": git_dirty()}
    run = client.create_run(exp_id, tags=tags, run_name=name)
    # the params the stages run with: the checkout the stage runs in (a --temp experiment's copy, where -S wrote
    # its values; DVC_ROOT there names the original project), else DVC_ROOT
    params_file = repo_root() / "params.yaml"
    if not params_file.exists():
        params_file = Path(os.environ.get("DVC_ROOT") or repo_root()) / "params.yaml"
    if params_file.exists():
        import yaml

        MlflowTracker(client, run.info.run_id).log_params(yaml.safe_load(params_file.read_text()) or {})
    log.info("MLflow parent run %s for '%s'", run.info.run_id, command)
    return run.info.run_id


def _close_dvc_parent(client: Any, parent_id: str, stage: str, child_id: str, failed: bool) -> None:
    """After a stage: list it on the parent, copy its metrics as ``<stage>/<metric>``, end the parent
    FINISHED, or FAILED once any stage of this dvc execution failed. Never masks the stage's own error."""
    try:
        tags = client.get_run(parent_id).data.tags
        done = [s for s in tags.get("proxy3d.stages", "").split(",") if s] + [stage]
        failures = [s for s in tags.get("proxy3d.failed_stages", "").split(",") if s] + ([stage] if failed else [])
        client.set_tag(parent_id, "proxy3d.stages", ",".join(done))
        if failures:
            client.set_tag(parent_id, "proxy3d.failed_stages", ",".join(failures))
        metrics = client.get_run(child_id).data.metrics
        MlflowTracker(client, parent_id).log_metrics({f"{stage}/{k}": v for k, v in metrics.items()})
        client.set_terminated(parent_id, status="FAILED" if failures else "FINISHED")
    except Exception as e:  # noqa: BLE001 - the stage's result matters more than the parent's bookkeeping
        log.warning("could not update MLflow parent run %s after stage %s: %s", parent_id, stage, e)


@contextmanager
def pipeline_run(name: str = "pipeline", params: Mapping[str, Any] | None = None,
                 experiment: str = "proxy3d", tags: Mapping[str, str] | None = None,
                 enabled_: bool | None = None) -> Iterator[Tracker]:
    """Open the parent run of one pipeline execution; inside the block ``MLFLOW_PARENT_RUN_ID`` is set.

    Stage processes started inside the block (``dvc repro`` → ``proxy3d <stage>``) inherit the variable
    and open their runs as children. The previous value is restored on exit. The parent ends FAILED when
    the block raises.
    """
    run_tags = {"proxy3d.kind": "pipeline", **(tags or {})}
    with start_run(name, params, experiment=experiment, tags=run_tags, enabled_=enabled_) as tracker:
        previous = os.environ.get(PARENT_ENV)
        if tracker.run_id:
            os.environ[PARENT_ENV] = tracker.run_id
        try:
            yield tracker
        finally:
            if previous is None:
                os.environ.pop(PARENT_ENV, None)
            else:
                os.environ[PARENT_ENV] = previous


def record_skipped(stage: str, metrics: Mapping[str, float] | None = None,
                   tags: Mapping[str, str] | None = None, experiment: str = "proxy3d") -> str | None:
    """Record an up-to-date stage (DVC skipped it) as a FINISHED child run tagged ``proxy3d.skipped=true``.

    ``metrics`` are the stage's current (unchanged) metrics, so every parent run shows the full pipeline.
    Returns the run id, or None when tracking is off.
    """
    if not enabled():
        return None
    with start_run(stage, None, experiment=experiment,
                   tags={"proxy3d.skipped": "true", **(tags or {})}) as tracker:
        if metrics:
            tracker.log_metrics(metrics)
    return tracker.run_id


def tag_stage_run(stage: str, tags: Mapping[str, str], parent_run_id: str | None = None,
                  experiment: str = "proxy3d") -> str | None:
    """Set ``tags`` on the newest run of ``stage`` under ``parent_run_id`` (default: the current parent).

    Used after ``dvc repro`` wrote dvc.lock, which the stage process could not know while it ran.
    Returns the tagged run id, or None when there is no such run (tracking off, or the stage did not log).
    """
    parent = parent_run_id or os.environ.get(PARENT_ENV)
    if not enabled() or not parent:
        return None
    client, exp_id = _client_and_experiment(experiment)
    runs = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}' and tags.`proxy3d.stage` = '{stage}'",
                              order_by=["attribute.start_time DESC"], max_results=1)
    if not runs:
        log.warning("no MLflow run of stage %r under parent %s; tags %s not recorded", stage, parent, dict(tags))
        return None
    MlflowTracker(client, runs[0].info.run_id).set_tags(tags)
    return runs[0].info.run_id


def _summary(run: Any) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time, "end_time": run.info.end_time,
            "params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags)}


def _existing_experiment(experiment: str) -> tuple[Any, str | None]:
    """The client and ``experiment``'s id, None when it does not exist: readers must not create an experiment
    for every mistyped name."""
    client = _client(read=True)
    exp = client.get_experiment_by_name(experiment)
    return client, None if exp is None else exp.experiment_id


def experiment_names() -> list[str]:
    """Names of the store's active experiments, sorted."""
    with _store_errors("listing experiments"):
        return sorted(e.name for e in _client(read=True).search_experiments())


def recent_runs(n: int = 10, experiment: str = "proxy3d", pipelines_only: bool = False) -> list[dict[str, Any]]:
    """The newest ``n`` top-level runs (newest first) as plain dicts: run_id, name, status, params, metrics,
    tags (none when ``experiment`` does not exist)."""
    with _store_errors(f"runs of experiment {experiment!r}"):
        client, exp_id = _existing_experiment(experiment)
        if exp_id is None:
            return []
        flt = "tags.`proxy3d.kind` = 'pipeline'" if pipelines_only else ""
        runs = client.search_runs([exp_id], flt, order_by=["attribute.start_time DESC"],
                                  max_results=max(n * 20, 100))
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return [_summary(r) for r in top[:n]]


def get_run(run_id: str) -> dict[str, Any]:
    """One run as a plain dict (see :func:`recent_runs`); TrackingError when the store has no such run."""
    with _store_errors(f"run {run_id!r}"):
        return _summary(_client(read=True).get_run(run_id))


def child_runs(parent_run_id: str, experiment: str = "proxy3d") -> list[dict[str, Any]]:
    """Child runs of a parent, oldest first (pipeline order)."""
    with _store_errors(f"child runs of {parent_run_id!r}"):
        client, exp_id = _existing_experiment(experiment)
        if exp_id is None:
            return []
        runs = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  order_by=["attribute.start_time ASC"], max_results=1000)
    return [_summary(r) for r in runs]


def close_orphaned_runs(is_dead: Callable[[str], bool], experiment: str = "proxy3d") -> list[str]:
    """Mark RUNNING pipeline runs whose flow run died (``is_dead(flow_run_id)``) KILLED, children included.

    A killed worker cannot end its MLflow runs; the next pipeline execution calls this so the MLflow UI
    does not show them running forever. Returns the run ids closed.
    """
    if not enabled():
        return []
    client, exp_id = _client_and_experiment(experiment)
    return _close_orphans(client, exp_id, "prefect.flow_run_id", is_dead, "flow run")


def _close_orphans(client: Any, exp_id: str, key_tag: str, is_dead: Callable[[str], bool], what: str) -> list[str]:
    """Mark RUNNING pipeline runs whose driver (tag ``key_tag``: a Prefect flow run, a dvc execution) is dead
    KILLED, their RUNNING children included. Returns the run ids closed."""
    closed: list[str] = []
    parents = client.search_runs([exp_id], "attributes.status = 'RUNNING' and tags.`proxy3d.kind` = 'pipeline'",
                                 max_results=200)
    for run in parents:
        key = run.data.tags.get(key_tag)
        if not key or not is_dead(key):
            continue
        children = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{run.info.run_id}' and "
                                      "attributes.status = 'RUNNING'", max_results=1000)
        for r in [*children, run]:
            client.set_tag(r.info.run_id, "proxy3d.orphaned", f"{what} {key} ended without closing it")
            client.set_terminated(r.info.run_id, status="KILLED")
            closed.append(r.info.run_id)
    return closed


def stage_run(stage: str, params: Mapping[str, Any] | None, settings: Any) -> Any:
    """:func:`start_run` configured by the params file's ``tracking:`` section (``TrackingParams``):
    its experiment name, and ``enabled: false`` turns tracking off (``PROXY3D_TRACKING=0`` also does)."""
    return start_run(stage, params, experiment=settings.experiment, enabled_=None if settings.enabled else False)

