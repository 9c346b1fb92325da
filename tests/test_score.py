"""`proxy3d score` on fixture files in each benchmark's submission format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from proxy3d.eval.records import PredictionFormatError
from proxy3d.eval.score import score_file

FIX = Path(__file__).parent / "fixtures" / "predictions"
BOXES = FIX / "objects.csv"


def _score(bench: str, pred: str, *anns: str, **kw):
    return score_file(bench, FIX / pred, [FIX / a for a in anns], BOXES, **kw)


def test_scanrefer_scores_missing_and_unknown_ids_as_wrong():
    r = _score("scanrefer", "scanrefer_pred.json", "scanrefer_gt.json")
    # ious: exact corners 1.0, shifted table 0.6, small box in bed 0.25, missing 0, unknown 0; the small box's
    # IoU of exactly 0.25 misses Acc@0.25, as ScanRefer's box3d_iou (union + 1e-8) makes it 0.2499999...
    assert r["acc@0.25"] == pytest.approx(2 / 5) and r["acc@0.5"] == pytest.approx(2 / 5)
    assert r["unique_acc@0.25"] == 0.5 and r["unique_acc@0.5"] == 0.5
    assert r["multiple_acc@0.25"] == 0.5
    assert (r["n_items"], r["n_unknown"], r["n_missing"]) == (4, 1, 1)


def test_malformed_prediction_names_file_and_line():
    with pytest.raises(PredictionFormatError, match=r"scanrefer_malformed\.json:3: missing field 'bbox'"):
        _score("scanrefer", "scanrefer_malformed.json", "scanrefer_gt.json")
    with pytest.raises(PredictionFormatError, match=r"vsibench_malformed\.jsonl:2: not valid JSON"):
        _score("vsibench", "vsibench_malformed.jsonl", "vsibench_gt.jsonl")


def test_multi3drefer_per_eval_type():
    r = _score("multi3drefer", "multi3drefer_pred.json", "multi3drefer_gt.json")
    assert r["mt_f1@0.5"] == pytest.approx(0.8)
    assert r["zt_w_d_f1@0.5"] == 1.0 and r["zt_wo_d_f1@0.5"] == 0.0 and r["st_w_d_f1@0.5"] == 0.0
    assert math.isnan(r["st_wo_d_f1@0.25"])
    assert r["f1@0.25"] == pytest.approx(0.45)


def test_sqa3d_em_by_question_type():
    r = _score("sqa3d", "sqa3d_pred.json", "sqa3d_questions.json", "sqa3d_annotations.json")
    assert r["em"] == pytest.approx(4 / 6)
    assert (r["em_what"], r["em_is"], r["em_how"], r["em_can"], r["em_which"], r["em_others"]) == (1, 0, 1, 1, 1, 0)


def test_vsibench_unknown_id_is_a_wrong_item():
    r = _score("vsibench", "vsibench_pred.jsonl", "vsibench_gt.jsonl")
    assert r["object_abs_distance_MRA"] == pytest.approx(0.6)
    assert r["room_size_estimation_MRA"] == 1.0  # gt = 0 and pred = 0
    assert r["object_rel_direction_accuracy"] == 0.5 and r["route_planning_accuracy"] == 1.0
    # overall: the mean of the five tasks (lmms-eval), scaled by 6 / 7 for the one unknown id (a wrong extra item)
    assert r["overall"] == pytest.approx((1 + 0.6 + 1 + 1 + 0.5) / 5 * 6 / 7)
    assert r["n_unknown"] == 1 and "unknown_accuracy" not in r


def test_scanqa_and_scan2cap_through_the_cli(capsys):
    from proxy3d.eval.score_cli import main

    assert main(["--benchmark", "scanqa", "--predictions", str(FIX / "scanqa_pred.json"), "--annotations",
                 str(FIX / "scanqa_gt.json"), "--boxes", str(BOXES), "--no-meteor", "--json"]) == 0
    out = capsys.readouterr().out
    r = json.loads(out[out.index("{"):])
    assert r["em"] == pytest.approx(1 / 3) and r["refined_em"] == pytest.approx(2 / 3)
    assert r["cider"] > 0 and "bleu4" in r
    c = _score("scan2cap", "scan2cap_pred.json", "scan2cap_gt.json", meteor=False)
    assert c["recall@0.5"] == pytest.approx(2 / 3)  # bed predicted with IoU 0.25 < 0.5: missed
    assert c["cider@0.5"] > 0 and c["n_items"] == 3


def test_repeated_ids_are_counted_and_the_last_prediction_is_scored(tmp_path: Path, caplog):
    preds = json.loads((FIX / "scanrefer_pred.json").read_text())
    first = dict(preds[0], bbox=[[9, 9, 9], [9.1, 9.1, 9.1]])  # a miss, then the original (a hit) again
    (tmp_path / "p.json").write_text(json.dumps([first, *preds]))
    with caplog.at_level("WARNING"):
        r = score_file("scanrefer", tmp_path / "p.json", [FIX / "scanrefer_gt.json"], BOXES)
    assert r == {**_score("scanrefer", "scanrefer_pred.json", "scanrefer_gt.json"), "n_predictions": 5.0,
                 "n_duplicate": 1.0}
    assert "1 predictions repeat an id" in caplog.text and "p.json:1" in caplog.text
    # the same prediction twice for one GT item: one item predicted, three missing (was counted as two missing)
    (tmp_path / "twice.json").write_text(json.dumps([preds[0], preds[0]]))
    r = score_file("scanrefer", tmp_path / "twice.json", [FIX / "scanrefer_gt.json"], BOXES)
    assert (r["n_missing"], r["n_duplicate"]) == (3, 1)


@pytest.mark.parametrize(("bench", "record", "key"), [
    ("sqa3d", {"question_id": 1, "answer": None}, "answer"),
    ("vsibench", {"id": 1, "prediction": None}, "prediction"),
    ("vsibench", {"id": 1, "prediction": ["A"]}, "prediction"),
])
def test_null_or_list_answers_are_format_errors_naming_the_line(tmp_path: Path, bench, record, key):
    """str(None) would be "None", which answer cleaning reads as "zero": a right answer to every "0" question."""
    anns = {"sqa3d": ["sqa3d_questions.json", "sqa3d_annotations.json"], "vsibench": ["vsibench_gt.jsonl"]}[bench]
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question_id": 0, "id": 0, "answer": "x", "prediction": "x"}) + "\n"
                    + json.dumps(record) + "\n")
    with pytest.raises(PredictionFormatError, match=rf"p\.jsonl:2: field '{key}' .* expected a string"):
        score_file(bench, path, [FIX / a for a in anns], BOXES)


def test_label_map_reaches_the_scanrefer_split_and_is_refused_elsewhere(tmp_path: Path, capsys):
    from proxy3d.eval.score_cli import main

    gt = json.loads((FIX / "scanrefer_gt.json").read_text())
    names = sorted({r["object_name"] for r in gt})
    header = "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class"
    tsv = tmp_path / "labels.tsv"  # every fixture name maps to a class outside ScanRefer's 18: all 'others'
    tsv.write_text("\n".join([header] + [f"{i}\t{' '.join(n.split('_'))}\tx\t1\t40\t1\tx\tmisc" for i, n in enumerate(names)]))
    plain = _score("scanrefer", "scanrefer_pred.json", "scanrefer_gt.json")
    assert plain["unique_acc@0.25"] == 0.5
    mapped = _score("scanrefer", "scanrefer_pred.json", "scanrefer_gt.json", label_map=tsv)
    # scene0000_00's chair, chair and table are now one class ('others'): the table turns multiple, the bed of
    # scene0001_00 stays unique (its IoU 0.25 misses, see above)
    assert mapped["unique_acc@0.25"] == 0.0 and mapped["multiple_acc@0.25"] == pytest.approx(2 / 3)
    assert plain["multiple_acc@0.25"] == 0.5 and mapped["acc@0.25"] == plain["acc@0.25"]
    assert main(["--benchmark", "scanrefer", "--predictions", str(FIX / "scanrefer_pred.json"), "--annotations",
                 str(FIX / "scanrefer_gt.json"), "--boxes", str(BOXES), "--label-map", str(tsv), "--json"]) == 0
    with pytest.raises(ValueError, match="--label-map only changes ScanRefer"):
        _score("vsibench", "vsibench_pred.jsonl", "vsibench_gt.jsonl", label_map=tsv)


def test_scan2cap_item_errors_name_the_line_of_the_item(tmp_path: Path):
    text = (FIX / "scan2cap_pred.json").read_text()
    ok = _score("scan2cap", "scan2cap_pred.json", "scan2cap_gt.json", meteor=False)
    bad = tmp_path / "cap.json"
    bad.write_text(text.replace('"box": [1.0, 1.0, 0.5, 1.0, 1.0, 1.0]}\n  ]', '"box": [1.0, 1.0]}\n  ]'))
    with pytest.raises(PredictionFormatError, match=r"cap\.json:7: field 'box' is not a box"):
        score_file("scan2cap", bad, [FIX / "scan2cap_gt.json"], BOXES, meteor=False)
    bad.write_text(text.replace('"caption": "a wide table"', '"caption": null'))
    with pytest.raises(PredictionFormatError, match=r"cap\.json:4: field 'caption' .* expected a string"):
        score_file("scan2cap", bad, [FIX / "scan2cap_gt.json"], BOXES, meteor=False)
    bad.write_text(text.replace('{"caption": "a big bed", ', '{'))
    with pytest.raises(PredictionFormatError, match=r"cap\.json:7: missing field 'caption'"):
        score_file("scan2cap", bad, [FIX / "scan2cap_gt.json"], BOXES, meteor=False)
    bad.write_text('{\n  "scene0000_00": [],\n  "scene0001_00": "a big bed"\n}\n')
    with pytest.raises(PredictionFormatError, match=r"cap\.json:3: 'scene0001_00': expected a list"):
        score_file("scan2cap", bad, [FIX / "scan2cap_gt.json"], BOXES, meteor=False)
    twice = tmp_path / "twice.json"  # a repeated scene key: json.loads keeps one, every item is still read
    twice.write_text('{"scene0001_00": [], "scene0000_00": [],\n' + text.lstrip()[1:])
    assert score_file("scan2cap", twice, [FIX / "scan2cap_gt.json"], BOXES, meteor=False)["n_predictions"] == 3
    compact = tmp_path / "compact.json"  # the same predictions on one line score the same
    compact.write_text(json.dumps(json.loads(text)))
    assert score_file("scan2cap", compact, [FIX / "scan2cap_gt.json"], BOXES, meteor=False) == ok
