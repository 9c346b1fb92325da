"""The evaluation loop through the real model API (``proxy3d.model.api``) on an untrained tiny checkpoint: the
texts it scores are the model's answers to each item in item order, greedy and repeatable, and the scores are the
benchmark metrics of exactly those texts. (No caption items: scan2cap's CIDEr starts a JVM per scoring.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from proxy3d.eval.evaluate import Variant, evaluate, model_generate_fn
from proxy3d.eval.records import load_gt_boxes
from proxy3d.eval.tasks import parse_objects, score_pairs

BOXES = Path(__file__).parent / "fixtures" / "predictions" / "objects.csv"
SCENES = ("scene0000_00", "scene0001_00")


def _item(i, task, answers, targets=(), question="q", qt=None, scene="scene0000_00"):
    return {"id": str(i), "source": "x", "task": task, "scene_id": scene, "question": question,
            "answers": list(answers), "target_object_ids": list(targets), "question_type": qt}


# scene 1 first and scenes interleaved: evaluate batches by scene, so item order != generation order
ITEMS = [
    _item(0, "qa", ["bed"], [0], "What is in the corner?", scene="scene0001_00"),
    _item(1, "grounding", ["<OBJ000>"], [0], "the brown chair."),
    _item(2, "grounding", ["<OBJ002>"], [2], "the wide table."),
    _item(3, "grounding", ["<OBJ000>"], [0], "the bed.", scene="scene0001_00"),
    _item(4, "multi_grounding", ["<OBJ000> <OBJ001>"], [0, 1], "all the chairs."),
    _item(5, "qa", ["brown"], [0], "What color is the chair?"),
    _item(6, "situated_qa", ["left"], [], "Which way is the door?"),
    _item(7, "grounding", ["<OBJ001>"], [1], "the chair on the right."),
    _item(8, "spatial_num", ["4.0"], [], "How far apart are the chairs?", qt="object_abs_distance"),
    _item(9, "spatial_mc", ["B"], [], "Which is closer? A. chair B. table", qt="object_rel_distance"),
    _item(10, "id_align", ["chair <OBJ001>"], [1], "What is <OBJ001>?"),
]
BENCHMARKS = {"scanrefer", "multi3drefer", "scanqa", "sqa3d", "vsibench", "alignment"}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Generation on one thread: on two busy cores, two threads spin against each other (12 s instead of 2 s)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny checkpoint written by the model package (feature_dim 8)."""
    from proxy3d.config import ModelParams
    from proxy3d.model import text_tokenizer as tt
    from proxy3d.model.build import create_model, save_model_dir

    tok = tt.build_text_tokenizer([it["question"] + " " + it["answers"][0] for it in ITEMS] * 20, 400)
    return save_model_dir(create_model(ModelParams(), tok, None, feature_dim=8), tok,
                          tmp_path_factory.mktemp("ckpt") / "stage4", {"model": {"preset": "tiny"}})


class _Scenes:
    """Seven random proxies per real scene, each scene its own (a scene mix-up changes the answers)."""

    def get(self, v: Variant, scene_id: str):
        from proxy3d.model.inputs import SceneInput
        from proxy3d.types import Proxies

        if v.blind:
            return SceneInput.empty(scene_id)
        rng = np.random.default_rng(SCENES.index(scene_id))
        k = v.budget // 100
        return SceneInput.from_proxies(Proxies(
            scene_id, rng.normal(size=(k, 8)).astype(np.float32), rng.uniform(0, 3, (k, 3)).astype(np.float32),
            np.arange(k, dtype=np.int32) % 3, np.zeros(k, np.int32), np.ones(k, np.int32)))


def _same(a: dict, b: dict) -> bool:
    """Equal metric dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(x) and math.isnan(b[k])) if isinstance(x, float) and math.isnan(x) else x == pytest.approx(b[k])
        for k, x in a.items())


def test_evaluate_scores_the_models_own_answers_in_item_order(checkpoint: Path) -> None:
    from proxy3d.model.api import load_bundle

    boxes = load_gt_boxes(BOXES, set(SCENES))
    variants = [Variant("semantic@700", budget=700), Variant("blind", blind=True, budget=0)]
    gen = model_generate_fn(checkpoint, "cpu", batch_size=4)
    results, texts = evaluate(ITEMS, boxes, variants, gen, _Scenes(), batch_size=4, max_new_tokens=4, meteor=False)
    assert results["semantic@700"]["tokens"] == 7.0 and results["blind"]["tokens"] == 0.0

    bundle = load_bundle(checkpoint, "cpu", batch_size=len(ITEMS))
    for v in variants:
        direct = bundle.generate_with_ids(ITEMS, [_Scenes().get(v, it["scene_id"]) for it in ITEMS], 4)
        # each item's text is the model's answer to that item about its own scene: repeatable (greedy), whatever
        # the batching (here all items at once, in item order; evaluate went by scene, four at a time)
        assert texts[v.name] == [t for t, _ in direct], v.name
        # identifiers read from the text are those generated as identifier tokens
        assert [parse_objects(t) for t, _ in direct] == [list(dict.fromkeys(ids)) for _, ids in direct]
        # the scores are the benchmark metrics of these texts, for every benchmark the items belong to
        bench = results[v.name]["benchmarks"]
        assert set(bench) == BENCHMARKS
        expected = score_pairs(ITEMS, texts[v.name], boxes, meteor=False)
        assert all(_same(bench[b], expected[b]) for b in BENCHMARKS), v.name
        # the fixture's boxes do not overlap: a grounding answer is right iff its first identifier is the target's
        grounding = [(it, t) for it, t in zip(ITEMS, texts[v.name], strict=True) if it["task"] == "grounding"]
        hits = [parse_objects(t)[:1] == it["target_object_ids"] for it, t in grounding]
        assert bench["scanrefer"]["acc@0.25"] == pytest.approx(np.mean(hits)) and bench["scanrefer"]["n_items"] == 4
