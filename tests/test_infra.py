"""Static checks of infra/docker-compose.yml (Docker cannot run here): it parses, every service has a
healthcheck, nothing is published on 0.0.0.0, and every ${VAR} it uses is documented in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    out = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_compose_has_the_team_services(compose: dict) -> None:
    assert {"postgres", "minio", "mlflow", "prefect-server", "prefect-worker", "spark-master",
            "spark-worker"} <= set(compose["services"])


def test_every_service_has_a_healthcheck(compose: dict) -> None:
    missing = [name for name, svc in compose["services"].items() if not (svc.get("healthcheck") or {}).get("test")]
    assert not missing, f"services without a healthcheck: {missing}"


def test_dependants_wait_for_healthy(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}: {cond}"


def test_ports_bind_loopback_only(compose: dict) -> None:
    published = [(name, str(p)) for name, svc in compose["services"].items() for p in svc.get("ports", [])]
    assert published, "no published ports at all?"
    for name, port in published:
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port!r}: bind it to 127.0.0.1"
        assert "0.0.0.0" not in port


def test_every_variable_is_in_env_example() -> None:
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(VAR.findall(text))
    documented = env_example()
    assert used, "the compose file should take its settings from .env"
    assert not used - set(documented), f"add to infra/.env.example: {sorted(used - set(documented))}"
    assert not set(documented) - used, f"unused in .env.example: {sorted(set(documented) - used)}"


def test_secrets_come_from_env_only(compose: dict) -> None:
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert re.fullmatch(r"\$\{[A-Z_]+\}", str(value)), f"{name}.{key} must come from .env, not {value!r}"


def test_env_file_is_git_ignored() -> None:
    ignore = (INFRA.parent / ".gitignore").read_text().splitlines()
    assert ".env" in ignore


def _mlflow_allowed_hosts(compose: dict) -> list[str]:
    flags = [a for a in compose["services"]["mlflow"]["command"] if str(a).startswith("--allowed-hosts=")]
    assert len(flags) == 1, "mlflow should pass --allowed-hosts once"
    return flags[0].split("=", 1)[1].split(",")


def test_mlflow_accepts_the_host_headers_its_clients_send(compose: dict) -> None:
    """A Host header carries the port; MLflow compares it exactly unless the pattern has a '*' (checked with
    MLflow's own matcher)."""
    security = pytest.importorskip("mlflow.server.security_utils")
    hosts = _mlflow_allowed_hosts(compose)
    port = env_example()["MLFLOW_PORT"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "mlflow:5000"):  # published port; prefect-worker
        assert security.is_allowed_host_header(hosts, host), f"{hosts} reject {host}"
    assert not security.is_allowed_host_header(hosts, "attacker.example:5000")


def test_spark_image_matches_the_pinned_pyspark() -> None:
    pins = dict(line.split("==", 1) for line in (INFRA.parent / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    image = env_example()["SPARK_IMAGE"]
    assert image.rsplit(":", 1)[1].split("-")[0] == pins["pyspark"], \
        f"SPARK_IMAGE={image} but constraints.txt pins pyspark=={pins['pyspark']}: client and cluster differ"


def test_worker_image_installs_the_pinned_versions() -> None:
    dockerfile = (INFRA / "worker.Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.M), "COPY constraints.txt first"


def test_spacespan_stage_runs_as_a_script_for_spark_submit() -> None:
    """``spark-submit proxy3d/stages/spacespan.py`` (README, infra/README.md) runs the file as a script, which
    puts proxy3d/stages/ first on sys.path: no module there may shadow the standard library."""
    import os
    import subprocess
    import sys

    script = INFRA.parent / "proxy3d" / "stages" / "spacespan.py"
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=180,
                         env=env)
    assert out.returncode == 0 and "usage: proxy3d spacespan" in out.stdout, out.stderr[-2000:]
    shadowing = sorted(p.stem for p in script.parent.glob("*.py") if p.stem in sys.stdlib_module_names)
    assert not shadowing, f"proxy3d/stages/{shadowing[0]}.py shadows the standard library in script mode"
