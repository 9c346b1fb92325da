"""The benchmark metrics against ports of the public evaluation code, on inputs built in ``tmp_path``.

Each expected value is what the public evaluator computes for the same input (its rule is restated in the test);
the repository and file it follows are named in the test's docstring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from proxy3d.eval import captions, metrics, tasks
from proxy3d.eval.records import PredictionFormatError, iter_records
from proxy3d.eval.score import score_file

OBJECTS = """scene_id,object_id,label,center_x,center_y,center_z,size_x,size_y,size_z
s0,0,chair,0,0,0,2,2,2
s0,1,chair,10,0,0,2,2,2
s0,2,table,20,0,0,2,2,2
s1,0,cabinet,0,0,0,2,2,2
s1,1,cabinet,0.4,0,0,2,2,2
"""


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def objects(tmp_path: Path) -> Path:
    return _write(tmp_path / "objects.csv", OBJECTS)


# ----------------------------------------------------------------------------- Multi3DRefer
def test_multi3drefer_query_without_prediction_scores_zero_even_when_zero_target(tmp_path: Path, objects: Path):
    """3dlg-hcvc/M3DRef-CLIP m3drefclip/evaluation/multi3drefer_evaluator.py: the F1 arrays are zero-initialised
    and only predicted queries are filled, so a zero-target query nobody answered scores 0, not 1."""
    gt = _write(tmp_path / "gt.json", [
        {"scene_id": "s0", "ann_id": 0, "object_ids": [], "eval_type": "zt_w_d"},
        {"scene_id": "s0", "ann_id": 1, "object_ids": [0], "eval_type": "st_w_d"},
        {"scene_id": "s0", "ann_id": 2, "object_ids": [], "eval_type": "zt_wo_d"}])
    pred = _write(tmp_path / "pred.json", [{"scene_id": "s0", "ann_id": 1, "aabb": [[0, 0, 0, 2, 2, 2]]}])
    r = score_file("multi3drefer", pred, [gt], objects)
    assert r["f1@0.25"] == pytest.approx(1 / 3) and r["f1@0.5"] == pytest.approx(1 / 3)
    assert r["zt_w_d_f1@0.25"] == 0.0 and r["zt_wo_d_f1@0.5"] == 0.0 and r["st_w_d_f1@0.5"] == 1.0
    assert r["n_missing"] == 2
    # an explicit empty prediction is still the right answer to a zero-target query
    both = _write(tmp_path / "both.json", [{"scene_id": "s0", "ann_id": 0, "aabb": []},
                                           {"scene_id": "s0", "ann_id": 1, "aabb": [[0, 0, 0, 2, 2, 2]]}])
    assert score_file("multi3drefer", both, [gt], objects)["zt_w_d_f1@0.25"] == 1.0


def test_multi3drefer_iou_is_float32_with_epsilon_in_the_union():
    """M3DRef-CLIP m3drefclip/util/utils.py get_batch_aabb_pair_ious: float32 bounds, inter / (v1 + v2 - inter +
    finfo(float32).eps). An IoU of exactly 0.5 on a small box (union 0.125) then falls short of 0.5; on a large
    one (union 8) the epsilon is lost to float32 rounding and it does not."""
    small_gt, small_pred = np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.array([[0, 0, 0], [0.25, 0.5, 0.5]])
    assert metrics.multi3drefer_f1([small_pred], [small_gt]) == (1.0, 0.0)
    big_gt, big_pred = np.array([[-1, -1, -1], [1, 1, 1.0]]), np.array([[-1, -1, -1], [0, 1, 1.0]])
    assert metrics.multi3drefer_f1([big_pred], [big_gt]) == (1.0, 1.0)
    eps = np.float32(np.finfo(np.float32).eps)
    assert metrics.multi3drefer_iou(small_gt, small_pred) == np.float32(0.0625) / (np.float32(0.125) + eps)


# ----------------------------------------------------------------------------- Scan2Cap
S2C_GT = [
    {"scene_id": "s0", "object_id": "0", "object_name": "chair", "ann_id": "0",
     "description": "This is a black chair. It is next to the table.",
     "token": ["this", "is", "a", "black", "chair", ".", "it", "is", "next", "to", "the", "table", "."]},
    {"scene_id": "s0", "object_id": "0", "object_name": "chair", "ann_id": "1",
     "description": "A black chair near a table.", "token": ["a", "black", "chair", "near", "a", "table", "."]},
    {"scene_id": "s0", "object_id": "2", "object_name": "table", "ann_id": "0",
     "description": "The brown table is in the corner of the room.",
     "token": ["the", "brown", "table", "is", "in", "the", "corner", "of", "the", "room", "."]},
]
S2C_CAPTIONS = {"0": "this is a black chair . it is next to the table .",
                "2": "the brown table is in the corner of the room ."}


def _public_scan2cap(gt: list[dict], candidates: dict[str, str]) -> dict[str, float]:
    """daveredrum/Scan2Cap benchmark/eval.py: references "sos " + " ".join(token) + " eos" (organize_gt),
    candidates as submitted, capeval's scorers on whitespace-split strings (no PTB tokenizer); every object matched
    here, so the recall is the mean item score."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    corpus: dict[str, list[str]] = {}
    for d in gt:
        corpus.setdefault(f"{d['scene_id']}|{d['object_id']}", []).append("sos " + " ".join(d["token"]) + " eos")
    cands = {k: [candidates[k]] for k in corpus}
    bleu = Bleu(4).compute_score(corpus, cands, verbose=0)[1][3]
    return {"cider@0.5": float(np.mean(Cider().compute_score(corpus, cands)[1])), "bleu4@0.5": float(np.mean(bleu)),
            "rouge_l@0.5": float(np.mean(Rouge().compute_score(corpus, cands)[1]))}


