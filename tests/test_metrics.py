"""Metric definitions against hand-computed values from the public evaluation code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxy3d.eval import metrics as M


def test_box_iou_axis_aligned_and_corner_formats_agree():
    a = [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]
    b = [1.0, 0.0, 0.0, 2.0, 2.0, 2.0]  # overlap 1*2*2 = 4, union 8+8-4 = 12
    assert M.box3d_iou(a, b) == pytest.approx(4 / 12)
    assert M.box3d_iou(M.get_3d_box(a[:3], a[3:]), M.get_3d_box(b[:3], b[3:])) == pytest.approx(4 / 12)
    assert M.box3d_iou(a, [10, 10, 10, 1, 1, 1]) == 0.0
    with pytest.raises(ValueError, match="shape"):
        M.box_bounds([1, 2, 3])


def test_scanrefer_accuracy_thresholds_are_inclusive_and_split_unique_multiple():
    lookup = M.unique_multiple_lookup([("s", 0, "chair"), ("s", 1, "chair"), ("s", 2, "office_chair"),
                                       ("s", 0, "chair"), ("t", 0, "chair")])
    assert lookup == {("s", 0): 1, ("s", 1): 1, ("s", 2): 0, ("t", 0): 0}
    r = M.scanrefer_scores([0.25, 0.5, 0.0, 0.7], [0, 1, 1, 0])
    assert r["acc@0.25"] == 0.75 and r["acc@0.5"] == 0.5
    assert r["unique_acc@0.25"] == 1.0 and r["unique_acc@0.5"] == 0.5
    assert r["multiple_acc@0.25"] == 0.5 and r["multiple_acc@0.5"] == 0.5


def test_multi3drefer_hungarian_f1_and_zero_target_rule():
    g = [[0, 0, 0, 1, 1, 1], [3, 0, 0, 1, 1, 1]]
    # greedy would pair the big box with gt0; Hungarian assigns each prediction to its own gt
    preds = [[3, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [9, 9, 9, 1, 1, 1]]
    assert M.multi3drefer_f1(preds, g) == (pytest.approx(0.8), pytest.approx(0.8))  # 2*2 / (3+2)
    assert M.multi3drefer_f1([], g) == (0.0, 0.0)  # empty prediction
    assert M.multi3drefer_f1([], []) == (1.0, 1.0)  # zero target, nothing predicted
    assert M.multi3drefer_f1([g[0]], []) == (0.0, 0.0)  # zero target, something predicted
    half = [[0.5, 0, 0, 1, 1, 1]]  # IoU 0.5/1.5 = 1/3 with gt0
    assert M.multi3drefer_f1(half, [g[0]]) == (pytest.approx(1.0), pytest.approx(0.0))
    r = M.multi3drefer_scores([(0.8, 0.8), (1.0, 1.0), (0.0, 0.0)], ["mt", "zt_w_d", "zt_wo_d"])
    assert r["f1@0.25"] == pytest.approx(0.6) and r["mt_f1@0.5"] == pytest.approx(0.8)
    assert math.isnan(r["st_wo_d_f1@0.25"])


@pytest.mark.parametrize(("raw", "clean"), [
    ("The left side", "left side"), ("Brown.", "brown"), ("2", "two"), ("none", "zero"),
    ("  A  Chair2 ", "chair"), ("tv stand", "TV stand"), ("o'  clock", "o'clock"), ("backwards!", "backward"),
])
def test_clean_answer_follows_leo(raw, clean):
    assert M.clean_answer(raw) == clean


def test_em_and_refined_em():
    assert M.answer_match("", ["brown"]) == (0, 0)  # empty prediction
    assert M.answer_match("brown", ["brown", "black"]) == (1, 1)
    assert M.answer_match("two chairs", ["two"]) == (0, 1)
    assert M.answer_match("right", ["left side", "left"]) == (0, 0)
    r = M.qa_em_scores(["Brown.", "two chairs", "right"], [["brown"], ["2"], ["the left side", "left"]])
    assert r == {"em": pytest.approx(1 / 3), "refined_em": pytest.approx(2 / 3)}


def test_sqa3d_question_type_and_per_type_em():
    qs = ["What is it?", "Is it open?", "How many?", "Can I sit?", "Which way?", "Where is it?", "  is it?"]
    assert [M.sqa3d_question_type(q) for q in qs] == ["what", "is", "how", "can", "which", "others", "is"]
    r = M.sqa3d_scores(["table", "no", "two"], [["table"], ["yes"], ["2"]], ["What?", "Is it?", "How many?"])
    assert r["em"] == pytest.approx(2 / 3) and r["em_is"] == 0.0 and r["em_how"] == 1.0
    assert math.isnan(r["em_can"])


def test_mra_thresholds_inclusive_and_gt_zero_guard():
    assert np.allclose(M.MRA_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    assert M.mean_relative_accuracy(5.0, 4.0) == pytest.approx(0.6)  # rel 0.25: theta <= 0.75 pass
    assert M.mean_relative_accuracy(6.0, 4.0) == pytest.approx(0.1)  # rel 0.5: only theta = 0.5 (inclusive)
    assert M.mean_relative_accuracy(4.0, 4.0) == 1.0
    assert M.mean_relative_accuracy(10.0, 4.0) == 0.0
    assert M.mean_relative_accuracy(0.0, 0.0) == 1.0 and M.mean_relative_accuracy(1.0, 0.0) == 0.0


def test_vsibench_item_scoring_and_task_mean():
    assert M.fuzzy_matching("A. left") == "A" and M.fuzzy_matching("3.5 meters") == "3.5"
    assert M.vsibench_item_score("object_rel_distance", "a.", "A") == 1.0
    assert M.vsibench_item_score("object_rel_distance", "B", "A") == 0.0
    assert M.vsibench_item_score("object_counting", "four", "4") == 0.0  # unparsable number = worst case
    assert M.vsibench_item_score("object_counting", "", "4") == 0.0  # empty prediction
    r = M.vsibench_scores(["object_counting", "object_rel_direction_easy", "object_rel_direction_hard",
                           "route_planning", "route_planning"], [0.6, 1.0, 0.0, 1.0, 0.0])
    assert r == {"object_counting_MRA": pytest.approx(0.6), "object_rel_direction_accuracy": 0.5,
                 "route_planning_accuracy": 0.5, "overall": pytest.approx((0.6 + 0.5 + 0.5) / 3)}


def test_caption_metrics_equal_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from proxy3d.eval.captions import caption_scores, scan2cap_scores

    gts = {"a": ["a red chair near the table", "the chair is red"], "b": ["a wooden table"],
           "c": ["two lamps on the desk"], "d": ["a big bed in the corner"]}
    res = {"a": "red chair", "b": "", "c": "a lamp on a desk", "d": "a big bed"}
    corpus, items = caption_scores(gts, res, meteor=False)
    tok = PTBTokenizer()
    g = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    r = tok.tokenize({k: [{"caption": v}] for k, v in res.items()})
    bleu, _ = Bleu(4).compute_score(g, r)
    cider, cider_items = Cider().compute_score(g, r)
    rouge, _ = Rouge().compute_score(g, r)
    assert [corpus[f"bleu{n}"] for n in range(1, 5)] == pytest.approx(bleu)
    assert corpus["cider"] == pytest.approx(cider) and corpus["cider"] > 0.5
    assert corpus["rouge_l"] == pytest.approx(rouge)
    assert items["cider"] == pytest.approx(cider_items)
    assert items["cider"][1] == 0.0  # empty caption
    # Scan2Cap@0.5 (benchmark/eval.py): "sos ... eos" on both sides, no PTB tokenizer, a missed object scores 0,
    # averaged over all GT objects; a box matches when its IoU is at least 0.5 (filter_candidates), so "d" at
    # exactly 0.5 is matched and just below it is missed
    wrapped = {k: [f"sos {c} eos" for c in v] for k, v in gts.items()}
    _, s2c_items = Cider().compute_score(wrapped, {k: [" ".join(["sos", *v.split(), "eos"])] for k, v in res.items()})
    s2c = scan2cap_scores(gts, res, {"a": 0.9, "b": 0.9, "c": 0.4, "d": 0.5}, meteor=False)
    assert s2c["cider@0.5"] == pytest.approx((s2c_items[0] + s2c_items[1] + s2c_items[3]) / 4)
    assert s2c["recall@0.5"] == 0.75
    s2c = scan2cap_scores(gts, res, {"a": 0.9, "b": 0.9, "c": 0.4, "d": 0.5 - 1e-9}, meteor=False)
    assert s2c["cider@0.5"] == pytest.approx((s2c_items[0] + s2c_items[1]) / 4)
    assert s2c["recall@0.5"] == 0.5


def test_scanrefer_iou_adds_scanrefers_epsilon_to_the_union():
    gt, half = [0, 0, 0, 1, 1, 1], [0, 0, -0.25, 1, 1, 0.5]  # IoU exactly 0.5
    assert M.box3d_iou(half, gt) == 0.5
    assert M.box3d_iou(half, gt, M.SCANREFER_IOU_EPS) < 0.5
    assert M.scanrefer_scores([M.box3d_iou(half, gt, M.SCANREFER_IOU_EPS)], [0])["acc@0.5"] == 0.0


def test_multi3drefer_named_objects_without_a_box_still_count_as_predictions():
    """M3DRef-CLIP's evaluator counts every predicted box: an identifier the scene lacks is a false positive."""
    from proxy3d.eval.tasks import multi3drefer_f1s

    boxes = {"s": {0: ("chair", np.array([0, 0, 0, 1, 1, 1.0])), 1: ("table", np.array([3, 3, 0, 1, 1, 1.0]))}}
    items = [{"scene_id": "s", "target_object_ids": [], "question_type": "zt_w_d"},
             {"scene_id": "s", "target_object_ids": [0], "question_type": "st_w_d"},
             {"scene_id": "s", "target_object_ids": [0, 7], "question_type": "mt"}]
    f1s, types = multi3drefer_f1s(items, ["<OBJ099>", "<OBJ000> <OBJ099>", "<OBJ000>"], boxes)
    assert f1s[0] == (0.0, 0.0)  # zero-target answered with an unknown object: wrong (was 1.0)
    assert f1s[1] == pytest.approx((2 / 3, 2 / 3))  # 1 TP of 2 predictions, 1 target (was 1.0)
    assert f1s[2] == pytest.approx((2 / 3, 2 / 3))  # target 7 has no box: still a target (was 1.0)
    assert types == ["zt_w_d", "st_w_d", "mt"]


