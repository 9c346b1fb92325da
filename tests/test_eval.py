"""Evaluation from (item, prediction) pairs, the variant loop and the report, without the trained model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from proxy3d.eval.evaluate import Variant, build_variants, evaluate, flat_metrics, select_items
from proxy3d.eval.records import load_gt_boxes
from proxy3d.eval.report import write_report
from proxy3d.eval.tasks import parse_objects, score_pairs
from proxy3d.io import spacespan_partition

BOXES = Path(__file__).parent / "fixtures" / "predictions" / "objects.csv"


def _item(i, task, answers, targets=(), question="q", qt=None, scene="scene0000_00"):
    return {"id": str(i), "source": "x", "task": task, "scene_id": scene, "question": question,
            "answers": list(answers), "target_object_ids": list(targets), "question_type": qt}


ITEMS = [
    _item(0, "grounding", ["<OBJ000>"], [0]),            # chair: the one annotated chair (chair 1 is not): unique
    _item(1, "grounding", ["<OBJ002>"], [2]),            # table: unique
    _item(2, "multi_grounding", ["<OBJ000> <OBJ001>"], [0, 1]),
    _item(3, "multi_grounding", ["none"], []),
    _item(4, "qa", ["brown"], [0], "What color is the chair?"),
    _item(5, "qa", ["2"], [0, 1], "How many chairs?"),
    _item(6, "situated_qa", ["left"], [], "Which way is the door?"),
    _item(7, "caption", ["a brown chair next to the table"], [0]),
    _item(8, "caption", ["a wide table between two chairs"], [2]),
    _item(9, "caption", ["a big bed in the corner"], [0], scene="scene0001_00"),
    _item(10, "spatial_num", ["4.0"], [], qt="object_abs_distance"),
    _item(11, "spatial_mc", ["B"], [], qt="object_rel_distance"),
    _item(12, "id_align", ["chair <OBJ001>"], [1]),
]
PREDS = ["chair <OBJ000>", "<OBJ000>", "<OBJ001> <OBJ000> <OBJ002>", "", "Brown", "two chairs", "right",
         "a brown chair by the table", "a table <OBJ000>", "a bed", "5", "B.", "chair <OBJ001>"]


@pytest.fixture(scope="module")
def boxes():
    return load_gt_boxes(BOXES, {"scene0000_00", "scene0001_00"})


def test_parse_objects_keeps_order_without_repeats():
    assert parse_objects("the <OBJ012> near <OBJ003> and <OBJ012>") == [12, 3]
    assert parse_objects("no identifier") == []


def test_score_pairs_maps_identifiers_to_boxes(boxes):
    r = score_pairs(ITEMS, PREDS, boxes, meteor=False)
    assert r["scanrefer"]["acc@0.25"] == 0.5  # right chair; table answered with a chair (IoU 0)
    # unique/multiple over the annotated targets (ScanRefer's lookup): both unique, the scene's second chair is no
    # grounding target
    assert r["scanrefer"]["unique_acc@0.25"] == 0.5 and np.isnan(r["scanrefer"]["multiple_acc@0.25"])
    assert r["multi3drefer"]["f1@0.5"] == pytest.approx((0.8 + 1.0) / 2)  # 2 TP of 3 preds/2 gts; zero target
    assert r["multi3drefer"]["mt_f1@0.5"] == pytest.approx(0.8)
    assert r["scanqa"]["em"] == 0.5 and r["scanqa"]["refined_em"] == 1.0
    assert r["sqa3d"]["em"] == 0.0 and r["sqa3d"]["em_which"] == 0.0
    assert r["scan2cap"]["recall@0.5"] == pytest.approx(2 / 3)  # the table caption names a chair: IoU 0
    assert r["vsibench"]["object_abs_distance_MRA"] == pytest.approx(0.6)
    assert r["vsibench"]["object_rel_distance_accuracy"] == 1.0
    assert r["alignment"]["em"] == 1.0
    assert {b: m["n_items"] for b, m in r.items()}["scan2cap"] == 3


class _Scenes:
    """Scene inputs per variant: a list of object ids standing in for the proxies (len = tokens)."""

    def get(self, v: Variant, scene_id: str) -> list[int]:
        return [] if v.blind else list(range(v.budget // 100))


def _oracle(items, scenes, max_new_tokens):
    """Answers right when it sees visual tokens, like a perfect model; blind it says nothing useful."""
    return [it["answers"][0] if len(s) else "1" for it, s in zip(items, scenes, strict=True)]


def test_evaluate_variants_and_report(tmp_path, boxes):
    variants = [Variant("semantic@700", budget=700), Variant("blind", blind=True, budget=0),
                Variant("random_object", kind="random_object", budget=0)]
    results, texts = evaluate(ITEMS, boxes, variants, _oracle, _Scenes(), batch_size=4, max_new_tokens=8, meteor=False)
    assert texts["semantic@700"] == [it["answers"][0] for it in ITEMS]
    assert results["semantic@700"]["benchmarks"]["scanrefer"]["acc@0.5"] == 1.0
    assert results["semantic@700"]["tokens"] == 7.0 and results["blind"]["tokens"] == 0.0
    assert results["blind"]["benchmarks"]["scanrefer"]["acc@0.25"] == 0.0
    assert set(results["random_object"]["benchmarks"]) == {"scanrefer", "multi3drefer"}
    # a blind-trained model, when given, answers the blind row (and only it)
    _, texts2 = evaluate(ITEMS, boxes, variants, _oracle, _Scenes(), batch_size=4, max_new_tokens=8, meteor=False,
                         blind_generate=lambda items, scenes, n: ["blind says " + it["id"] for it in items])
    assert texts2["blind"] == ["blind says " + it["id"] for it in ITEMS]
    assert texts2["semantic@700"] == texts["semantic@700"]
    flat = flat_metrics(results)
    assert flat["semantic_at_700.scanrefer.acc_at_0.25"] == 1.0
    paths = write_report(results, tmp_path / "eval.md", tmp_path / "eval")
    md = (tmp_path / "eval.md").read_text()
    for title in ("Table 2", "Table 3", "Table 4", "| semantic@700 | 7 | 100.0", "| random_object | 0 |"):
        assert title in md
    for p in paths[1:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_frequency_baseline_answers_the_train_prior_per_question_type(boxes):
    from proxy3d.eval.evaluate import frequency_predictions

    train = [{"task": "spatial_num", "question_type": "room_size_estimation", "answers": [a]} for a in ("20", "30.5", "90")]
    train += [{"task": "spatial_num", "question_type": "object_counting", "answers": [a]} for a in ("2", "2", "3", "4")]
    train += [{"task": "qa", "question_type": None, "answers": [a]} for a in ("brown", "white", "white", "black")]
    train += [{"task": "spatial_mc", "question_type": "object_rel_direction", "answers": [a]} for a in ("B", "A")]
    items = [{"task": "spatial_num", "question_type": "room_size_estimation"},
             {"task": "spatial_num", "question_type": "object_counting"},
             {"task": "spatial_num", "question_type": "object_size_estimation"},  # unseen type: the task's median
             {"task": "qa", "question_type": None}, {"task": "spatial_mc", "question_type": "object_rel_direction"},
             {"task": "grounding", "question_type": None}]
    assert frequency_predictions(items, train) == ["30.5", "2.5", "4", "white", "A", ""]
    # a missing question type read back from Parquet is NaN: the same group as None, not a type called "nan"
    mixed = [{"task": "qa", "question_type": float("nan"), "answers": ["one"]},
             {"task": "qa", "question_type": None, "answers": ["two"]}, {"task": "qa", "question_type": None, "answers": ["two"]}]
    assert frequency_predictions([{"task": "qa", "question_type": float("nan")}], mixed) == ["two"]
    v = Variant("frequency", kind="frequency", budget=0)
    results, texts = evaluate(ITEMS, boxes, [v], None, None, batch_size=4, max_new_tokens=8, meteor=False,
                              train_items=ITEMS)
    assert "scanrefer" not in results["frequency"]["benchmarks"] and "scanqa" in results["frequency"]["benchmarks"]
    with pytest.raises(ValueError, match="train split"):
        evaluate(ITEMS, boxes, [v], None, None, batch_size=4, max_new_tokens=8, meteor=False)


def test_variants_and_item_sampling():
    names = [v.name for v in build_variants([450, 700, 1000], ["blind", "random_object", "frequency", "global_kmeans"],
                                            "semantic", 700)]
    assert names == ["semantic@450", "semantic@700", "semantic@1000", "blind", "random_object", "frequency",
                     "global_kmeans@700"]
    with pytest.raises(ValueError, match="unknown baseline 'oracle'"):
        build_variants([700], ["oracle"], "semantic", 700)
    items = [{"task": "qa" if i % 2 else "grounding", "i": i} for i in range(40)]
    a, b = select_items(items, 5, seed=0), select_items(items, 5, seed=0)
    assert a == b and len(a) == 10 and [x["i"] for x in a] == sorted(x["i"] for x in a)
    assert np.all([sum(x["task"] == t for x in a) == 5 for t in ("qa", "grounding")])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny checkpoint written by the model package (feature_dim 8)."""
    from proxy3d.config import ModelParams
    from proxy3d.model import text_tokenizer as tt
    from proxy3d.model.build import create_model, save_model_dir

    tok = tt.build_text_tokenizer([it["question"] + " " + it["answers"][0] for it in ITEMS] * 20, 400)
    return save_model_dir(create_model(ModelParams(), tok, None, feature_dim=8), tok,
                          tmp_path_factory.mktemp("ckpt") / "stage4", {"model": {"preset": "tiny"}})


