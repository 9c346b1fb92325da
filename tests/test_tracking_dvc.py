"""A plain `dvc repro` (no MLFLOW_PARENT_RUN_ID) gives one MLflow parent run per dvc execution, with one
child per stage that ran, nothing left RUNNING; a failing stage fails its dvc execution's parent only.
Real DVC on a throwaway two-stage project, real MLflow on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import demo_project
from proxy3d import dvcproc, tracking

DVC = str(Path(sys.executable).parent / "dvc")

TWO_STAGES = demo_project.DVC_YAML.split("  evaluate:")[0]  # prepare -> proxies


@pytest.fixture(scope="module")
def store(mlflow_store: Path) -> Path:
    """One SQLite store for the module; each test uses its own experiment."""
    return mlflow_store


def _repro(project: Path) -> subprocess.CompletedProcess:
    """``dvc repro`` in ``project`` as in a checkout: the stages find their project (params.yaml, dvc.lock) from
    the working directory, not from the store fixture's PROXY3D_ROOT."""
    env = {k: v for k, v in os.environ.items() if k != "PROXY3D_ROOT"}
    env.update({"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"})
    return subprocess.run([DVC, "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=180)


def _artifacts(run_id: str, dst: Path) -> dict[str, str]:
    """The run's "pipeline" artifacts: file name -> text."""
    from mlflow.artifacts import download_artifacts

    dst.mkdir(parents=True)
    folder = Path(download_artifacts(run_id=run_id, artifact_path="pipeline", dst_path=str(dst)))
    return {f.name: f.read_text() for f in sorted(folder.iterdir())}


def test_each_dvc_repro_gets_one_parent_run(store: Path) -> None:
    project = demo_project.create(store / "proj")
    (project / "dvc.yaml").write_text(TWO_STAGES)
    first = _repro(project)
    assert first.returncode == 0, first.stdout + first.stderr
    (parent,) = tracking.recent_runs(10)  # the stages are not top-level runs of their own
    assert parent["status"] == "FINISHED" and parent["name"] == "dvc repro"
    assert parent["tags"]["proxy3d.kind"] == "pipeline" and parent["tags"]["proxy3d.driver"] == "dvc"
    assert parent["tags"]["proxy3d.stages"] == "prepare,proxies"
    assert parent["params"]["proxies.budget"] == "700"  # params.yaml, so `proxy3d runs compare` can diff runs
    assert parent["metrics"]["proxies/tokens_per_scene"] == 700.0
    kids = tracking.child_runs(parent["run_id"])
    assert [(k["name"], k["status"], k["tags"]["dvc.stage"]) for k in kids] == [
        ("prepare", "FINISHED", "prepare"), ("proxies", "FINISHED", "proxies")]
    # each stage run keeps the project's params.yaml and dvc.lock as they were when it ran, under "pipeline"
    # (prepare ran before DVC wrote any dvc.lock; proxies after DVC had locked prepare)
    logged = {k["name"]: _artifacts(k["run_id"], store / "downloads" / k["name"]) for k in kids}
    assert logged["prepare"] == {"params.yaml": (project / "params.yaml").read_text()}
    assert logged["proxies"].keys() == {"params.yaml", "dvc.lock"}
    assert logged["proxies"]["params.yaml"] == (project / "params.yaml").read_text()
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert yaml.safe_load(logged["proxies"]["dvc.lock"])["stages"] == {"prepare": lock["prepare"]}

    # second execution: only `proxies` reruns, and it fails -> a new parent, FAILED, the first one untouched
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("budget: 700", "budget: 450"))
    (project / "FAIL_proxies").write_text("")
    second = _repro(project)
    assert second.returncode != 0 and "failed on purpose" in second.stdout + second.stderr
    newest, older = tracking.recent_runs(10)
    assert older["run_id"] == parent["run_id"] and older["status"] == "FINISHED"
    assert newest["run_id"] != parent["run_id"] and newest["status"] == "FAILED"
    assert newest["params"]["proxies.budget"] == "450" and newest["tags"]["proxy3d.failed_stages"] == "proxies"
    assert [(k["name"], k["status"]) for k in tracking.child_runs(newest["run_id"])] == [("proxies", "FAILED")]
    assert len(tracking.child_runs(parent["run_id"])) == 2


def test_stage_outside_dvc_stays_top_level(store: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with tracking.start_run("proxies", experiment="by-hand") as by_hand:
        pass
    monkeypatch.setenv(dvcproc.DVC_STAGE_ENV, "proxies")  # DVC_STAGE leaked, but pytest has no dvc parent
    with tracking.start_run("proxies", experiment="by-hand") as leaked:
        pass
    assert "no dvc process was found" in caplog.text
    runs = {r["run_id"]: r for r in tracking.recent_runs(10, experiment="by-hand")}
    assert set(runs) == {by_hand.run_id, leaked.run_id}
    assert all("proxy3d.kind" not in r["tags"] and r["status"] == "FINISHED" for r in runs.values())


def test_parent_of_a_dead_dvc_process_is_killed(store: Path) -> None:
    client, exp_id = tracking._client_and_experiment("orphans")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_key = f"{dvcproc.host_boot()}:{done.stdout.strip()}:1"  # that pid is gone (or reused, later start)
    live_key = f"{dvcproc.host_boot()}:{os.getpid()}:{dvcproc.proc_info(os.getpid())[1]}"
    assert not dvcproc.dvc_alive(dead_key) and dvcproc.dvc_alive(live_key)
    assert dvcproc.dvc_alive("otherhost:1234abcd:1:1")  # other machines' runs are not ours to judge
    dead = tracking._open_dvc_parent(client, exp_id, dead_key, "dvc repro")
    assert tracking._open_dvc_parent(client, exp_id, dead_key, "dvc repro") == dead  # same execution: reused
    fresh = tracking._open_dvc_parent(client, exp_id, live_key, "dvc exp run -S proxies.budget=450")
    assert tracking.get_run(dead)["status"] == "KILLED"
    assert tracking.get_run(fresh)["status"] == "RUNNING" and tracking.get_run(fresh)["name"].startswith("dvc exp")


@pytest.mark.parametrize(("argv", "args"), [
    (["/w/.venv/bin/python", "/w/.venv/bin/dvc", "repro", "proxies"], ["repro", "proxies"]),
    (["dvc", "exp", "run", "-S", "proxies.budget=450"], ["exp", "run", "-S", "proxies.budget=450"]),
    (["python3", "-m", "dvc", "repro"], ["repro"]),
    (["/bin/sh", "-c", "dvc repro"], None),
    (["/bin/sh", "-c", "dvc"], None),
    (["python", "stage.py", "dvc"], None),
])
def test_dvc_command_lines(argv: list[str], args: list[str] | None) -> None:
    assert dvcproc.dvc_args(argv) == args


def test_dvcproc_does_not_import_mlflow() -> None:
    code = "import sys, proxy3d.dvcproc; sys.exit('mlflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "importing proxy3d.dvcproc pulled in mlflow"


def test_temp_experiment_runs_land_in_the_projects_store(tmp_path: Path) -> None:
    """``dvc exp run --temp`` runs the stages in a copy under .dvc/tmp/exps that DVC deletes afterwards: the
    runs went to a store inside that copy and were lost, and the parent logged the original's params."""
    project = demo_project.create(tmp_path / "proj")
    (project / "dvc.yaml").write_text(TWO_STAGES)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_PARENT_RUN_ID", "PROXY3D_ROOT")}
    env.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1", PROXY3D_TRACKING="1")
    for cmd in (["repro"], ["exp", "run", "--temp", "-S", "proxies.budget=450"]):
        out = subprocess.run([DVC, *cmd], cwd=project, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{project.resolve() / 'mlruns.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    parents = {r.info.run_name: r for r in runs if r.data.tags.get("proxy3d.kind") == "pipeline"}
    assert set(parents) == {"dvc repro", "dvc exp run --temp -S proxies.budget=450"}, sorted(parents)
    temp = parents["dvc exp run --temp -S proxies.budget=450"]
    assert temp.data.params["proxies.budget"] == "450" and parents["dvc repro"].data.params["proxies.budget"] == "700"
    assert temp.data.metrics["proxies/tokens_per_scene"] == 450.0
