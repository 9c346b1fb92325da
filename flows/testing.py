"""Real local services for tests and demos: ``scripts/services.sh`` on free ports in a scratch folder,
pointed at a project (usually :mod:`flows.demo_project`), plus small helpers to start deployments and
wait for flow-run states through the Prefect API.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVICES_SH = REPO / "scripts" / "services.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServices:
    """One services.sh instance: Prefect server + worker + MLflow server for ``project``."""

    project: Path
    state_dir: Path
    pool: str = "proxy3d"
    zombie_after: int = 60
    prefect_port: int = field(default_factory=free_port)
    mlflow_port: int = field(default_factory=free_port)

    @property
    def env(self) -> dict[str, str]:
        """Environment for services.sh and for clients of these servers."""
        return {**os.environ, "PROJECT_DIR": str(self.project), "SERVICES_DIR": str(self.state_dir / "services"),
                "PREFECT_HOME": str(self.state_dir / "prefect-home"), "PREFECT_PORT": str(self.prefect_port),
                "MLFLOW_PORT": str(self.mlflow_port), "POOL": self.pool, "ZOMBIE_AFTER": str(self.zombie_after),
                "PREFECT_API_URL": self.prefect_api, "MLFLOW_TRACKING_URI": self.mlflow_url,
                "PROXY3D_TRACKING": "1", "HEALTH_TIMEOUT": "150"}

    @property
    def prefect_ui(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_ui}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def script(self, command: str, timeout: float = 300) -> str:
        out = subprocess.run(["bash", str(SERVICES_SH), command], env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"services.sh {command} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def start(self) -> LocalServices:
        self.script("start")
        return self

    def stop(self) -> None:
        self.script("stop", timeout=120)

    def pid(self, name: str) -> int | None:
        f = self.state_dir / "services" / f"{name}.pid"
        return int(f.read_text()) if f.exists() else None

    def log(self, name: str) -> str:
        f = self.state_dir / "services" / f"{name}.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def kill_worker_hard(self) -> list[int]:
        """SIGKILL the worker and every process below it (a machine or container dying)."""
        root = self.pid("prefect-worker")
        if root is None:
            return []
        pids = [root, *_descendants(root)]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    # --- Prefect API helpers (httpx: what the UI itself calls) -------------------------------------
    def api(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        # The server answers 503 while its SQLite store is busy (seen in CI on a loaded 2-core machine):
        # retry that status a bounded number of times; every other error is raised at once.
        for attempt in range(6):
            r = httpx.request(method, f"{self.prefect_api}{path}", timeout=30, **kw)
            if r.status_code != 503 or attempt == 5:
                break
            time.sleep(2.0)
        r.raise_for_status()
        return r.json() if r.content else None

    def deployment_id(self, flow: str, deployment: str) -> str:
        return self.api("GET", f"/deployments/name/{flow}/{deployment}")["id"]

    def run_deployment(self, flow: str, deployment: str, parameters: dict[str, Any] | None = None) -> str:
        """What the UI's Run → Quick run does; returns the flow run id."""
        dep = self.deployment_id(flow, deployment)
        return self.api("POST", f"/deployments/{dep}/create_flow_run", json={"parameters": parameters or {}})["id"]

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{flow_run_id}")

    def wait_state(self, flow_run_id: str, types: set[str], timeout: float) -> dict[str, Any]:
        """Poll until the flow run's state type is in ``types`` (e.g. {"COMPLETED"}); raise on timeout."""
        deadline = time.monotonic() + timeout
        run = self.flow_run(flow_run_id)
        while run["state"]["type"] not in types:
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} still {run['state']['type']} after {timeout}s "
                                   f"(wanted {sorted(types)}); worker log tail:\n{self.log('prefect-worker')[-3000:]}")
            time.sleep(2)
            run = self.flow_run(flow_run_id)
        return run

    def flow_run_logs(self, flow_run_id: str) -> str:
        logs = self.api("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                        "limit": 200})
        return "\n".join(entry["message"] for entry in logs)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return [k for c in kids for k in (c, *_descendants(c))]