def _submission(tmp_path: Path, wrap: bool) -> Path:
    boxes = {"0": [0, 0, 0, 2, 2, 2], "2": [20, 0, 0, 2, 2, 2]}
    return _write(tmp_path / f"pred_{wrap}.json", {"s0": [
        {"caption": f"sos {c} eos" if wrap else c, "box": boxes[o]} for o, c in S2C_CAPTIONS.items()]})


def test_scan2cap_scores_token_references_with_sos_eos_and_no_ptb(tmp_path: Path, objects: Path):
    """Scan2Cap benchmark/eval.py: the token lists, wrapped in sos/eos, scored without PTB tokenization; a
    candidate without sos/eos is wrapped the same way (Scan2Cap's decode_caption always emits them)."""
    gt = _write(tmp_path / "gt.json", S2C_GT)
    want = _public_scan2cap(S2C_GT, {f"s0|{o}": f"sos {c} eos" for o, c in S2C_CAPTIONS.items()})
    for wrap in (True, False):
        r = score_file("scan2cap", _submission(tmp_path, wrap), [gt], objects, meteor=False)
        assert {k: r[k] for k in want} == pytest.approx(want)
        assert r["recall@0.5"] == 1.0


def test_scan2cap_description_fallback_tokenizes_like_the_token_lists(tmp_path: Path, objects: Path):
    """Without a ``token`` field the description is lower-cased and punctuation split off, which gives ScanRefer's
    token lists back here, so the scores are the same."""
    assert captions.scan2cap_tokens("This is a black chair. It is next to the table.") == S2C_GT[0]["token"]
    assert captions.scan2cap_tokens("a chair, (left) of it!") == ["a", "chair", ",", "(", "left", ")", "of", "it", "!"]
    with_tokens = score_file("scan2cap", _submission(tmp_path, True), [_write(tmp_path / "t.json", S2C_GT)], objects,
                             meteor=False)
    no_tokens = _write(tmp_path / "d.json", [{k: v for k, v in d.items() if k != "token"} for d in S2C_GT])
    assert score_file("scan2cap", _submission(tmp_path, True), [no_tokens], objects, meteor=False) == with_tokens


def test_evaluate_stage_scan2cap_uses_the_same_metric_as_proxy3d_score(tmp_path: Path, objects: Path):
    """One definition: the evaluate stage's items (SpaceSpan's answers are the Scan2Cap corpus captions without
    "sos"/"eos"; the object is the item's own) score as the equivalent submission does."""
    from proxy3d.eval.records import load_gt_boxes

    sub = score_file("scan2cap", _submission(tmp_path, False), [_write(tmp_path / "gt.json", S2C_GT)], objects,
                     meteor=False)
    items = [{"id": str(i), "task": "caption", "scene_id": "s0", "target_object_ids": [int(o)],
              "answers": [" ".join(d["token"]) for d in S2C_GT if d["object_id"] == o]}
             for i, o in enumerate(S2C_CAPTIONS)]
    r = tasks.score_pairs(items, list(S2C_CAPTIONS.values()), load_gt_boxes(objects, {"s0"}), meteor=False)["scan2cap"]
    assert {k: v for k, v in r.items() if k != "n_items"} == pytest.approx(
        {k: v for k, v in sub.items() if not k.startswith("n_")})


def test_scan2cap_assigns_boxes_one_to_one_per_scene(tmp_path: Path, objects: Path):
    """Scan2Cap benchmark/eval.py box_assignment: linear_sum_assignment on -GIoU per scene, one prediction per GT
    object. Both predictions overlap the first cabinet best; greedily the second cabinet would be missed, the
    one-to-one assignment gives it the second prediction (IoU 0.6)."""
    gt = _write(tmp_path / "gt.json", [
        {"scene_id": "s1", "object_id": "0", "object_name": "cabinet", "ann_id": "0",
         "description": "a white cabinet", "token": ["a", "white", "cabinet"]},
        {"scene_id": "s1", "object_id": "1", "object_name": "cabinet", "ann_id": "0",
         "description": "a brown cabinet", "token": ["a", "brown", "cabinet"]}])
    pred = _write(tmp_path / "pred.json", {"s1": [{"caption": "a white cabinet", "box": [0, 0, 0, 2, 2, 2]},
                                                  {"caption": "a brown cabinet", "box": [-0.1, 0, 0, 2, 2, 2]}]})
    r = score_file("scan2cap", pred, [gt], objects, meteor=False)
    assert r["recall@0.5"] == 1.0 and r["n_missing"] == 0 and r["n_unknown"] == 0
    assert r["bleu1@0.5"] == pytest.approx(1.0)


