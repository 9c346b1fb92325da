"""Real local services (scripts/services.sh: Prefect server + worker, MLflow server) driving the
throwaway DVC project through its deployments: runs land in MLflow nested under one parent; a failing
stage fails the flow and the MLflow runs; two runs queue; a killed worker leaves the run Crashed and a
rerun resumes (DVC skips what finished); services.sh stop ends exactly its processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from _servers import parent_of, running_services

from flows.testing import LocalServices

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory):
    with running_services(tmp_path_factory, "services", pool="toy-pool") as svc:
        yield svc


@pytest.mark.timeout(420)
def test_deployment_run_is_tracked_as_parent_with_children(services: LocalServices, services_tracking) -> None:
    fr = services.run_deployment("pipeline", "toy-pipeline")
    services.wait_state(fr, {"COMPLETED", "FAILED", "CRASHED"}, timeout=360)
    assert services.flow_run(fr)["state"]["type"] == "COMPLETED"
    parent = parent_of(services_tracking, fr)
    assert parent["status"] == "FINISHED"
    kids = {c["name"]: c for c in services_tracking.child_runs(parent["run_id"])}
    assert set(kids) == {"prepare", "proxies", "evaluate"}
    assert all(k["tags"]["dvc.stage_hash"] != "none" for k in kids.values())


@pytest.mark.timeout(420)
def test_failing_stage_fails_flow_and_mlflow_runs(services: LocalServices, services_tracking) -> None:
    flag = services.project / "FAIL_evaluate"
    flag.write_text("")
    try:
        fr = services.run_deployment("pipeline", "toy-pipeline", {"budget": 555})
        services.wait_state(fr, {"COMPLETED", "FAILED", "CRASHED"}, timeout=360)
    finally:
        flag.unlink()
    assert services.flow_run(fr)["state"]["type"] == "FAILED"
    assert "failed on purpose" in services.flow_run_logs(fr)
    parent = parent_of(services_tracking, fr)
    assert parent["status"] == "FAILED"
    kids = {c["name"]: c["status"] for c in services_tracking.child_runs(parent["run_id"])}
    assert kids == {"prepare": "FINISHED", "proxies": "FINISHED", "evaluate": "FAILED"}


@pytest.mark.timeout(600)
def test_two_runs_queue_instead_of_colliding(services: LocalServices) -> None:
    (services.project / "SLEEP_proxies").write_text("5")
    try:
        a = services.run_deployment("pipeline", "toy-pipeline", {"budget": 600})
        b = services.run_deployment("pipeline", "toy-pipeline", {"budget": 650})
        deadline = time.monotonic() + 540
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        while True:
            states = [services.flow_run(x)["state"]["type"] for x in (a, b)]
            assert states != ["RUNNING", "RUNNING"], "two pipeline runs ran at once"
            if all(s in final for s in states) or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        (services.project / "SLEEP_proxies").unlink()
    # b FAILED once (a fresh-clone CI run, 2026-12-06; the rerun passed) and its logs were gone with the services
    why = {x: services.flow_run_logs(x)[-4000:] for x, s in zip((a, b), states, strict=True) if s != "COMPLETED"}
    assert states == ["COMPLETED", "COMPLETED"], f"flow runs {states}; logs of those not completed: {why}"
    ra, rb = services.flow_run(a), services.flow_run(b)
    assert rb["start_time"] >= ra["end_time"]


@pytest.mark.timeout(600)
def test_killed_worker_crashes_the_run_and_a_rerun_resumes(services: LocalServices, services_tracking) -> None:
    (services.project / "SLEEP_proxies").write_text("120")
    seen = services.log("prefect-worker").count("python stage.py proxies")
    fr = services.run_deployment("pipeline", "toy-pipeline", {"budget": 777})
    deadline = time.monotonic() + 240
    while services.log("prefect-worker").count("python stage.py proxies") == seen:
        assert time.monotonic() < deadline, services.log("prefect-worker")[-2000:]
        time.sleep(1)
    time.sleep(2)
    killed = services.kill_worker_hard()
    assert len(killed) >= 3  # worker, flow-run engine, dvc, stage
    (services.project / "SLEEP_proxies").unlink()
    crashed = services.wait_state(fr, {"CRASHED", "COMPLETED", "FAILED"}, timeout=200)
    assert crashed["state"]["type"] == "CRASHED"

    services.start()  # brings the worker back (servers still up)
    again = services.run_deployment("pipeline", "toy-pipeline", {"budget": 777})
    services.wait_state(again, {"COMPLETED", "FAILED", "CRASHED"}, timeout=300)
    assert services.flow_run(again)["state"]["type"] == "COMPLETED"
    kids = {c["name"]: c for c in services_tracking.child_runs(parent_of(services_tracking, again)["run_id"])}
    assert kids["prepare"]["tags"]["proxy3d.skipped"] == "true"  # finished before the kill: not redone
    assert kids["proxies"]["tags"]["proxy3d.skipped"] == "false"
    assert parent_of(services_tracking, fr)["status"] == "KILLED"  # the orphaned parent was closed by the rerun


@pytest.mark.timeout(180)
def test_stop_ends_exactly_the_started_processes(services: LocalServices) -> None:
    pids = {n: services.pid(n) for n in ("prefect-server", "mlflow-server", "prefect-worker")}
    assert all(pids.values())
    # someone else's servers (own sessions): command lines that a stop by name (pkill -f "prefect server") would hit
    decoys = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", *cmd.split()],
                               start_new_session=True)
              for cmd in ("prefect server start", "mlflow server --port 5999", "prefect worker start --pool toy-pool")]
    try:
        services.stop()
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"{name} (pid {pid}) still running"
        assert not any((services.state_dir / "services" / f"{n}.pid").exists() for n in pids)
        assert [d.poll() for d in decoys] == [None, None, None], "stop ended processes it had not started"
    finally:
        for d in decoys:
            d.kill()
            d.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True
