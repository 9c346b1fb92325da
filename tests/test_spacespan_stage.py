"""The ``spacespan`` stage end to end (``proxy3d spacespan``: params, the scenes' object tables read from the
ScanNet-layout export, a real local Spark session, metrics JSON, MLflow run with the quarantine), on a tiny
generated dataset; and the README's promise that the Spark job has no Python UDFs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
import pytest

from proxy3d import tracking
from proxy3d.scenes.synth import SynthConfig, generate_dataset
from proxy3d.stages.spacespan import main
from proxy3d.train.data import load_objects

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, mlflow_store: Path) -> dict:
    """Two generated scenes (one val), one ScanRefer record about an object scene0000_00 does not have, and the
    stage run through its CLI entry point into a fresh MLflow store."""
    tmp = tmp_path_factory.mktemp("spacespan_stage")
    scenes = generate_dataset(tmp / "data", SynthConfig(scenes=2, seed=3, frames=6, width=160, height=120),
                              progress=False)
    ref = tmp / "data" / "annotations" / "scanrefer" / "ScanRefer_filtered_train.json"
    rows = json.loads(ref.read_text())
    missing = 1 + max(o.object_id for s in scenes if s.scene_id == "scene0000_00" for o in s.objects)
    bad = {**rows[0], "scene_id": "scene0000_00", "object_id": str(missing), "ann_id": "77"}
    ref.write_text(json.dumps([*rows, bad]))
    (tmp / "params.yaml").write_text("spacespan: {shuffle_partitions: 2, driver_memory: 1g}\n")
    out, metrics = tmp / "spacespan", tmp / "metrics" / "spacespan.json"
    rc = main(["--params", str(tmp / "params.yaml"), "--data", str(tmp / "data"), "--out", str(out),
               "--metrics", str(metrics)])
    return {"rc": rc, "tmp": tmp, "out": out, "metrics": json.loads(metrics.read_text()), "scenes": scenes,
            "missing": missing}


def test_stage_writes_its_metrics_json(stage) -> None:
    m = stage["metrics"]
    assert stage["rc"] == 0
    records = pd.read_parquet(stage["out"] / "records")
    assert m["records"] == len(records) > 0
    assert m["records_by_split"] == {k: int(v) for k, v in records["split"].astype(str).value_counts().items()}
    assert set(m["records_by_stage"]) == {"1", "2", "3", "4"}
    assert sum(m["records_by_stage"].values()) == m["records"]
    assert m["scenes_by_split"] == {"train": 1, "val": 1}
    assert m["quarantined"] == 1 and m["quarantine_by_source_reason"] == {"scanrefer": {"unknown_object": 1}}


def test_objects_table_is_every_generated_object_with_its_scenes_split(stage) -> None:
    """objects.parquet holds the generator's objects (ids, labels, categories, boxes read back from the mesh
    export) with the scene's split, and the training loader reads it back per split and scene."""
    table = pd.read_parquet(stage["out"] / "objects.parquet").sort_values(["scene_id", "object_id"])
    truth = pd.DataFrame([{"scene_id": s.scene_id, "object_id": o.object_id, "label": o.label, "category": o.category,
                           "split": s.split, **dict(zip(["center_x", "center_y", "center_z", "size_x", "size_y",
                                                         "size_z"], map(float, o.aabb), strict=True))}
                          for s in stage["scenes"] for o in s.objects]).sort_values(["scene_id", "object_id"])
    assert table[["scene_id", "object_id", "label", "category", "split"]].astype(str).values.tolist() == \
        truth[["scene_id", "object_id", "label", "category", "split"]].astype(str).values.tolist()
    boxes = ["center_x", "center_y", "center_z", "size_x", "size_y", "size_z"]
    assert table[boxes].to_numpy() == pytest.approx(truth[boxes].to_numpy(), abs=1e-4)
    loaded = load_objects(stage["out"] / "objects.parquet")
    assert {split: sorted(by_scene) for split, by_scene in loaded.items()} == {
        s.split: [s.scene_id] for s in stage["scenes"]}
    for s in stage["scenes"]:
        o = loaded[s.split][s.scene_id]
        assert o.ids.tolist() == sorted(x.object_id for x in s.objects if x.object_id < 100)
        assert o.labels == [x.label for x in sorted(s.objects, key=lambda x: x.object_id)]


def test_stage_run_logs_counts_and_the_quarantine_to_mlflow(stage) -> None:
    (run,) = tracking.recent_runs(5)
    assert run["name"] == "spacespan" and run["status"] == "FINISHED"
    assert run["metrics"]["records"] == stage["metrics"]["records"] and run["metrics"]["quarantined"] == 1
    assert run["params"]["spacespan.shuffle_partitions"] == "2"
    from mlflow.artifacts import download_artifacts

    got = Path(download_artifacts(run_id=run["run_id"], artifact_path="quarantine",
                                  dst_path=str(stage["tmp"] / "downloaded")))
    q = pd.read_parquet(got)
    assert q["reason"].tolist() == ["unknown_object"] and q["detail"].tolist() == [str(stage["missing"])]
    pd.testing.assert_frame_equal(q, pd.read_parquet(stage["out"] / "quarantine"))


def test_spacespan_job_has_no_python_udfs() -> None:
    """README: the job uses no Python UDFs, so executors run no Python: no udf/pandas_udf, no mapInPandas and
    relatives, no RDD code anywhere in proxy3d/spacespan (names, attributes and imports)."""
    banned = {"udf", "pandas_udf", "UserDefinedFunction", "mapInPandas", "mapInArrow", "applyInPandas",
              "applyInArrow", "rdd"}
    files = sorted((ROOT / "proxy3d" / "spacespan").glob("*.py"))
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.alias):
                name = node.name.rsplit(".", 1)[-1]
            else:
                continue
            if name in banned:
                found.append(f"{path.name}:{node.lineno}: {name}")
    assert len(files) >= 5 and not found, found
