"""Prefect flows on a throwaway DVC project with a real (ephemeral) Prefect API and a real MLflow store:
one parent run per flow run, a child per stage, skipped stages recorded, DVC stage hashes as tags,
params passed through to params.yaml, a failing stage fails the flow and the MLflow runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from flows import demo_project, dvc
from flows import pipeline as flows_pipeline
from proxy3d import tracking

ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_deploys_every_flow_to_the_process_pool() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {"pipeline", "evaluate-only"} | {f"stage-{s}" for s in stages} == set(deployments)
    for d in deployments.values():
        assert d["work_pool"]["name"] == "proxy3d" and d["concurrency_limit"] == 1
        path, func = d["entrypoint"].split(":")
        assert (ROOT / path).exists() and hasattr(getattr(flows_pipeline, func), "deploy"), d["entrypoint"]
        if d["name"].startswith("stage-"):
            assert d["parameters"] == {"stage": d["name"][len("stage-"):]}
    pull = spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == "{{ $PROXY3D_ROOT }}"


def test_overrides_are_validated_and_keep_comments(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("# top comment\nproxies:\n  budget: 700  # tokens\n  method: semantic\n")
    assert dvc.apply_overrides(tmp_path, ["proxies.budget=450", "proxies.method=fps"]) == [
        "proxies.budget=450", "proxies.method=fps"]
    text = (tmp_path / "params.yaml").read_text()
    assert "# top comment" in text and "# tokens" in text
    assert yaml.safe_load(text)["proxies"] == {"budget": 450, "method": "fps"}
    with pytest.raises(ValueError, match="'budgte' is not a key of proxies"):
        dvc.apply_overrides(tmp_path, ["proxies.budgte=1"])
    with pytest.raises(ValueError, match="expected section.key=value"):
        dvc.apply_overrides(tmp_path, ["proxies.budget"])


@pytest.mark.parametrize("bad", ["proxies.budget=abc", "proxies.budget=[1, 2]", "data.frames=null"])
def test_override_of_the_wrong_type_fails_and_leaves_params_untouched(tmp_path: Path, bad: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  frames: 32\nproxies:\n  budget: 700  # tokens\n  method: semantic\n")
    before = params.read_text()
    key = bad.split("=")[0]
    with pytest.raises(ValueError, match=rf"override '{re.escape(bad)}': .*{key}.*is unchanged"):
        dvc.apply_overrides(tmp_path, ["proxies.method=fps", bad])
    assert params.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # no temp file left behind


def test_dvc_errors_are_classified(tmp_path: Path) -> None:
    project = demo_project.create(tmp_path / "p")
    with pytest.raises(dvc.StageError) as err:
        dvc.run_dvc(["repro", "--single-item", "nope"], project)
    assert not isinstance(err.value, dvc.TransientStageError) and "nope" in str(err.value)
    with pytest.raises(ValueError, match="choose from: prepare, proxies, evaluate"):
        dvc.check_stage(project, "nope")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect server (prefect_test_harness) and an MLflow store in a temp folder, which is also the
    working directory: the flow's own runs (parent, skipped stages) find their project, and so the folder for
    artifacts and the params.yaml/dvc.lock they log, from it; from the checkout they went into its mlartifacts/."""
    from prefect.testing.utilities import prefect_test_harness

    root = tmp_path_factory.mktemp("flows")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}", "PROXY3D_TRACKING": "1",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
            mp.setenv(k, v)
        mp.delenv("PROXY3D_ROOT", raising=False)
        mp.delenv(tracking.PARENT_ENV, raising=False)
        mp.chdir(root)
        with prefect_test_harness(server_startup_timeout=120):
            yield root


def _children(parent_id: str) -> dict[str, dict]:
    return {c["name"]: c for c in tracking.child_runs(parent_id)}


def _artifact(run_id: str, path: str, dst: Path) -> str:
    from mlflow.artifacts import download_artifacts

    dst.mkdir(exist_ok=True)
    return Path(download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))).read_text()


def _assert_artifacts_stay_in(root: Path) -> None:
    """Every run in the harness's store keeps its artifacts under ``root``; none has a folder in the checkout's
    mlartifacts/ (checked by run id: a pipeline run of the checkout may be writing there meanwhile)."""
    from urllib.parse import unquote, urlparse

    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert runs
    for r in runs:
        assert Path(unquote(urlparse(r.info.artifact_uri).path)).is_relative_to(root), r.info.artifact_uri
        assert not (ROOT / "mlartifacts" / r.info.run_id).exists(), r.info.run_id


