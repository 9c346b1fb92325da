"""Scoring of the stage-1/2 probes (no model: answers are given)."""

from __future__ import annotations

import pytest

from proxy3d.model.inputs import SceneInput
from proxy3d.train.probes import Probe, score


def test_probe_scores_against_their_baselines() -> None:
    s = SceneInput.empty("scene0000_00")
    probes = [
        Probe("what", s, "q", label="chair"),
        Probe("which", s, "q", targets=(3,)),
        Probe("closest", s, "q", targets=(4,), chance=0.25),
        Probe("far", s, "q", value=2.0),
        Probe("where", s, "q", xy=(1.0, 2.0)),
        Probe("where", s, "q", xy=(3.0, 0.5)),
    ]
    answers = [("<OBJ001> chair", [1]), ("chair <OBJ003>", [3]), ("<OBJ002> closest <OBJ005>", [2, 5]),
               ("<OBJ001> <OBJ002> 2.1", [1, 2]), ("<OBJ007> (1.30, 1.60, 0.40)", [7]), ("<OBJ008> (3.00, 1.20, 0.50)", [8])]
    out = score(probes, answers, median_distance=4.0, median_xy=(2.9, 0.9))
    assert out["what_is_acc"] == out["grounding_acc"] == 1.0 and out["closest_acc"] == 0.0
    assert out["closest_chance"] == 0.25
    assert out["distance_mra"] == pytest.approx(0.9)  # |2.1 - 2| / 2 = 0.05 < 1 - θ for θ <= 0.9 (9 of 10)
    assert out["distance_mra_median_baseline"] == 0.0  # 4 m for 2 m is off by 100%
    assert out["where_acc"] == 0.5  # second answer: y off by 0.7 m
    assert out["where_median_baseline"] == 0.5  # (2.9, 0.9) is within 0.5 m of (3.0, 0.5) only


def test_stage1_probes_report_their_trivial_baselines() -> None:
    """Always the most frequent train label for "What is", a random object of the scene for "Which object"."""
    import numpy as np

    scene = SceneInput.from_objects(np.array([3, 5, 8, 9]), np.zeros(4, np.int64), np.zeros((4, 3), np.float32))
    probes = [Probe("what", scene, "q", label="wall"), Probe("what", scene, "q", label="chair"),
              Probe("which", scene, "q", targets=(3,)), Probe("which", scene, "q", targets=(5, 8))]
    out = score(probes, [("", [])] * 4, majority_label="Wall")
    assert out["what_is_majority_baseline"] == 0.5 and out["what_is_acc"] == 0.0
    assert out["grounding_chance"] == pytest.approx((1 / 4 + 2 / 4) / 2)


def test_real_proxy_probes_ask_the_stage1_questions_on_each_scenes_proxies() -> None:
    import numpy as np

    from proxy3d.train.data import SceneObjects
    from proxy3d.train.probes import real_proxy_probes, stage1_probes

    val = {sid: SceneObjects(sid, np.array([4, 9]), ["chair", "lamp"], np.array([3, 5]),
                             np.array([[0, 0, 0.5], [2, 1, 1.0]], np.float32), np.ones((2, 3), np.float32))
           for sid in ("scene0001_00", "scene0002_00")}
    proxies = SceneInput(np.zeros((7, 3), np.float32), np.array([4] * 5 + [9, -1]), np.array([3] * 5 + [5, -1]),
                         np.zeros((7, 16), np.float32), "scene0001_00")
    real = real_proxy_probes(val, lambda sid: proxies if sid == "scene0001_00" else None)
    plain = [p for p in stage1_probes(val) if p.scene.scene_id == "scene0001_00"]
    assert [(p.kind, p.prompt, p.label, p.targets) for p in real] == [(p.kind, p.prompt, p.label, p.targets) for p in plain]
    assert len(plain) == 4 and all(p.scene is proxies for p in real)  # what + which for both objects; scene 2 has none
