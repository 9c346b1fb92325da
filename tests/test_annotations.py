"""Native-format annotation writers: file names, field names, determinism, geometry, and a round trip
through the SpaceSpan Spark readers."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from proxy3d.config import SpaceSpanParams
from proxy3d.scenes.annotations import write_all
from proxy3d.scenes.annotations.layout import layout_scene
from proxy3d.spacespan import assemble, get_spark, resolve_sources
from proxy3d.spacespan.objects import rows_from_synth

SCENES = [layout_scene(f"scene{i:04d}_00", "val" if i % 3 == 0 else "train", 16 + i, seed=3) for i in range(4)]
FIELDS = {
    "scanrefer/ScanRefer_filtered_train.json": {"scene_id", "object_id", "object_name", "ann_id", "description",
                                                "token"},
    "multi3drefer/multi3drefer_train.json": {"scene_id", "object_name", "ann_id", "description", "object_ids",
                                             "eval_type", "spatial", "color", "texture", "shape"},
    "scanqa/ScanQA_v1.0_train.json": {"question_id", "scene_id", "question", "answers", "object_ids", "object_names"},
    "mmscan/MMScan_QA_train.json": {"sub_class", "scan_id", "question", "answers", "object_ids", "object_names",
                                    "input_bboxes_id", "input_bboxes", "output_bboxes_id", "output_bboxes", "ID"},
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ann") / "annotations"
    write_all(SCENES, out, seed=3)
    return out


def _load(path: Path):
    return json.loads(path.read_text())


def test_same_seed_gives_byte_identical_files(written, tmp_path):
    write_all(list(reversed(SCENES)), tmp_path / "again", seed=3)

    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(written) == digest(tmp_path / "again")
    assert len(digest(written)) == 16  # 8 files x {train, val}


def test_public_file_and_field_names(written):
    for rel, fields in FIELDS.items():
        records = _load(written / rel)
        assert records and all(set(r) == fields for r in records), rel
    questions = _load(written / "sqa3d/v1_balanced_questions_val_scannetv2.json")["questions"]
    annotations = _load(written / "sqa3d/v1_balanced_sqa_annotations_val_scannetv2.json")["annotations"]
    assert set(questions[0]) == {"question_id", "scene_id", "situation", "alternative_situation", "question"}
    assert set(annotations[0]) >= {"question_id", "scene_id", "answers", "position", "rotation", "answer_type",
                                   "question_type"}
    assert set(annotations[0]["rotation"]) == {"_w", "_x", "_y", "_z"} and set(annotations[0]["position"]) == set("xyz")
    corpus = _load(written / "scan2cap/scan2cap_train_corpus.json")
    key, captions = next(iter(corpus.items()))
    assert len(key.split("|")) == 3 and captions[0].startswith("sos ") and captions[0].endswith(" eos")
    vsi = pq.read_table(written / "vsibench/test-00000-of-00001.parquet")
    assert vsi.column_names == ["id", "dataset", "scene_name", "question_type", "question", "options", "ground_truth"]
    assert all(isinstance(r["object_id"], str) and isinstance(r["ann_id"], str)
               for r in _load(written / "scanrefer/ScanRefer_filtered_train.json"))  # strings, as in ScanRefer


def test_ids_unique_and_objects_exist(written):
    objects = {s.scene_id: {o.object_id for o in s.objects} for s in SCENES}
    for split in ("train", "val"):
        for rel, key, scene_key, ids_key in (
            (f"scanqa/ScanQA_v1.0_{split}.json", "question_id", "scene_id", "object_ids"),
            (f"multi3drefer/multi3drefer_{split}.json", None, "scene_id", "object_ids"),
            (f"mmscan/MMScan_QA_{split}.json", "ID", "scan_id", "object_ids"),
        ):
            records = _load(written / rel)
            if key:
                assert len({r[key] for r in records}) == len(records), rel
            for r in records:
                assert set(r[ids_key]) <= objects[r[scene_key]], (rel, r)
        for r in _load(written / f"scanrefer/ScanRefer_filtered_{split}.json"):
            assert int(r["object_id"]) in objects[r["scene_id"]]
    vsi = pq.read_table(written / "vsibench/train-00000-of-00001.parquet").to_pylist()
    assert len({r["id"] for r in vsi}) == len(vsi)


def test_answers_follow_the_geometry(written):
    scenes = {s.scene_id: s for s in SCENES}
    for r in pq.read_table(written / "vsibench/train-00000-of-00001.parquet").to_pylist():
        s = scenes[r["scene_name"]]
        if r["question_type"] == "room_size_estimation":
            assert float(r["ground_truth"]) == pytest.approx(s.room_size[0] * s.room_size[1], abs=0.06)
        if r["question_type"] == "object_counting":
            label = r["question"].split("How many ")[1].split("(s)")[0]
            assert int(r["ground_truth"]) == Counter(o.label for o in s.objects)[label]
    for r in _load(written / "scanqa/ScanQA_v1.0_train.json"):
        if r["question"].startswith("What color"):
            obj = next(o for o in scenes[r["scene_id"]].objects if o.object_id == r["object_ids"][0])
            assert r["answers"] == [obj.color]


def test_written_files_pass_the_spacespan_readers_clean(written):
    spark = get_spark("local[2]", "1g", shuffle_partitions=2)
    p = SpaceSpanParams()
    sources = resolve_sources(p, written.parent)
    assert set(sources) == set(p.sources)
    metrics = assemble(spark, p, sources, rows_from_synth(SCENES), written.parent / "spacespan")
    assert metrics["quarantined"] == 0, metrics["quarantine_by_source_reason"]
    assert set(metrics["records_by_source"]) == {*p.sources, "synthetic"}
    assert metrics["split_conflicts"] == 0
    assert metrics["scenes_by_split"] == {"train": 2, "val": 2}


def test_curriculum_spatial_questions_are_the_vsibench_ones(written):
    """The curriculum's templated questions (train.data.spatial_turns) ask VSI-Bench's questions and, from the object
    table alone, give the answers (and multiple-choice options) the benchmark's annotations give."""
    import numpy as np

    from proxy3d.model.inputs import prompt_text
    from proxy3d.train.data import SceneObjects, rel_direction_item, rel_distance_item, spatial_turns

    numeric = {"object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation"}
    rows = [r for split in ("train", "test") for r in
            pq.read_table(written / f"vsibench/{split}-00000-of-00001.parquet").to_pylist() if r["question_type"] in numeric]
    mc = [r for split in ("train", "test") for r in pq.read_table(written / f"vsibench/{split}-00000-of-00001.parquet")
          .to_pylist() if r["question_type"] in ("object_rel_distance", "object_rel_direction_easy")]
    checked = Counter()
    for s in SCENES:
        objs = sorted(s.objects, key=lambda o: o.object_id)
        table = SceneObjects(s.scene_id, np.array([o.object_id for o in objs]), [o.label for o in objs],
                             np.array([o.category for o in objs]), np.array([o.aabb[:3] for o in objs]),
                             np.array([o.aabb[3:] for o in objs]))
        asked = dict(spatial_turns(table, 10_000, np.random.default_rng(0)))
        for r in (r for r in rows if r["scene_name"] == s.scene_id):
            assert asked.get(prompt_text(r["question"])) == r["ground_truth"], r
            checked[r["question_type"]] += 1
        # multiple choice: the annotation's objects (unique labels) put through the curriculum's item builders
        index = {lab: k for k, lab in enumerate(table.labels) if table.labels.count(lab) == 1}
        for r in (r for r in mc if r["scene_name"] == s.scene_id):
            q = r["question"]
            if r["question_type"] == "object_rel_distance":
                target = q.rsplit("closest to the ", 1)[1].rstrip("?")
                cands = [o.split(". ", 1)[1] for o in r["options"]]
                item = rel_distance_item(table, index[target], [index[c] for c in cands])
            else:
                standing, rest = q.split("standing by the ", 1)[1].split(" and facing the ", 1)
                facing, target = rest.split(", is the ", 1)
                item = rel_direction_item(table, index[standing], index[facing], index[target.split(" to my ")[0]])
            assert item == (q, list(r["options"]), r["ground_truth"]), r
            checked[r["question_type"]] += 1
    assert set(checked) == numeric | {"object_rel_distance", "object_rel_direction_easy"}, checked
