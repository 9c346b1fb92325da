"""SpaceSpan assembly on hand-written fixtures in the public formats, with a real local Spark session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from proxy3d.config import SpaceSpanParams
from proxy3d.eval.metrics import sqa3d_question_type
from proxy3d.spacespan import assemble, get_spark, readers, resolve_sources
from proxy3d.spacespan.schema import OBJECTS, REASONS, SOURCES, TASKS
from proxy3d.spacespan.session import check_java
from proxy3d.spacespan.validate import check

FIXTURES = Path(__file__).parent / "fixtures" / "annotations"
LABELS = {"scene0000_00": ["floor", "chair", "table", "lamp", "book", "chair"],
          "scene0001_00": ["floor", "bed", "pillow", "pillow"],
          "scene0002_00": ["floor", "desk"]}


def _objects() -> list[dict]:
    rows = []
    for sid, labels in LABELS.items():
        for i, label in enumerate(labels):
            rows.append({"scene_id": sid, "object_id": i, "label": label, "category": 0, "center_x": 1.0 + i,
                         "center_y": 0.5 * i, "center_z": 0.25, "size_x": 0.5, "size_y": 0.4, "size_z": 0.9})
    return rows


def _run(spark, tmp: Path, name: str) -> tuple[dict, Path]:
    data = tmp / "data"
    if not data.exists():
        shutil.copytree(FIXTURES, data / "annotations")
    p = SpaceSpanParams()
    out = tmp / name
    return assemble(spark, p, resolve_sources(p, data), _objects(), out), out


@pytest.fixture(scope="module")
def spark():
    return get_spark("local[2]", "1g", shuffle_partitions=2)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spacespan")
    metrics, out = _run(spark, tmp, "out")
    records = pd.read_parquet(out / "records")
    records["curriculum_stage"] = records["curriculum_stage"].astype(int)
    records["split"] = records["split"].astype(str)
    quarantine = pd.read_parquet(out / "quarantine")
    return {"tmp": tmp, "metrics": metrics, "out": out, "records": records, "quarantine": quarantine}


def _row(records: pd.DataFrame, rid: str) -> pd.Series:
    hit = records[records["id"] == rid]
    assert len(hit) == 1, f"{rid}: {len(hit)} rows"
    return hit.iloc[0]


def test_every_reader_maps_the_public_field_names(built):
    r = built["records"]
    by_source = r[r["curriculum_stage"] >= 3].groupby("source").size().to_dict()
    assert by_source == {"scanrefer": 3, "multi3drefer": 3, "scanqa": 2, "sqa3d": 2, "scan2cap": 2, "mmscan": 3,
                         "vsibench": 2, "synthetic": 12}
    ref = _row(r, "scanrefer:scene0000_00:1:0")
    assert ref["task"] == "grounding" and list(ref["answers"]) == ["<OBJ001>"] and list(ref["target_object_ids"]) == [1]
    zt = _row(r, "multi3drefer:scene0000_00:1")
    assert list(zt["answers"]) == ["none"] and zt["question_type"] == "zt_wo_d" and len(zt["target_object_ids"]) == 0
    mt = _row(r, "multi3drefer:scene0000_00:0")
    assert list(mt["answers"]) == ["<OBJ001> <OBJ005>"] and mt["task"] == "multi_grounding"
    qa = _row(r, "scanqa:train-scene0000-0")
    assert list(qa["answers"]) == ["brown"] and list(qa["target_object_ids"]) == [1]
    sqa = _row(r, "sqa3d:220602000001")
    assert sqa["situation"].startswith("I am sitting") and list(sqa["answers"]) == ["table"]
    assert list(sqa["position"]) == pytest.approx([0.7110268899979686, -0.03219739162793617, 0.0])
    assert list(sqa["rotation"]) == pytest.approx([0.0, 0.0, -0.9995736030415032, -0.02919952230128897])  # x y z w
    assert sqa["question_type"] == "what"
    cap = _row(r, "scan2cap:scene0000_00|2|table")
    assert cap["question"] == "Describe the object <OBJ002>." and list(cap["answers"])[0] == (
        "a wooden table in the middle of the room .")
    mm = _row(r, "mmscan:QA_Single_EQ__scene0000_00__1")
    assert mm["curriculum_stage"] == 3 and mm["task"] == "attribute" and mm["question_type"] == "QA_Single_EQ"
    vsi = _row(r, "vsibench:2")
    assert vsi["task"] == "spatial_mc" and list(vsi["options"]) == ["A. left", "B. right"] and list(vsi["answers"]) == ["A"]
    assert _row(r, "vsibench:1")["task"] == "spatial_num"


def test_each_quarantine_reason_is_recorded(built):
    q = built["quarantine"]
    got = sorted(zip(q["source"], q["reason"], strict=True))
    assert got == sorted([
        ("scanrefer", "missing_field"), ("scanrefer", "wrong_type"), ("scanrefer", "unknown_object"),
        ("scanrefer", "unknown_scene"), ("scanrefer", "empty_question"), ("scanrefer", "duplicate_id"),
        ("scanrefer", "object_id_out_of_range"),
        ("multi3drefer", "wrong_type"), ("scanqa", "empty_answer"), ("scanqa", "malformed_json"),
        ("sqa3d", "wrong_type"), ("sqa3d", "missing_field"), ("scan2cap", "wrong_type"),
        ("vsibench", "missing_field"), ("vsibench", "malformed_json"),
    ])
    assert set(q.loc[q["reason"] == "missing_field", "detail"]) == {"description", "answers", "ground_truth"}
    assert q.loc[q["reason"] == "unknown_object", "detail"].tolist() == ["7"]
    assert q.loc[q["reason"] == "object_id_out_of_range", "detail"].tolist() == ["120"]
    assert built["metrics"]["quarantine_by_source_reason"]["scanrefer"]["duplicate_id"] == 1
    assert built["metrics"]["quarantine_by_source_reason"]["scanrefer"]["object_id_out_of_range"] == 1
    assert built["metrics"]["quarantined"] == len(q) == 15
    assert set(q["reason"]) == set(REASONS)  # every documented reason is exercised


def test_exact_duplicate_across_sources_is_removed_and_counted(built):
    r = built["records"]
    assert "scanqa:train-scene0000-2" not in set(r["id"])  # same content as the MMScan record, which is kept
    assert "mmscan:QA_Single_Attribute__scene0000_00__0" in set(r["id"])
    assert built["metrics"]["duplicates_removed"] == 1
    assert built["metrics"]["duplicates_removed_cross_source"] == 1


def test_splits_are_by_scene_and_respect_source_val_files(built):
    r = built["records"]
    per_scene = r.groupby("scene_id")["split"].agg(set).to_dict()
    assert all(len(s) == 1 for s in per_scene.values())
    assert per_scene["scene0000_00"] == {"train"} and per_scene["scene0001_00"] == {"val"}
    objects = pd.read_parquet(built["out"] / "objects.parquet")
    assert objects.groupby("scene_id")["split"].first().to_dict() == {k: next(iter(v)) for k, v in per_scene.items()}


def test_curriculum_stage_counts(built):
    m = built["metrics"]
    n_obj = sum(len(v) for v in LABELS.values())
    n_groups = sum(len(set(v)) for v in LABELS.values())
    assert m["records_by_stage"] == {"1": n_obj + n_groups, "2": 2 * n_obj, "3": n_obj + 3, "4": 14}
    r = built["records"]
    where = _row(r, "synthetic:s2:where:scene0000_00:2")
    assert where["question"] == "Where is <OBJ002>?" and list(where["answers"]) == ["<OBJ002> (3.00, 1.00, 0.25)"]
    marker = _row(r, "synthetic:s1:marker:scene0000_00:chair")
    assert list(marker["answers"]) == ["chair <OBJ001> <OBJ005>"]
    assert list(_row(r, "synthetic:s1:what:scene0001_00:1")["answers"]) == ["<OBJ001> bed"]


def test_parquet_layout_and_schema(built):
    out = built["out"]
    parts = sorted(p.relative_to(out / "records").parts[:2] for p in (out / "records").rglob("*.parquet"))
    assert {p[0] for p in parts} == {f"curriculum_stage={i}" for i in (1, 2, 3, 4)}
    assert {p[1] for p in parts} == {"split=train", "split=val"}
    assert set(built["records"]["task"]) == set(TASKS)
    assert set(built["records"]["source"]) == set(SOURCES)
    schema = pq.read_schema(next((out / "records").rglob("*.parquet")))
    assert {n: str(schema.field(n).type) for n in schema.names} == {
        "id": "string", "source": "string", "task": "string", "scene_id": "string", "question": "string",
        "answers": "list<element: string>", "target_object_ids": "list<element: int32>", "situation": "string",
        "position": "list<element: double>", "rotation": "list<element: double>", "options": "list<element: string>",
        "question_type": "string"}
    objects = pq.read_schema(out / "objects.parquet")
    assert objects.names == ["scene_id", "object_id", "label", "category", "center_x", "center_y", "center_z",
                             "size_x", "size_y", "size_z", "split"]


def test_two_runs_give_identical_row_sets(spark, built):
    _, out2 = _run(spark, built["tmp"], "out_again")

    def rows(path: Path) -> list[str]:
        df = pd.read_parquet(path)
        return sorted(repr(tuple(str(v) for v in row)) for row in df.itertuples(index=False))

    assert rows(out2 / "records") == rows(built["out"] / "records")
    assert rows(out2 / "quarantine") == rows(built["out"] / "quarantine")

    def files(root: Path) -> dict[str, bytes]:
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}

    # same names and bytes (DVC hashes the folder): Spark's random part-file names had made every rerun a change
    assert files(out2) == files(built["out"])
    assert all(f.name.startswith("part-") and f.name.count("-") == 1 for f in (out2 / "records").rglob("*.parquet"))


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _collect(df, *cols: str) -> list[dict]:
    return [r.asDict() for r in df.select(*cols).orderBy(*cols).collect()]


def _checked(spark, records, extra_objects: list[dict] = ()):
    rows = _objects() + list(extra_objects)
    objects = spark.createDataFrame(pd.DataFrame(rows, columns=OBJECTS.fieldNames()), schema=OBJECTS)
    return check(records, objects)


def test_file_split_is_read_from_the_file_name_not_its_folders(spark, tmp_path):
    rec = [{"scene_id": "scene0000_00", "object_id": "1", "object_name": "chair", "ann_id": "0",
            "description": "the chair"}]
    for parent in ("my_val_runs", "exp-test-1", "train_runs"):
        _write(tmp_path / parent / "scanrefer" / "ScanRefer_filtered_train.json", rec)
        _write(tmp_path / parent / "scanrefer" / "ScanRefer_filtered_val.json", rec)
        got = _collect(readers.read_scanrefer(spark, tmp_path / parent / "scanrefer"), "file", "file_split")
        assert [(Path(r["file"]).name, r["file_split"]) for r in got] == [
            ("ScanRefer_filtered_train.json", "train"), ("ScanRefer_filtered_val.json", "val")], parent


def test_mmscan_release_file_is_split_by_its_keys(spark, tmp_path):
    def rec(i: int, scene: str) -> dict:
        return {"sub_class": "QA_Single_EQ", "scan_id": scene, "question": f"Is there a lamp {i}?",
                "answers": ["Yes."], "object_ids": [3], "object_names": ["lamp"], "input_bboxes_id": None,
                "input_bboxes": None, "output_bboxes_id": None, "output_bboxes": None,
                "ID": f"QA_Single_EQ__{scene}__{i}"}

    release = tmp_path / "MMScan-beta-release"
    _write(release / "MMScan_samples" / "MMScan_QA.json", {
        "train": [rec(0, "scene0000_00"), rec(1, "scene0000_00")], "val": [rec(2, "scene0001_00")],
        "test": [rec(3, "scene0002_00")], "notes": "not a list of records"})
    assert [f.name for f in readers.find_files(release, "mmscan")] == ["MMScan_QA.json"]
    got = _collect(readers.read_mmscan(spark, release), "id", "file_split", "reason")
    assert got == [
        {"id": None, "file_split": None, "reason": "malformed_json"},
        {"id": "mmscan:QA_Single_EQ__scene0000_00__0", "file_split": "train", "reason": None},
        {"id": "mmscan:QA_Single_EQ__scene0000_00__1", "file_split": "train", "reason": None},
        {"id": "mmscan:QA_Single_EQ__scene0001_00__2", "file_split": "val", "reason": None},
        {"id": "mmscan:QA_Single_EQ__scene0002_00__3", "file_split": "val", "reason": None},
    ]


def test_target_ids_past_the_identifier_tokens_are_quarantined(spark, tmp_path):
    _write(tmp_path / "ScanRefer_filtered_train.json", [
        {"scene_id": "scene0000_00", "object_id": oid, "object_name": "chair", "ann_id": "0",
         "description": "a chair"} for oid in ("1", "99", "120")])
    extra = [{**_objects()[1], "object_id": i} for i in (99, 120)]  # more objects than identifier tokens
    got = _collect(_checked(spark, readers.read_scanrefer(spark, tmp_path), extra), "id", "reason", "detail")
    assert got == [
        {"id": "scanrefer:scene0000_00:120:0", "reason": "object_id_out_of_range", "detail": "120"},
        {"id": "scanrefer:scene0000_00:1:0", "reason": None, "detail": None},
        {"id": "scanrefer:scene0000_00:99:0", "reason": None, "detail": None},
    ]


def test_one_bad_scan2cap_entry_is_quarantined_alone(spark, tmp_path):
    _write(tmp_path / "scan2cap_val_corpus.json", {
        "scene0001_00|1|bed": ["sos the bed against the wall . eos"],
        "scene0001_00|2|pillow": "sos a pillow eos",
        "scene0001_00|3|pillow": None,
        "scene0001_00|0|floor": ["sos the floor eos", "sos a wooden floor eos"]})
    got = _collect(readers.read_scan2cap(spark, tmp_path), "id", "answers", "reason", "detail")
    assert got == [
        {"id": "scan2cap:scene0001_00|0|floor", "answers": ["the floor", "a wooden floor"], "reason": None,
         "detail": None},
        {"id": "scan2cap:scene0001_00|1|bed", "answers": ["the bed against the wall ."], "reason": None,
         "detail": None},
        {"id": "scan2cap:scene0001_00|2|pillow", "answers": None, "reason": "wrong_type", "detail": None},
        {"id": "scan2cap:scene0001_00|3|pillow", "answers": None, "reason": "missing_field",
         "detail": "captions"},
    ]


def test_sqa3d_question_type_is_the_eval_classifier(spark, tmp_path):
    questions = ["Isn't the door open?", "Cannot I sit on it?", "However many chairs?", "Whatever is left?",
                 "  what's that?", "\u3000Which way is the door?", "\tHOW far is the bed?",
                 "Where is the lamp?", "Do I face the bed?", "is it red?"]
    answer = [{"answer": "x", "answer_confidence": "yes", "answer_id": 1}]
    _write(tmp_path / "v1_balanced_questions_val_scannetv2.json", {"questions": [
        {"scene_id": "scene0001_00", "situation": "I stand.", "alternative_situation": [], "question": q,
         "question_id": i} for i, q in enumerate(questions)]})
    _write(tmp_path / "v1_balanced_sqa_annotations_val_scannetv2.json", {"annotations": [
        {"scene_id": "scene0001_00", "question_id": i, "answers": answer,
         "position": {"x": 0, "y": 0, "z": 0}, "rotation": {"_x": 0, "_y": 0, "_z": 0, "_w": 1}}
        for i in range(len(questions))]})
    rows = _collect(readers.read_sqa3d(spark, tmp_path), "question", "question_type")
    got = {r["question"]: r["question_type"] for r in rows}
    assert got == {q: sqa3d_question_type(q) for q in questions}
    assert set(got.values()) == {"what", "is", "how", "can", "which", "others"}


def test_multi3drefer_id_is_scene_object_and_annotation(spark, tmp_path):
    def rec(ann_id: int, oid: int | None, ids: list[int]) -> dict:
        r = {"scene_id": "scene0000_00", "object_name": "chair", "ann_id": ann_id,
             "description": f"the chair {oid}", "object_ids": ids, "eval_type": "st_w_d", "spatial": False,
             "color": True, "texture": False, "shape": False}
        return r if oid is None else {**r, "object_id": oid}

    _write(tmp_path / "multi3drefer_val.json", [rec(0, 1, [1]), rec(0, 5, [5]), rec(1, None, [1, 5])])
    got = _collect(_checked(spark, readers.read_multi3drefer(spark, tmp_path)), "id", "reason")
    assert got == [{"id": "multi3drefer:scene0000_00:1", "reason": None},
                   {"id": "multi3drefer:scene0000_00:1:0", "reason": None},
                   {"id": "multi3drefer:scene0000_00:5:0", "reason": None}]


def test_missing_required_source_names_it(tmp_path):
    p = SpaceSpanParams(required_sources=["scanrefer"])
    with pytest.raises(FileNotFoundError, match="required SpaceSpan source 'scanrefer'"):
        resolve_sources(p, tmp_path)


def test_missing_java_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojava"))
    with pytest.raises(RuntimeError, match="openjdk-17"):
        check_java()


def test_cli_help_exits_cleanly(capsys):
    from proxy3d.stages.spacespan import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--master" in capsys.readouterr().out


def test_templated_items_skip_objects_without_an_identifier_token(spark):
    """No "What is the object <OBJ120>?" (there is no such token); <OBJ099> is the last one asked about."""
    from proxy3d.config import SpaceSpanParams
    from proxy3d.spacespan.curriculum import generate

    rows = [("scene0000_00", i, "chair", 2, float(i), 1.0, 0.4, 0.5, 0.5, 0.9) for i in (3, 99, 120)]
    objects = spark.createDataFrame(rows, "scene_id string, object_id int, label string, category int, center_x double, "
                                          "center_y double, center_z double, size_x double, size_y double, size_z double")
    items = generate(objects, SpaceSpanParams()).toPandas()
    named = {int(i) for ids in items["target_object_ids"] for i in ids}
    assert named == {3, 99} and not items["question"].str.contains("OBJ120").any()