@pytest.mark.services
@pytest.mark.slow
def test_pipeline_flow_nests_stage_runs_and_records_skips(harness: Path) -> None:
    project = demo_project.create(harness / "toy")
    first = flows_pipeline.pipeline(project_dir=str(project))
    assert [r["skipped"] for r in first] == [False, False, False]
    second = flows_pipeline.pipeline(budget=450, project_dir=str(project))
    assert [(r["stage"], r["skipped"]) for r in second] == [("prepare", True), ("proxies", False), ("evaluate", False)]
    assert yaml.safe_load((project / "params.yaml").read_text())["proxies"]["budget"] == 450

    new, old = tracking.recent_runs(2, pipelines_only=True)
    assert new["params"]["proxies.budget"] == "450" and old["params"]["proxies.budget"] == "700"
    assert new["metrics"]["proxies/tokens_per_scene"] == 450.0
    assert new["tags"]["proxy3d.skipped_stages"] == "prepare" and new["tags"]["prefect.flow_run_id"]
    kids = _children(new["run_id"])
    assert set(kids) == {"prepare", "proxies", "evaluate"}
    assert kids["prepare"]["tags"]["proxy3d.skipped"] == "true" and kids["prepare"]["metrics"] == {"items": 3.0}
    assert kids["proxies"]["tags"]["proxy3d.skipped"] == "false"
    for stage, run in kids.items():
        assert run["status"] == "FINISHED"
        assert run["tags"]["dvc.stage_hash"] == dvc.stage_hash(dvc.lock_entry(project, stage))
    assert _children(old["run_id"])["prepare"]["tags"]["proxy3d.skipped"] == "false"
    # a stage run logs its project's params.yaml (the toy's, at budget 450 now), not the checkout's
    logged = _artifact(kids["proxies"]["run_id"], "pipeline/params.yaml", harness / "downloads")
    assert logged == (project / "params.yaml").read_text()
    _assert_artifacts_stay_in(harness)


@pytest.mark.services
@pytest.mark.slow
def test_failing_stage_fails_flow_and_mlflow_runs(harness: Path) -> None:
    project = demo_project.create(harness / "failing")
    (project / "FAIL_proxies").write_text("")
    with pytest.raises(dvc.StageError, match="failed on purpose"):
        flows_pipeline.pipeline(project_dir=str(project))
    (parent,) = tracking.recent_runs(1, pipelines_only=True)
    assert parent["status"] == "FAILED"
    kids = _children(parent["run_id"])
    assert kids["prepare"]["status"] == "FINISHED" and kids["proxies"]["status"] == "FAILED"
    assert "evaluate" not in kids
    (project / "FAIL_proxies").unlink()
    rerun = flows_pipeline.stage("proxies", project_dir=str(project))
    assert rerun[0]["skipped"] is False
    _assert_artifacts_stay_in(harness)


@pytest.mark.services
@pytest.mark.slow
def test_pipeline_flow_follows_the_tracking_section_of_params(harness: Path) -> None:
    """The flow's parent and skipped-stage runs go where the stages log (``tracking.experiment``), and nowhere
    when ``tracking.enabled`` is false; they had always gone to "proxy3d"."""
    project = demo_project.create(harness / "elsewhere")
    params = project / "params.yaml"
    params.write_text(params.read_text() + "tracking: {experiment: elsewhere}\n")
    flows_pipeline.pipeline(project_dir=str(project))
    flows_pipeline.pipeline(project_dir=str(project))  # every stage skipped: recorded in "elsewhere" too
    new, old = tracking.recent_runs(2, experiment="elsewhere", pipelines_only=True)
    kids = {r: {c["name"]: c for c in tracking.child_runs(r, "elsewhere")} for r in (old["run_id"], new["run_id"])}
    assert set(kids[old["run_id"]]) == set(kids[new["run_id"]]) == {"prepare", "proxies", "evaluate"}
    assert all(k["tags"]["proxy3d.skipped"] == "true" for k in kids[new["run_id"]].values())
    before = len(tracking.recent_runs(100, experiment="elsewhere"))
    params.write_text(params.read_text().replace("experiment: elsewhere", "experiment: elsewhere, enabled: false"))
    flows_pipeline.pipeline(budget=450, project_dir=str(project))
    assert len(tracking.recent_runs(100, experiment="elsewhere")) == before
    _assert_artifacts_stay_in(harness)


@pytest.mark.services
@pytest.mark.slow
def test_flow_tracks_in_its_project_not_the_workers_cwd(harness: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker runs a flow for a project_dir that is not its working directory (the harness's folder), with no
    MLFLOW_TRACKING_URI and no PROXY3D_ROOT: the parent run logs that project's params.yaml/dvc.lock and goes to
    the project's default store, where the stage processes (cwd=project) put their runs. It had resolved the
    root from the worker's cwd: no params.yaml logged, and the parent in another store than its children."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    project = demo_project.create(tmp_path / "away")
    assert not Path.cwd().resolve().is_relative_to(project) and not project.is_relative_to(Path.cwd().resolve())
    flows_pipeline.pipeline(project_dir=str(project))
    assert (project / "mlruns.db").is_file(), "the runs did not go to the project's store"
    assert "PROXY3D_ROOT" not in os.environ and "MLFLOW_TRACKING_URI" not in os.environ  # restored

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlruns.db'}")
    parents = tracking.recent_runs(10, pipelines_only=True)
    assert len(parents) == 1, "the flow's parent run is not in the project's store, where its stage runs are"
    parent = parents[0]
    kids = _children(parent["run_id"])
    assert set(kids) == {"prepare", "proxies", "evaluate"}
    assert parent["status"] == "FINISHED" and all(k["status"] == "FINISHED" for k in kids.values())
    for name in ("params.yaml", "dvc.lock"):
        logged = _artifact(parent["run_id"], f"pipeline/{name}", tmp_path / "downloads")
        assert logged == (project / name).read_text(), name
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("proxy3d")
    for run_id in [parent["run_id"], *(k["run_id"] for k in kids.values())]:
        run = client.get_run(run_id)
        assert run.info.experiment_id == exp.experiment_id
        assert run.info.artifact_uri.startswith((project / "mlartifacts").as_uri()), run.info.artifact_uri
