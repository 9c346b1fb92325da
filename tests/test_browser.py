"""The UI in real Chromium (Debian chromium + pip playwright, never `playwright install`): click
Run → Quick run on a deployment in the Prefect UI, wait for Completed, then find the parent run, its
child runs and metrics in the MLflow UI; and compare two pipeline runs with different budgets in
MLflow's compare view. Screenshots go to test-artifacts/ (CI keeps them). Also: scripts/dvc_screenshot.py
(docs/img/dvc.png) renders real `dvc dag` / `dvc exp show` output.

Uses the throwaway DVC project (flows.demo_project) so each click costs seconds, not the real pipeline's
minutes. Needs /usr/bin/chromium (scripts/install_browser.sh)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from _servers import parent_of, running_services

from flows.testing import LocalServices

pytestmark = [pytest.mark.browser, pytest.mark.services]

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
UI_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/install_browser.sh (apt-get install chromium)")
    with running_services(tmp_path_factory, "browser", pool="ui-pool") as svc:
        yield svc


@pytest.fixture(scope="module")
def page(services: LocalServices):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1300})
        pg.set_default_timeout(UI_TIMEOUT_MS)
        yield pg
        browser.close()


def _flow_runs(services: LocalServices, deployment_id: str) -> list[str]:
    runs = services.api("POST", "/flow_runs/filter",
                        json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "limit": 50})
    return [r["id"] for r in runs]


def _experiment_id(services: LocalServices) -> str:
    import httpx

    r = httpx.get(f"{services.mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                  params={"experiment_name": "proxy3d"}, timeout=30)
    r.raise_for_status()
    return r.json()["experiment"]["experiment_id"]


@pytest.mark.timeout(600)
def test_quick_run_from_prefect_ui_shows_up_in_mlflow_ui(services: LocalServices, page, services_tracking) -> None:
    dep = services.deployment_id("pipeline", "toy-pipeline")
    before = set(_flow_runs(services, dep))

    page.goto(f"{services.prefect_ui}/deployments")
    page.get_by_role("link", name="toy-pipeline").first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Quick run", exact=True).click()
    page.get_by_text("scheduled to start").first.wait_for()

    deadline = time.monotonic() + 60
    while not (new := set(_flow_runs(services, dep)) - before):
        assert time.monotonic() < deadline, "Quick run created no flow run"
        time.sleep(1)
    (flow_run,) = new
    services.wait_state(flow_run, {"COMPLETED", "FAILED", "CRASHED"}, timeout=360)
    page.goto(f"{services.prefect_ui}/runs/flow-run/{flow_run}")
    page.get_by_text("Completed").first.wait_for()
    page.screenshot(path=str(SHOTS / "prefect_flow_run_completed.png"), full_page=True)
    assert services.flow_run(flow_run)["state"]["type"] == "COMPLETED"

    parent = parent_of(services_tracking, flow_run)
    exp = _experiment_id(services)
    page.goto(f"{services.mlflow_url}/#/experiments/{exp}/runs/{parent['run_id']}", wait_until="domcontentloaded")
    page.get_by_text("Child runs").first.wait_for()
    for stage in ("prepare", "proxies", "evaluate"):  # the parent's "Child runs" row links each stage run
        page.get_by_role("link", name=stage, exact=True).first.wait_for()
    page.get_by_text("proxies/tokens_per_scene").first.wait_for()
    page.screenshot(path=str(SHOTS / "mlflow_parent_run.png"), full_page=True)

    page.get_by_role("link", name="proxies", exact=True).first.click()
    page.get_by_text("tokens_per_scene").first.wait_for()
    page.get_by_text("dvc.stage_hash").first.wait_for()
    page.screenshot(path=str(SHOTS / "mlflow_child_run.png"), full_page=True)


@pytest.mark.timeout(600)
def test_two_budgets_side_by_side_in_mlflow_compare(services: LocalServices, page, services_tracking) -> None:
    ids = []
    for budget in (450, 1000):
        fr = services.run_deployment("pipeline", "toy-pipeline", {"budget": budget})
        services.wait_state(fr, {"COMPLETED", "FAILED", "CRASHED"}, timeout=360)
        assert services.flow_run(fr)["state"]["type"] == "COMPLETED"
        ids.append(parent_of(services_tracking, fr)["run_id"])
    exp = _experiment_id(services)
    runs = "[" + ",".join(f'"{i}"' for i in ids) + "]"
    page.goto(f'{services.mlflow_url}/#/compare-runs?runs={runs}&experiments=["{exp}"]',
              wait_until="domcontentloaded")
    page.get_by_text("proxies.budget").first.wait_for()
    page.get_by_text("proxies/tokens_per_scene").first.wait_for()
    body = page.inner_text("body")
    assert "450" in body and "1000" in body
    page.screenshot(path=str(SHOTS / "mlflow_compare_budgets.png"), full_page=True)


@pytest.mark.timeout(300)
def test_dvc_screenshot_script_renders_real_dvc_output(tmp_path: Path) -> None:
    """scripts/dvc_screenshot.py (docs/img/dvc.png) on a throwaway project: a PNG of dvc dag + dvc exp show."""
    import subprocess
    import sys

    from PIL import Image

    from flows import demo_project

    project = demo_project.create(tmp_path / "toy")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PROXY3D_TRACKING": "0"}
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=project, env=env, check=True,
                   capture_output=True, timeout=180)
    out = tmp_path / "dvc.png"
    done = subprocess.run([sys.executable, str(ROOT / "scripts/dvc_screenshot.py"), "--project", str(project),
                           "--out", str(out), "--html", str(tmp_path / "dvc.html")], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "dvc.html").read_text()
    assert all(f"| {stage} |" in page for stage in ("prepare", "proxies", "evaluate"))  # dvc dag's boxes
    assert "tokens_per_scene" in page and "proxies.budget" in page and " 700 " in page  # dvc exp show's row
    width, height = Image.open(out).size
    assert width > 300 and height > 200
