"""Helpers shared by the tests that start real servers (test_services.py, test_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest

from flows import demo_project
from flows.testing import LocalServices


@contextmanager
def running_services(tmp_path_factory: pytest.TempPathFactory, name: str, pool: str) -> Iterator[LocalServices]:
    """Prefect server + worker + MLflow server (scripts/services.sh) deploying a fresh throwaway DVC project
    (flows.demo_project) to work pool ``pool``; every process it started is stopped on exit."""
    root = tmp_path_factory.mktemp(name)
    svc = LocalServices(demo_project.create(root / "toy", pool=pool), root, pool=pool)
    try:
        yield svc.start()
    finally:
        svc.stop()


def parent_of(tracking: ModuleType, flow_run_id: str) -> dict:
    """The MLflow pipeline (parent) run of Prefect flow run ``flow_run_id``."""
    runs = [r for r in tracking.recent_runs(20, pipelines_only=True)
            if r["tags"].get("prefect.flow_run_id") == flow_run_id]
    assert runs, f"no MLflow parent run tagged with flow run {flow_run_id}"
    return runs[0]