def _proxies(scene_id: str, k: int, seed: int = 0):
    from proxy3d.types import Proxies

    rng = np.random.default_rng(seed)
    return Proxies(scene_id, rng.normal(size=(k, 8)).astype(np.float32), rng.uniform(0, 3, (k, 3)).astype(np.float32),
                   np.arange(k, dtype=np.int32) % 3, np.zeros(k, np.int32), np.ones(k, np.int32))


def test_evaluate_drives_the_real_model_api(tiny_checkpoint, boxes):
    """An untrained tiny checkpoint through proxy3d.model.api: shapes, batching and scoring fit together."""
    from proxy3d.eval.evaluate import model_generate_fn
    from proxy3d.model.inputs import SceneInput

    class Scenes:
        def get(self, v, scene_id):
            return SceneInput.empty(scene_id) if v.blind else SceneInput.from_proxies(_proxies(scene_id, v.budget // 100))

    gen = model_generate_fn(tiny_checkpoint, "cpu", batch_size=4)
    variants = [Variant("semantic@700", budget=700), Variant("blind", blind=True, budget=0)]
    results, texts = evaluate(ITEMS, boxes, variants, gen, Scenes(), batch_size=4, max_new_tokens=4, meteor=False)
    assert len(texts["blind"]) == len(ITEMS) and all(isinstance(t, str) for t in texts["blind"])
    assert results["semantic@700"]["tokens"] == 7.0
    assert 0.0 <= results["semantic@700"]["benchmarks"]["scanrefer"]["acc@0.25"] <= 1.0


def test_evaluate_stage_writes_metrics_report_and_plots(tiny_checkpoint, tmp_path):
    """The stage's run() on SpaceSpan-layout Parquet, an objects table, proxies and the checkpoint."""
    import json

    import pandas as pd

    from proxy3d.config import EvaluateParams, ProxiesParams
    from proxy3d.stages.evaluate import run
    from proxy3d.tracking import NullTracker
    from proxy3d.types import Triplets, save_proxies, save_triplets

    val = spacespan_partition(tmp_path / "spacespan", 4, "val")
    val.mkdir(parents=True)
    pd.DataFrame(ITEMS).to_parquet(val / "part-00000.parquet")
    objs = pd.read_csv(BOXES).assign(split="val")
    objs.to_parquet(tmp_path / "spacespan" / "objects.parquet")
    for sid in objs.scene_id.unique():  # one patch per proxy, at its centre: identifiers are boxed by those points
        px = dataclasses.replace(_proxies(sid, 40), members=np.arange(40, dtype=np.int32))
        save_proxies(px, tmp_path / "proxies" / f"{sid}.safetensors")
        save_triplets(Triplets(sid, np.zeros((40, 8), np.float32), px.centers, np.full(40, -1, np.int32),
                               np.ones(40, bool), np.zeros(40, np.int16), {}), tmp_path / "triplets" / f"{sid}.safetensors")

    class Recorder(NullTracker):
        logged: list[str] = []

        def log_artifact(self, path, artifact_path=None) -> None:
            self.logged.append(Path(path).name)

    p = EvaluateParams(batch_size=4, max_new_tokens=4, budgets=[], baselines=["blind", "random_object"], meteor=False)
    args = (p, ProxiesParams(budget=700), tiny_checkpoint, tmp_path / "spacespan", tmp_path / "proxies",
            tmp_path / "triplets", tmp_path / "reports" / "eval.md", tmp_path / "reports" / "eval", Recorder(),
            tmp_path / "reports" / "eval_predictions.json")
    with pytest.raises(FileNotFoundError, match="train_blind"):  # the blind row needs the blind-trained model
        run(*args, tmp_path / "no_blind_model")
    assert not (tmp_path / "reports" / "eval.md").exists()
    out = run(*args, tiny_checkpoint)
    assert out["items"] == len(ITEMS) and set(out["variants"]) == {"semantic@700", "blind", "random_object"}
    assert out["variants"]["semantic@700"]["tokens"] == 40.0
    json.dumps(out, allow_nan=False)  # strict JSON: NaN became null
    assert "| blind | 0 |" in (tmp_path / "reports" / "eval.md").read_text()
    assert "`evaluate.box_source: proxies`" in (tmp_path / "reports" / "eval.md").read_text()
    assert sorted(f.name for f in (tmp_path / "reports" / "eval").iterdir()) == ["per_task.png", "score_vs_tokens.png"]
    # the VSI-Bench numeric probe: two chairs to count, the table's and the bed's size; model and blind, bootstrapped
    assert out["vsi_probe"]["items"] == 3 and set(out["vsi_probe"]["variants"]) == {"semantic@700", "blind"}
    rows = out["comparisons"]["semantic@700 vs blind"]
    assert rows["vsi_probe.object_size_estimation_MRA"]["n_items"] == 2 and rows["vsi_probe.overall"]["n_items"] == 3
    preds = json.loads((tmp_path / "reports" / "eval_predictions.json").read_text())
    assert {"eval.md", "eval_predictions.json", "per_task.png"} <= set(Recorder.logged)  # MLflow gets the predictions
    assert [r["id"] for r in preds["vsi_probe/blind"]] == ["probe/scene0000_00/counting/0", "probe/scene0000_00/size/0",
                                                           "probe/scene0001_00/size/0"]


def _many(n: int = 40) -> list[dict]:
    """n grounding items, n SQA3D items and n VSI-Bench items of two question types (abs distance, rel distance)."""
    out = []
    for i in range(n):
        out.append(_item(f"g{i}", "grounding", ["<OBJ002>"], [2]))
        out.append(_item(f"s{i}", "situated_qa", ["left"], [], "Which way is the door?"))
        out.append(_item(f"v{i}", "spatial_num" if i % 2 else "spatial_mc", ["4.0" if i % 2 else "B"], [],
                         qt="object_abs_distance" if i % 2 else "object_rel_distance"))
    return out


def test_paired_bootstrap_point_estimates_are_the_benchmark_metrics(boxes):
    """Each row's model and baseline scores equal score_pairs' metrics (VSI-Bench ``overall`` too); a clearly
    better model gets an interval above 0, identical predictions a zero-width one, and the same seed the same rows."""
    from proxy3d.eval.significance import compare, comparison_metrics, paired_bootstrap

    items = _many()
    rng = np.random.default_rng(0)
    good = [it["answers"][0] if rng.random() < 0.8 else "1" for it in items]
    bad = [it["answers"][0] if rng.random() < 0.3 else "1" for it in items]
    res = paired_bootstrap(items, good, bad, boxes, resamples=500, seed=0)
    sa, sb = score_pairs(items, good, boxes, meteor=False), score_pairs(items, bad, boxes, meteor=False)
    for key, r in res.items():
        bench, metric = key.split(".", 1)
        assert r["a"] == pytest.approx(sa[bench][metric]) and r["b"] == pytest.approx(sb[bench][metric])
        assert r["diff"] == pytest.approx(r["a"] - r["b"]) and r["lo"] <= r["hi"]
    assert {"scanrefer.acc@0.25", "sqa3d.em", "vsibench.overall", "vsibench.object_abs_distance_MRA"} <= set(res)
    assert res["scanrefer.acc@0.25"]["n_items"] == 40 and res["vsibench.overall"]["n_items"] == 40
    assert res["vsibench.object_abs_distance_MRA"]["n_items"] == 20  # the items of that question type
    for key in ("scanrefer.acc@0.25", "sqa3d.em", "vsibench.overall"):
        assert res[key]["lo"] > 0 and res[key]["p_not_better"] < 0.05
    same = paired_bootstrap(items, good, good, boxes, resamples=200)
    assert all(r["diff"] == 0 and r["lo"] == 0 and r["hi"] == 0 for r in same.values())
    assert paired_bootstrap(items, good, bad, boxes, resamples=500, seed=0) == res
    assert paired_bootstrap(items, good, bad, boxes, resamples=0) == {}
    with pytest.raises(ValueError, match="one prediction per item"):
        paired_bootstrap(items, good[:-1], bad, boxes)
    # compare(): a baseline limited to some tasks is scored on those items only
    cmp = compare(items, {"m": good, "frequency": bad, "blind": bad}, "m", ["blind", "frequency", "absent"], boxes,
                  200, 0, {"frequency": ("situated_qa",)})
    assert set(cmp) == {"m vs blind", "m vs frequency"} and set(cmp["m vs frequency"]) == {"sqa3d.em"}
    assert "cmp.m_vs_blind.scanrefer.acc_at_0.25.lo" in comparison_metrics(cmp)


def test_report_has_the_comparison_table(tmp_path, boxes):
    from proxy3d.eval.significance import compare

    items = _many(10)
    variants = [Variant("semantic@700", budget=700), Variant("blind", blind=True, budget=0)]
    results, texts = evaluate(items, boxes, variants, _oracle, _Scenes(), batch_size=8, max_new_tokens=8, meteor=False)
    cmp = compare(items, texts, "semantic@700", ["blind"], boxes, 300, 0)
    write_report(results, tmp_path / "eval.md", tmp_path / "eval", comparisons=cmp)
    md = (tmp_path / "eval.md").read_text()
    assert "## Model vs baselines (paired bootstrap over items)" in md
    assert "| semantic@700 vs blind | scanrefer.acc@0.25 | 100.0 | 0.0 | **+100.0** | [+100.0, +100.0] | 10 |" in md


def test_spatial_probe_asks_every_val_object_with_the_writers_answers() -> None:
    """Templated VSI-Bench numeric questions: per scene and kind at most ``per_kind`` (seeded), answers from the
    geometry (size in cm of the longest side, closest-point distance, counts), VSI question types for scoring."""
    from proxy3d.eval.evaluate import spatial_probe_items
    from proxy3d.train.data import SceneObjects

    labels = ["floor", "chair", "chair", "table", "lamp", "bed"]
    centers = np.array([[2, 2, 0], [1, 1, .5], [3, 1, .5], [2, 3, .5], [0.5, 3, 1], [4, 4, .5]], np.float32)
    sizes = np.array([[4, 5, .1], [.5, .5, 1], [.5, .5, 1], [2, 1, .8], [.3, .3, 1.7], [2, 1.5, .6]], np.float32)
    o = SceneObjects("scene0005_00", np.arange(6), labels, np.arange(6), centers, sizes)
    items = spatial_probe_items({"scene0005_00": o}, per_kind=2, seed=0)
    kinds = [it["question_type"] for it in items]
    assert kinds.count("object_counting") == 1 and kinds.count("room_size_estimation") == 1
    assert kinds.count("object_size_estimation") == 2 and kinds.count("object_abs_distance") == 2  # capped at 2
    assert len({it["id"] for it in items}) == len(items) and all(it["task"] == "spatial_num" for it in items)
    by = {it["question_type"]: it for it in items}
    assert by["object_counting"]["answers"] == ["2"] and "chair" in by["object_counting"]["question"]
    assert by["room_size_estimation"]["answers"] == ["20.0"]
    size = {"table": "200", "lamp": "170", "bed": "200"}
    assert all(it["answers"] == [size[next(k for k in size if k in it["question"])]]
               for it in items if it["question_type"] == "object_size_estimation")
    assert items == spatial_probe_items({"scene0005_00": o}, per_kind=2, seed=0)
    assert len(spatial_probe_items({"scene0005_00": o}, per_kind=50, seed=0)) == 1 + 1 + 3 + 3  # all of them
