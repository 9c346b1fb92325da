"""`proxy3d score` reads the synthetic world's native annotation files: a perfect submission scores 1."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from proxy3d.eval.metrics import get_3d_box
from proxy3d.eval.score import score_file


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from proxy3d.scenes.annotations import write_all
    from proxy3d.scenes.synth.world import build_world
    from proxy3d.spacespan.objects import rows_from_synth

    out = tmp_path_factory.mktemp("synth")
    scenes = [build_world(f"scene{i:04d}_00", "val", i, 4, 6, 8).scene for i in range(2)]
    write_all(scenes, out / "annotations", 0)
    objects = pd.DataFrame(rows_from_synth(scenes))
    objects.to_csv(out / "objects.csv", index=False)
    boxes = {(r.scene_id, int(r.object_id)): get_3d_box([r.center_x, r.center_y, r.center_z],
                                                        [r.size_x, r.size_y, r.size_z]).tolist()
             for r in objects.itertuples()}
    return out, boxes


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_perfect_submissions_score_one(synth, tmp_path):
    out, boxes = synth
    ann = out / "annotations"
    bx = out / "objects.csv"
    refer = json.loads((ann / "scanrefer/ScanRefer_filtered_val.json").read_text())
    pred = _write(tmp_path / "sr.json", [{"scene_id": r["scene_id"], "object_id": r["object_id"], "ann_id": r["ann_id"],
                                          "bbox": boxes[(r["scene_id"], int(r["object_id"]))]} for r in refer])
    r = score_file("scanrefer", pred, [ann / "scanrefer/ScanRefer_filtered_val.json"], bx)
    assert r["acc@0.5"] == 1.0 and r["n_items"] == len(refer) > 0

    m3d = json.loads((ann / "multi3drefer/multi3drefer_val.json").read_text())
    pred = _write(tmp_path / "m3d.json", [{"scene_id": r["scene_id"], "ann_id": r["ann_id"],
                                           "aabb": [boxes[(r["scene_id"], i)] for i in r["object_ids"]]} for r in m3d])
    r = score_file("multi3drefer", pred, [ann / "multi3drefer/multi3drefer_val.json"], bx)
    assert r["f1@0.5"] == 1.0

    qa = json.loads((ann / "scanqa/ScanQA_v1.0_val.json").read_text())
    pred = _write(tmp_path / "qa.json", [{"scene_id": q["scene_id"], "question_id": q["question_id"],
                                          "answer_top10": q["answers"][:1], "bbox": []} for q in qa])
    r = score_file("scanqa", pred, [ann / "scanqa/ScanQA_v1.0_val.json"], bx, meteor=False)
    assert r["em"] == 1.0

    sqa = json.loads((ann / "sqa3d/v1_balanced_sqa_annotations_val_scannetv2.json").read_text())["annotations"]
    pred = _write(tmp_path / "sqa.json", [{"question_id": a["question_id"], "answer": a["answers"][0]["answer"]}
                                          for a in sqa])
    r = score_file("sqa3d", pred, [ann / "sqa3d/v1_balanced_questions_val_scannetv2.json",
                                   ann / "sqa3d/v1_balanced_sqa_annotations_val_scannetv2.json"], bx)
    assert r["em"] == 1.0

    corpus = json.loads((ann / "scan2cap/scan2cap_val_corpus.json").read_text())
    sub: dict[str, list] = {}
    for key, caps in corpus.items():
        scene, obj = key.split("|")[:2]
        sub.setdefault(scene, []).append({"caption": " ".join(caps[0].split()[1:-1]), "box": boxes[(scene, int(obj))]})
    r = score_file("scan2cap", _write(tmp_path / "cap.json", sub), [ann / "scan2cap/scan2cap_val_corpus.json"], bx,
                   meteor=False)
    assert r["recall@0.5"] == 1.0 and r["bleu4@0.5"] == pytest.approx(1.0)

    vsi = pd.read_parquet(ann / "vsibench/test-00000-of-00001.parquet")
    pred = tmp_path / "vsi.jsonl"
    pred.write_text("".join(json.dumps({"id": int(i), "prediction": g}) + "\n" for i, g in zip(vsi.id, vsi.ground_truth, strict=True)))
    r = score_file("vsibench", pred, [ann / "vsibench/test-00000-of-00001.parquet"], bx)
    assert r["overall"] == 1.0 and r["n_items"] == len(vsi) > 0