def test_scan2cap_iou_threshold_is_inclusive():
    """Scan2Cap benchmark/eval.py filter_candidates keeps ``iou >= min_iou``."""
    assert captions.matched(0.5) and not captions.matched(0.5 - 1e-9)


# ----------------------------------------------------------------------------- file reading, boxes, split
@pytest.mark.parametrize("text", ['[{"id": 1}]\n[{"id": 2}]\n', '[{"id": 1}]\n\n  garbage'])
def test_text_after_the_json_array_is_an_error_naming_its_line(tmp_path: Path, text: str):
    path = _write(tmp_path / "p.json", text)
    with pytest.raises(PredictionFormatError, match=r"p\.json:[23]: extra data after the JSON array"):
        list(iter_records(path))
    assert list(iter_records(_write(tmp_path / "ok.json", '[{"id": 1}]\n  \n'))) == [(1, {"id": 1})]


def test_evaluate_unique_multiple_counts_only_annotated_objects():
    """ScanRefer lib/dataset.py _get_unique_multiple_lookup: a target is unique when no other *annotated* object of
    the split shares its class; the unannotated second chair does not make the chair 'multiple'."""
    boxes = {"s0": {0: ("chair", np.array([0, 0, 0, 2, 2, 2.0])), 1: ("chair", np.array([10, 0, 0, 2, 2, 2.0])),
                    2: ("table", np.array([20, 0, 0, 2, 2, 2.0]))}}
    items = [{"scene_id": "s0", "target_object_ids": [0], "task": "grounding"},
             {"scene_id": "s0", "target_object_ids": [2], "task": "grounding"}]
    assert tasks.scanrefer_ious(items, ["<OBJ000>", "<OBJ002>"], boxes)[1] == [0, 0]
    both = [*items, {"scene_id": "s0", "target_object_ids": [1], "task": "grounding"}]
    assert tasks.scanrefer_ious(both, ["", "", ""], boxes)[1] == [1, 0, 1]


def test_inverted_two_by_three_box_is_refused_naming_the_value(tmp_path: Path, objects: Path):
    """A (2, 3) box is read as [min, max] corners only when min <= max in every column: [[cx, cy, cz], [dx, dy,
    dz]] (centre + size) must not be silently read as bounds."""
    with pytest.raises(ValueError, match=r"\[\[20.0, 0.0, 0.0\], \[1.0, 1.0, 1.0\]\].*min <= max"):
        metrics.box_bounds([[20, 0, 0], [1, 1, 1]])
    assert metrics.box_bounds([[0, 0, 0], [1, 2, 3]]).tolist() == [[0, 0, 0], [1, 2, 3]]
    gt = _write(tmp_path / "gt.json", [{"scene_id": "s0", "object_id": "0", "object_name": "chair", "ann_id": "0"},
                                       {"scene_id": "s0", "object_id": "2", "object_name": "table", "ann_id": "0"}])
    pred = _write(tmp_path / "pred.json", '[{"scene_id": "s0", "object_id": 0, "ann_id": 0, "bbox": [0, 0, 0, 2, 2, 2]},'
                                          '\n {"scene_id": "s0", "object_id": 2, "ann_id": 0, "bbox": [[20, 0, 0], [1, 1, 1]]}]')
    with pytest.raises(PredictionFormatError, match=r"pred\.json:2: field 'bbox' is not a box: .*min <= max"):
        score_file("scanrefer", pred, [gt], objects)


def test_score_help_documents_the_accepted_box_forms():
    from proxy3d.eval.score_cli import _parser

    text = _parser().format_help()
    assert "[[xmin, ymin, zmin], [xmax, ymax, zmax]]" in text and "8 corners" in text and "min <= max" in text


def test_empty_or_punctuation_only_answer_earns_no_refined_em():
    """A deliberate deviation from LEO's answer_match (embodied-generalist evaluator/scanqa_eval.py), where the
    empty string is contained in every answer and so earns refined EM."""
    for pred in ("", "...", " ?! "):
        assert metrics.answer_match(metrics.clean_answer(pred), ["white"]) == (0, 0)
    assert "LEO" in (metrics.answer_match.__doc__ or "") and "empty" in (metrics.answer_match.__doc__ or "")
