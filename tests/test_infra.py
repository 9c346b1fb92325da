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