def test_scanrefer_unique_multiple_uses_scannets_18_classes_with_the_label_table(tmp_path):
    """ScanRefer's _get_raw2label: raw name -> nyu40class (tsv columns 2 and 8) -> one of 18 classes, 'others'
    for the rest; without the table the split falls back to the object name."""
    header = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class"]
    rows = [["1", "office chair", "office chair", "9", "5", "4", "chair", "chair"],
            ["2", "chair", "chair", "9", "5", "4", "chair", "chair"],
            ["3", "lamp", "lamp", "9", "35", "7", "lamp", "lamp"],
            ["4", "backpack", "backpack", "9", "37", "7", "bag", "bag"],
            ["5", "bed", "bed", "9", "4", "1", "bed", "bed"]]
    tsv = tmp_path / "scannetv2-labels.combined.tsv"
    tsv.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    table = M.load_scannet_label_map(tsv)
    records = [("s", 0, "office_chair"), ("s", 1, "chair"), ("s", 2, "lamp"), ("s", 3, "stool"), ("s", 4, "bed")]
    assert set(M.unique_multiple_lookup(records).values()) == {0}  # every name differs
    # office chair and chair are both chairs; lamp (NYU40 lamp) and stool (not in the table) are both 'others'
    assert M.unique_multiple_lookup(records, table) == {("s", 0): 1, ("s", 1): 1, ("s", 2): 1, ("s", 3): 1, ("s", 4): 0}
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:1: expected ScanNet's label table header"):
        M.load_scannet_label_map(bad)
