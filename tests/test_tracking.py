"""MLflow tracking with a real SQLite store: one parent per pipeline execution, children nested across
processes through MLFLOW_PARENT_RUN_ID, skipped stages, FAILED runs, orphan cleanup, `proxy3d runs`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy3d import cli, runs_cli, tracking

CHILD = """
import sys
from proxy3d import tracking
with tracking.start_run(sys.argv[1], {"budget": int(sys.argv[2])}) as t:
    t.log_metrics({"acc": int(sys.argv[2]) / 1000})
    if sys.argv[3] == "fail":
        raise RuntimeError("stage broke")
"""


@pytest.fixture(scope="module")
def store(mlflow_store: Path) -> Path:
    (mlflow_store / "params.yaml").write_text("proxies: {budget: 700}\n")
    return mlflow_store


def child(stage: str, budget: int, mode: str = "ok") -> int:
    return subprocess.run([sys.executable, "-c", CHILD, stage, str(budget), mode], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120).returncode


def test_parent_collects_children_from_other_processes(store: Path) -> None:
    with tracking.pipeline_run("pipeline", {"proxies": {"budget": 700}}, tags={"prefect.flow_run_id": "x"}) as parent:
        assert os.environ[tracking.PARENT_ENV] == parent.run_id
        assert child("proxies", 700) == 0
        skipped = tracking.record_skipped("spacespan", {"rows": 12.0}, tags={"dvc.stage_hash": "abc"})
        tagged = tracking.tag_stage_run("proxies", {"dvc.stage_hash": "def"})
    assert tracking.PARENT_ENV not in os.environ
    kids = {c["name"]: c for c in tracking.child_runs(parent.run_id)}
    assert set(kids) == {"proxies", "spacespan"}
    assert kids["proxies"]["status"] == "FINISHED" and kids["proxies"]["params"] == {"budget": "700"}
    assert kids["proxies"]["metrics"] == {"acc": 0.7} and kids["proxies"]["run_id"] == tagged
    assert kids["proxies"]["tags"]["dvc.stage_hash"] == "def"
    assert kids["proxies"]["tags"]["git_commit"]
    assert kids["spacespan"]["run_id"] == skipped
    assert kids["spacespan"]["tags"]["proxy3d.skipped"] == "true" and kids["spacespan"]["metrics"] == {"rows": 12.0}
    top = tracking.get_run(parent.run_id)
    assert top["status"] == "FINISHED" and top["tags"]["proxy3d.kind"] == "pipeline"
    assert top["params"]["proxies.budget"] == "700"


def test_failing_stage_fails_child_and_parent(store: Path) -> None:
    with pytest.raises(RuntimeError, match="stage broke"):
        with tracking.pipeline_run("pipeline") as parent:
            with tracking.start_run("proxies"):
                raise RuntimeError("stage broke")
    assert tracking.get_run(parent.run_id)["status"] == "FAILED"
    (kid,) = tracking.child_runs(parent.run_id)
    assert kid["status"] == "FAILED"


def test_orphaned_runs_of_dead_flow_runs_are_closed(store: Path) -> None:
    gen = tracking.pipeline_run("pipeline", tags={"prefect.flow_run_id": "dead-run"})
    parent = gen.__enter__()  # never exited: the process "died"
    os.environ.pop(tracking.PARENT_ENV, None)
    os.environ[tracking.PARENT_ENV] = parent.run_id
    with tracking.start_run("proxies") as stage:
        pass
    os.environ.pop(tracking.PARENT_ENV, None)
    closed = tracking.close_orphaned_runs(lambda fr: fr == "dead-run")
    assert closed == [parent.run_id]  # the finished child is left alone
    assert tracking.get_run(parent.run_id)["status"] == "KILLED"
    assert tracking.get_run(stage.run_id)["status"] == "FINISHED"
    assert tracking.close_orphaned_runs(lambda fr: True) == []


def test_runs_compare_shows_differing_params_and_metrics(store: Path, capsys: pytest.CaptureFixture) -> None:
    for budget in (450, 1000):
        with tracking.pipeline_run("pipeline", {"proxies": {"budget": budget, "method": "semantic"}},
                                   experiment="compare") as parent:
            with tracking.start_run("proxies", {"budget": budget}, experiment="compare") as stage:
                stage.log_metrics({"acc": budget / 1000})
            parent.log_metrics({"proxies/acc": budget / 1000})
    assert runs_cli.main(["--experiment", "compare", "compare"]) == 0
    out = capsys.readouterr().out
    assert "proxies.budget" in out and "450" in out and "1000" in out
    assert "proxies.method" not in out  # equal in both runs
    assert "proxies/acc" in out and "0.45" in out
    assert runs_cli.main(["--experiment", "compare", "list", "--pipelines", "-n", "3"]) == 0
    assert "pipeline" in capsys.readouterr().out


def test_compare_needs_two_runs(store: Path) -> None:
    with tracking.start_run("proxies", experiment="one-run"):
        pass
    with pytest.raises(ValueError, match="need at least 2 runs .* found 1"):
        runs_cli.main(["--experiment", "one-run", "compare"])


def test_runs_of_an_unknown_experiment_list_the_known_ones_and_create_nothing(
        store: Path, capsys: pytest.CaptureFixture) -> None:
    with tracking.start_run("proxies", experiment="known"):
        pass
    for cmd in ("list", "compare"):
        assert cli.main(["runs", "--experiment", "knwon", cmd]) == 1
        err = capsys.readouterr().err
        assert "--experiment 'knwon': no such experiment" in err and "known" in err
        assert len(err.splitlines()) == 1
    assert "knwon" not in tracking.experiment_names()
    assert tracking.recent_runs(5, "knwon") == [] and "knwon" not in tracking.experiment_names()


def test_runs_compare_of_an_unknown_run_id_is_a_one_line_error(
        store: Path, capsys: pytest.CaptureFixture) -> None:
    with tracking.start_run("proxies"):
        pass
    for bad in ("0" * 32, "not-a-run"):
        assert cli.main(["runs", "compare", bad, bad]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"proxy3d runs: error: run '{bad}': ") and len(err.splitlines()) == 1, err


def test_runs_compare_rejects_a_bad_metric_regex_before_reading_the_store(
        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["runs", "compare", "--metric", "("])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --metric: '(' is not a regular expression" in err
    assert "Traceback" not in err


def test_tracking_off_gives_null_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY3D_TRACKING", "0")
    with tracking.pipeline_run("pipeline") as parent:
        assert parent.run_id is None and tracking.PARENT_ENV not in os.environ
    assert tracking.record_skipped("x") is None


def test_temp_experiments_log_to_the_projects_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dvc exp run --temp`` runs in <project>/.dvc/tmp/exps/<copy>, which DVC deletes: its runs went with it."""
    copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    for d in (tmp_path / "proj", copy):
        (d / "params.yaml").write_text("proxies: {budget: 700}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PROXY3D_ROOT", raising=False)
    monkeypatch.chdir(copy)
    assert tracking.repo_root() == copy.resolve()
    assert tracking.tracking_uri() == f"sqlite:///{(tmp_path / 'proj').resolve() / 'mlruns.db'}"
    monkeypatch.chdir(tmp_path / "proj")
    assert tracking.tracking_uri() == f"sqlite:///{(tmp_path / 'proj').resolve() / 'mlruns.db'}"
