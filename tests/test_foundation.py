"""Shared contracts: safe paths, atomic writes, container round trips, CLI, tracking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from proxy3d import io
from proxy3d.types import Proxies, Triplets, load_proxies, load_triplets, save_proxies, save_triplets
from proxy3d.vocab import categories, category_id, identifier_token


@pytest.mark.parametrize("bad", ["../etc", "a/b", "scene..00", "", "/abs", "a\\b", "x" * 200, ".hidden"])
def test_unsafe_scene_ids_are_refused_with_the_fix(bad: str) -> None:
    with pytest.raises(ValueError, match="not a safe name"):
        io.validate_scene_id(bad, source="test.json")


def test_safe_join_refuses_escape(tmp_path: Path) -> None:
    assert io.safe_join(tmp_path, "scenes", "scene0000_00") == (tmp_path / "scenes" / "scene0000_00").resolve()
    with pytest.raises(ValueError, match="escapes"):
        io.safe_join(tmp_path, "..", "x")


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path: Path) -> None:
    f = tmp_path / "out.txt"
    io.atomic_write_text(f, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(f) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_files_get_the_usual_mode_whatever_the_writer_does(tmp_path: Path) -> None:
    """safetensors' save_file recreates its target 0600: proxies and triplets were unreadable to other users of a
    shared DVC cache."""
    import stat

    old = os.umask(0o022)
    try:
        save_proxies(Proxies("scene0001_00", np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32),
                             np.zeros(2, np.int32), np.zeros(2, np.int32), np.ones(2, np.int32)), tmp_path / "p.safetensors")
        with io.atomic_path(tmp_path / "x.bin") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    for name in ("p.safetensors", "x.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_triplets_and_proxies_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = Triplets("scene0001_00", rng.random((10, 4), dtype=np.float32), rng.random((10, 3), dtype=np.float32),
                 np.arange(10, dtype=np.int32) - 1, np.ones(10, bool), np.zeros(10, np.int16), {0: 5, 1: 7},
                 {"encoder": "x", "objects": [{"object_id": 0, "aabb": [0, 0, 0, 1, 1, 1]}]})
    save_triplets(t, tmp_path / "t.safetensors")
    t2 = load_triplets(tmp_path / "t.safetensors")
    assert t2.scene_id == t.scene_id and t2.instance_category == t.instance_category and t2.meta == t.meta
    for k in ("features", "points", "labels", "valid", "frame"):
        np.testing.assert_array_equal(getattr(t2, k), getattr(t, k))
    p = Proxies("scene0001_00", t.features[:3], t.points[:3], np.array([0, 1, -1], np.int32),
                np.array([5, 7, -1], np.int32), np.array([4, 4, 2], np.int32), np.zeros(10, np.int32), {"budget": 3})
    save_proxies(p, tmp_path / "p.safetensors")
    p2 = load_proxies(tmp_path / "p.safetensors")
    np.testing.assert_array_equal(p2.members, p.members)
    assert p2.meta == {"budget": 3} and len(p2) == 3


def test_vocabulary_has_213_unique_categories() -> None:
    cats = categories()
    assert len(cats) == 213 == len(set(cats))
    assert category_id("Office_Chair") == cats.index("office chair")
    assert category_id("spaceship") == -1
    assert identifier_token(7) == "<OBJ007>"
    with pytest.raises(ValueError):
        identifier_token(100)


def test_cli_help_lists_every_command(repo_root: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "proxy3d.cli", "--help"], capture_output=True, text=True, check=True)
    for name in ("synth", "spacespan", "triplets", "proxies", "train", "evaluate", "score"):
        assert name in out.stdout
    bad = subprocess.run([sys.executable, "-m", "proxy3d.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_tracking_nests_child_under_parent_in_real_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from proxy3d import tracking

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PROXY3D_ROOT", str(tmp_path))
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    with tracking.start_run("pipeline", {"a": 1}, enabled_=True) as parent:
        monkeypatch.setenv(tracking.PARENT_ENV, parent.run_id)
        with tracking.start_run("proxies", {"proxies": {"budget": 700}}, enabled_=True) as child:
            child.log_metrics({"tokens_per_scene": 699.0})
    with pytest.raises(RuntimeError):
        with tracking.start_run("symbols", {}, enabled_=True):
            raise RuntimeError("stage failed")
    c = MlflowClient(uri)
    run = c.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params["proxies.budget"] == "700"
    assert run.data.metrics["tokens_per_scene"] == 699.0
    assert run.info.status == "FINISHED"
    exp = c.get_experiment_by_name("proxy3d")
    failed = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.runName") == "symbols"]
    assert failed and failed[0].info.status == "FAILED"
    assert os.environ.get(tracking.PARENT_ENV) == parent.run_id


def test_metric_names_mlflow_rejects_are_made_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluate logs variant names like 'semantic@700'; MLflow refuses '@' in metric names."""
    from mlflow.tracking import MlflowClient

    from proxy3d import tracking

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PROXY3D_ROOT", str(tmp_path))
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    with tracking.start_run("evaluate", {"variant@700": "x"}, enabled_=True) as run:
        run.log_metrics({"global_kmeans@700": {"tokens": 700.0}})
    got = MlflowClient(uri).get_run(run.run_id).data
    assert got.metrics == {"global_kmeans_at_700.tokens": 700.0}
    assert got.params == {"variant_at_700": "x"}
