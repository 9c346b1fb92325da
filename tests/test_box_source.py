"""``evaluate.box_source``: a generated ``<OBJxxx>`` scored as the box of the proxies carrying identifier xxx.

With GT boxes the tokenizer could not show in grounding scores (any method that kept an object's identifier on
one proxy scored the same); with the proxies' boxes the same answers score lower on proxies that mix objects,
which is the paper's "w/o semantic grouping" ablation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from proxy3d.config import ParamsError, ProxiesParams, load_params
from proxy3d.eval.evaluate import SceneInputs, Variant, evaluate
from proxy3d.eval.significance import compare
from proxy3d.eval.tasks import score_pairs
from proxy3d.tokenizer.pooling import object_boxes
from proxy3d.tokenizer.quality import box_iou, evaluate_grid
from proxy3d.tokenizer.synthetic import make_triplets
from proxy3d.types import load_triplets, save_triplets

SCENES = ("scene0000_00", "scene0001_00")


@pytest.fixture(scope="module")
def triplets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("triplets")
    for i, sid in enumerate(SCENES):
        save_triplets(make_triplets(4000, 8, seed=40 + i, scene_id=sid), d / f"{sid}.safetensors")
    return d


def _gt_boxes(triplets_dir: Path) -> dict:
    """GT boxes of the furniture and small objects (room structure left out, as the grounding targets are)."""
    out = {}
    for sid in SCENES:
        objs = load_triplets(triplets_dir / f"{sid}.safetensors").meta["objects"]
        out[sid] = {int(o["object_id"]): (o["label"], np.asarray(o["aabb"], dtype=np.float64)) for o in objs
                    if int(o["object_id"]) >= 5}
    return out


def test_proxy_object_boxes_bound_the_member_points_of_each_identifiers_proxies() -> None:
    points = np.array([[0, 0, 0], [1, 2, 1], [4, 4, 4], [9, 9, 9], [2, -1, 0.5], [np.nan] * 3], dtype=np.float32)
    members = np.array([0, 1, 2, 3, 1, -1])  # proxy 3 has no identifier; the NaN patch is in no proxy
    instance = np.array([7, 7, 8, -1])
    boxes = object_boxes(members, instance, points)
    assert set(boxes) == {7, 8}
    np.testing.assert_allclose(boxes[7], [1, 0.5, 0.5, 2, 3, 1])  # lo (0, -1, 0), hi (2, 2, 1)
    np.testing.assert_allclose(boxes[8], [4, 4, 4, 0, 0, 0])
    assert object_boxes(np.full(3, -1), np.array([5]), np.zeros((3, 3))) == {}  # a proxy without members


def test_scores_name_the_predicted_boxes_and_target_the_gt_boxes() -> None:
    gt = {"s": {1: ("chair", np.array([0, 0, 0, 1, 1, 1.0])), 2: ("table", np.array([5, 5, 0, 1, 1, 1.0]))}}
    items = [{"id": "0", "task": "grounding", "scene_id": "s", "target_object_ids": [1], "answers": ["<OBJ001>"]},
             {"id": "1", "task": "multi_grounding", "scene_id": "s", "target_object_ids": [1, 2], "answers": [""]}]
    preds = ["<OBJ001>", "<OBJ001> <OBJ002>"]
    same = score_pairs(items, preds, gt, meteor=False)
    assert same["scanrefer"]["acc@0.25"] == 1.0 and same["multi3drefer"]["f1@0.5"] == 1.0
    # object 1's proxies reach 1 m further in x (IoU 0.5), object 2 has no proxy
    pred = {"s": {1: ("", np.array([0.5, 0, 0, 2, 1, 1.0]))}}
    r = score_pairs(items, preds, gt, meteor=False, pred_boxes=pred)
    assert r["scanrefer"]["acc@0.25"] == 1.0 and r["scanrefer"]["acc@0.5"] == 0.0
    assert r["multi3drefer"]["f1@0.25"] == pytest.approx(0.5)  # one of two predictions matches one of two targets
    empty = score_pairs(items, preds, gt, meteor=False, pred_boxes={})  # no proxies at all: nothing is boxed
    assert empty["scanrefer"]["acc@0.25"] == 0.0 and empty["multi3drefer"]["f1@0.25"] == 0.0


def test_pred_boxes_are_the_oracle_grounding_boxes_of_each_method(triplets_dir: Path) -> None:
    """The identifier of a correctly answered target names the box the proxies stage's oracle grounding scores, so
    answering every target right reproduces ``evaluate_grid``'s Acc@0.25 per method."""
    gt = _gt_boxes(triplets_dir)
    pp = ProxiesParams(budget=120, eval_budgets=[120], eval_methods=["semantic", "global_kmeans"],
                       eval_exclude_labels=[f"object{i}" for i in range(5)])
    scenes = SceneInputs(triplets_dir / "none", triplets_dir, pp)  # no proxies stage output: tokenize here
    grid = evaluate_grid([load_triplets(triplets_dir / f"{sid}.safetensors") for sid in SCENES], pp)["clean"]
    for method in ("semantic", "global_kmeans"):
        named = scenes.pred_boxes(Variant(f"{method}@120", method=method, budget=120), SCENES)
        ious = [box_iou(named[sid][o][1], box) if o in named[sid] else 0.0
                for sid in SCENES for o, (_, box) in gt[sid].items()]
        assert 100 * np.mean(np.asarray(ious) >= 0.25) == pytest.approx(grid[method]["120"]["acc25"]), method


