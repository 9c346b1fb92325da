"""bench/counting.py: the asked counts are the scenes' (and their subsets') true counts, and the scores are VSI-Bench's."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from proxy3d.config import ModelParams
from proxy3d.model import text_tokenizer as tt
from proxy3d.model.build import create_model, save_model_dir
from proxy3d.train.data import load_objects
from proxy3d.train.loop import TEMPLATE_TEXT
from proxy3d.vocab import categories

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_counting", ROOT / "bench" / "counting.py")
counting = importlib.util.module_from_spec(spec)
spec.loader.exec_module(counting)

LABELS = {"scene0000_00": ["chair", "chair", "chair", "table", "wall", "lamp"],
          "scene0001_00": ["chair", "sofa", "sofa", "floor"]}


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for sid, labels in LABELS.items():
        for i, label in enumerate(labels):
            rows.append({"scene_id": sid, "object_id": i, "label": label, "category": categories().index(label),
                         "center_x": float(i), "center_y": 0.5 * i, "center_z": 0.4, "size_x": 0.5, "size_y": 0.5,
                         "size_z": 0.8, "split": "train" if sid.endswith("0000_00") else "val"})
    path = tmp_path_factory.mktemp("counting") / "objects.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = tt.build_text_tokenizer([TEMPLATE_TEXT, " ".join(categories()), "How many (s) are in this room? 0 1 2 3"], 512)
    torch.manual_seed(0)
    mp = ModelParams()
    model = create_model(mp, tok, None)
    return save_model_dir(model, tok, tmp_path_factory.mktemp("counting") / "stage2", {"stage": 2, "model": asdict(mp)})


def test_every_label_is_asked_with_its_count_in_the_scene_and_each_subset(objects: Path) -> None:
    train = load_objects(objects)["train"]
    scenes, prompts, truth = counting.questions(train, subsets=3, seed=0)
    assert len(scenes) == len(prompts) == len(truth)
    whole = {p: t for p, t in zip(prompts[:3], truth[:3], strict=True)}  # the scene itself comes first
    assert whole == {"Question: How many chair(s) are in this room? Answer:": 3,
                     "Question: How many lamp(s) are in this room? Answer:": 1,
                     "Question: How many table(s) are in this room? Answer:": 1}
    assert not any("wall" in p for p in prompts)  # walls, floors and ceilings are not asked
    for scene, prompt, count in zip(scenes, prompts, truth, strict=True):
        label = prompt.split("How many ")[1].split("(s)")[0]
        cats = np.asarray(scene.category)
        assert int((cats == categories().index(label)).sum()) == count  # the count of the scene the model is shown
    assert len({id(s) for s in scenes}) == 4  # the scene and its 3 subsets
    assert sorted(t for p, t in zip(prompts, truth, strict=True) if "chair" in p) == [2, 3, 3, 3]  # a subset lost a chair


def test_scores_are_exact_accuracy_mra_and_correlation_with_unanswered_as_wrong() -> None:
    s = counting.scores(np.array([2.0, 3.0, np.nan, 1.0]), np.array([2.0, 4.0, 3.0, 1.0]))
    assert s["exact"] == pytest.approx(0.5)
    # MRA of 3 vs 4: |3-4|/4 = 0.25 < 1 - θ for θ in {0.50, ..., 0.70} -> 5/10; the missing answer scores 0
    assert s["mra"] == pytest.approx((1.0 + 0.5 + 0.0 + 1.0) / 4)
    assert s["exact_2plus"] == pytest.approx(1 / 3) and s["mra_2plus"] == pytest.approx(1.5 / 3)
    assert s["corr"] == pytest.approx(np.corrcoef([2.0, 3.0, 1.0], [2.0, 4.0, 1.0])[0, 1])
    assert np.isnan(counting.scores(np.full(3, 2.0), np.array([1.0, 2.0, 3.0]))["corr"])  # a constant answer


def test_a_run_prints_and_writes_model_and_prior_rows(checkpoint: Path, objects: Path, tmp_path: Path, capsys) -> None:
    out = counting.main(["--checkpoint", str(checkpoint), "--objects", str(objects), "--subsets", "1",
                         "--json", str(tmp_path / "c.json")])
    assert set(out) == {f"{s}/{k}" for s in ("train", "val") for k in ("model", "prior", "prior_2plus")}
    written = json.loads((tmp_path / "c.json").read_text())
    assert {k: pytest.approx(v, nan_ok=True) for k, v in out.items()} == written
    _, _, truth = counting.questions(load_objects(objects)["val"], 1, 0)
    t = np.asarray(truth)
    assert out["val/prior"]["exact"] == pytest.approx(np.mean(t == np.bincount(t).argmax()))
    printed = capsys.readouterr().out
    assert "val    model" in printed and "(VSI prior)" in printed
    with pytest.raises(SystemExit):
        counting.main(["--checkpoint", str(checkpoint), "--objects", str(objects), "--subsets", "-1"])
