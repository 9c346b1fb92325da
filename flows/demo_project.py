"""A tiny throwaway DVC project (git + dvc, three trivial stages that log through proxy3d.tracking),
used to exercise the flows, MLflow nesting, the services and the UI tests in seconds instead of the
real pipeline's minutes. ``python -m flows.demo_project DIR`` creates one.

Fault hooks (files in the project root, not DVC deps): ``FAIL_<stage>`` makes that stage raise;
``SLEEP_<stage>`` (holding seconds) makes it sleep first, so a test can kill the worker mid-stage.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

STAGE_SCRIPT = '''"""Toy stage: reads its params section, writes an output and metrics, logs to MLflow."""
import json, sys, time
from pathlib import Path

import yaml

from proxy3d import tracking
from proxy3d.config import TrackingParams

name = sys.argv[1]
params = yaml.safe_load(Path("params.yaml").read_text())
section = {"prepare": "data", "proxies": "proxies", "evaluate": "evaluate"}[name]
settings = TrackingParams(**(params.get("tracking") or {}))
with tracking.stage_run(name, params[section], settings) as tracker:  # as the real stages do
    sleep = Path(f"SLEEP_{name}")
    if sleep.exists():
        time.sleep(float(sleep.read_text() or 0))
    if Path(f"FAIL_{name}").exists():
        raise RuntimeError(f"toy stage {name!r} failed on purpose (FAIL_{name} exists)")
    budget = params["proxies"]["budget"]
    metrics = {"prepare": {"items": params["data"]["items"]},
               "proxies": {"tokens_per_scene": budget, "purity": 0.5 + 0.0001 * budget},
               "evaluate": {"acc_025": round(budget / (budget + 300), 4)}}[name]
    Path("out").mkdir(exist_ok=True)
    Path(f"out/{name}.txt").write_text(json.dumps(metrics))
    Path("metrics").mkdir(exist_ok=True)
    Path(f"metrics/{name}.json").write_text(json.dumps(metrics, sort_keys=True))
    tracker.log_metrics(metrics)
print(f"stage {name} done")
'''

PARAMS = """# toy params (same section names as the real pipeline)
data: {items: 3}
proxies:
  budget: 700
  method: semantic
evaluate: {seed: 0}
"""

DVC_YAML = """stages:
  prepare:
    cmd: python stage.py prepare
    deps: [stage.py]
    params: [data]
    outs: [out/prepare.txt]
    metrics:
      - metrics/prepare.json: {cache: false}
  proxies:
    cmd: python stage.py proxies
    deps: [stage.py, out/prepare.txt]
    params: [proxies]
    outs: [out/proxies.txt]
    metrics:
      - metrics/proxies.json: {cache: false}
  evaluate:
    cmd: python stage.py evaluate
    deps: [stage.py, out/proxies.txt]
    params: [evaluate, proxies.budget]
    outs: [out/evaluate.txt]
    metrics:
      - metrics/evaluate.json: {cache: false}
"""

ENTRY = '''"""Flow entry points for this project's prefect.yaml (the flows live in the proxy3d checkout)."""
from flows.pipeline import evaluate, pipeline, stage  # noqa: F401
'''


def prefect_yaml(project: Path, pool: str) -> str:
    """Deployments of the toy project: the same flows as the real prefect.yaml, on ``pool``."""
    deps = []
    for name, entry, params in [("toy-pipeline", "pipeline", "{}"),
                                ("toy-evaluate", "evaluate", "{}"),
                                ("toy-stage-proxies", "stage", "{stage: proxies}")]:
        deps.append(f"""  - name: {name}
    entrypoint: entry.py:{entry}
    parameters: {params}
    concurrency_limit: 1
    work_pool: {{name: {pool}}}""")
    return (f"name: toy\nprefect-version: 3.8.8\nbuild: null\npush: null\npull:\n"
            f"  - prefect.deployments.steps.set_working_directory:\n      directory: {project}\n"
            "deployments:\n" + "\n".join(deps) + "\n")


def create(project: Path, pool: str = "proxy3d") -> Path:
    """Create the toy project in ``project`` (git repo with one commit, DVC initialised). Returns it."""
    project.mkdir(parents=True, exist_ok=True)
    files = {"stage.py": STAGE_SCRIPT, "params.yaml": PARAMS, "dvc.yaml": DVC_YAML, "entry.py": ENTRY,
             "prefect.yaml": prefect_yaml(project, pool), ".gitignore": "/out\nmlruns.db\nmlartifacts/\n"}
    for name, text in files.items():
        (project / name).write_text(text)

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=project, check=True, capture_output=True, text=True)

    dvc = str(Path(sys.executable).parent / "dvc")
    run("git", "init", "-q", "-b", "main")
    run("git", "config", "user.email", "toy@example.invalid")
    run("git", "config", "user.name", "toy")
    run(dvc, "init", "-q")
    run(dvc, "config", "core.analytics", "false")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "toy project")
    return project


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.demo_project", description=__doc__.split("\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--pool", default="proxy3d")
    a = p.parse_args(argv)
    print(create(a.dir.resolve(), a.pool))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