def test_the_same_answers_ground_worse_on_global_kmeans_proxies(triplets_dir: Path) -> None:
    """Answers that always name the target: with GT boxes every method scores 100; with the proxies' boxes
    semantic grouping beats global k-means, and the paired bootstrap sees the difference the scores show."""
    gt = _gt_boxes(triplets_dir)
    items = [{"id": f"{sid}/{o}", "task": "grounding", "scene_id": sid, "target_object_ids": [o],
              "answers": [f"<OBJ{o:03d}>"], "question": "q"} for sid in SCENES for o in sorted(gt[sid])]

    def oracle(its: list[dict], scenes: list, max_new: int) -> list[str]:
        assert all(len(s) > 0 for s in scenes)
        return [it["answers"][0] for it in its]

    variants = [Variant("semantic@120", budget=120), Variant("global_kmeans@120", method="global_kmeans", budget=120),
                Variant("random_object", kind="random_object", budget=0)]
    inputs = SceneInputs(triplets_dir / "none", triplets_dir, ProxiesParams(budget=120))
    by_gt, _ = evaluate(items, gt, variants, oracle, inputs, 8, 4, meteor=False)
    by_proxies, texts = evaluate(items, gt, variants, oracle, inputs, 8, 4, meteor=False, box_source="proxies")
    acc = {v: r["benchmarks"]["scanrefer"]["acc@0.5"] for v, r in by_proxies.items()}
    assert by_gt["semantic@120"]["benchmarks"]["scanrefer"]["acc@0.5"] == 1.0
    assert by_gt["global_kmeans@120"]["benchmarks"]["scanrefer"]["acc@0.5"] == 1.0
    assert acc["semantic@120"] >= acc["global_kmeans@120"] + 0.3, acc
    # random_object's identifiers are boxed by the default (semantic@120) proxies: never above the oracle answers
    assert acc["random_object"] < acc["semantic@120"]
    named = {v.name: inputs.pred_boxes(v, SCENES) for v in variants}
    cmp = compare(items, texts, "semantic@120", ["global_kmeans@120"], gt, 500, 0, pred_boxes=named)
    row = cmp["semantic@120 vs global_kmeans@120"]["scanrefer.acc@0.5"]
    assert row["diff"] == pytest.approx(acc["semantic@120"] - acc["global_kmeans@120"]) and row["lo"] > 0
    # without the variants' boxes the identical texts compare equal
    same = compare(items, texts, "semantic@120", ["global_kmeans@120"], gt, 500, 0)
    assert same["semantic@120 vs global_kmeans@120"]["scanrefer.acc@0.5"]["diff"] == 0.0


def test_box_source_is_checked(triplets_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="evaluate.box_source"):
        load_params(tmp_path / "missing.yaml", ["evaluate.box_source=detector"])
    with pytest.raises(ValueError, match="box_source"):
        evaluate([], {}, [], None, None, 1, 1, box_source="detector")
    with pytest.raises(ValueError, match="needs the scene inputs"):
        evaluate([], {}, [], None, None, 1, 1, box_source="proxies")
    # proxies of other triplets (another patch count) cannot be boxed with these points
    other = tmp_path / "triplets"
    other.mkdir()
    save_triplets(make_triplets(3000, 8, seed=40, scene_id=SCENES[0]), other / f"{SCENES[0]}.safetensors")
    inputs = SceneInputs(tmp_path / "none", triplets_dir, ProxiesParams(budget=50))
    v = Variant("semantic@50", budget=50)
    inputs.get(v, SCENES[0])
    inputs.triplets_dir = other
    with pytest.raises(ValueError, match="re-run `dvc repro proxies`"):
        inputs.pred_boxes(v, SCENES[:1])
