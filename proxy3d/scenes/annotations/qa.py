"""ScanQA, SQA3D and MMScan QA records for one synthetic scene, from its true geometry.

Field names follow the public files exactly:
- ScanQA (``ScanQA_v1.0_{split}.json``): question_id ("{split}-{scene}-{n}"), scene_id, question, answers,
  object_ids, object_names.
- SQA3D questions (``v1_balanced_questions_{split}_scannetv2.json``: {"questions": [...]}) with question_id,
  scene_id, situation, alternative_situation, question; annotations
  (``v1_balanced_sqa_annotations_{split}_scannetv2.json``: {"annotations": [...]}) with question_id, scene_id,
  answers [{answer, answer_confidence, answer_id}], position {x, y, z}, rotation {_w, _x, _y, _z},
  answer_type, question_type. The agent faces the rotated +x axis.
- MMScan QA: sub_class, scan_id, question, answers, object_ids, object_names, input_bboxes_id, input_bboxes,
  output_bboxes_id, output_bboxes, ID ("{sub_class}__{scan_id}__{n}").
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from proxy3d.scenes.annotations.geometry import (
    count_word,
    movable,
    nearest,
    scene_rng,
    side,
    support_name,
    yaw_quaternion,
)
from proxy3d.scenes.spec import SynthObject, SynthScene


def _unique(objs: list[SynthObject]) -> list[SynthObject]:
    counts = Counter(o.label for o in objs)
    return [o for o in objs if counts[o.label] == 1]


def scanqa(scene: SynthScene) -> list[dict[str, Any]]:
    """Colour, counting, support ("what is on the X") and neighbour questions."""
    objs = movable(scene)
    by_id = {o.object_id: o for o in scene.objects}
    qa: list[tuple[str, list[str], list[SynthObject]]] = []
    for o in _unique(objs):
        if o.color:
            qa.append((f"What color is the {o.label} on the {support_name(o, by_id)}?", [o.color], [o]))
        near = nearest(o, objs)
        if near is not None:
            qa.append((f"What is next to the {o.label}?", [near.label], [near]))
    groups: dict[str, list[SynthObject]] = defaultdict(list)
    for o in objs:
        groups[o.label].append(o)
    for label in sorted(groups):
        n = len(groups[label])
        qa.append((f"How many {label}s are in the room?", [count_word(n), str(n)], groups[label]))
    supported: dict[int, list[SynthObject]] = defaultdict(list)
    for o in objs:
        if o.support is not None and o.support in by_id:
            supported[o.support].append(o)
    for sid in sorted(supported):
        base = by_id[sid]
        if any(b.label == base.label for b in objs if b.object_id != sid):
            continue
        items = supported[sid]
        qa.append((f"What is placed on the {base.label}?", [" and ".join(sorted({i.label for i in items}))], items))
    return [
        {
            "question_id": f"{scene.split}-{scene.scene_id}-{i}",
            "scene_id": scene.scene_id,
            "question": q,
            "answers": answers,
            "object_ids": [o.object_id for o in targets],
            "object_names": [o.label for o in targets],
        }
        for i, (q, answers, targets) in enumerate(qa)
    ]


def _standing_points(scene: SynthScene, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    if len(scene.camera_positions):
        idx = np.linspace(0, len(scene.camera_positions) - 1, k).round().astype(int)
        return [np.array([*scene.camera_positions[i][:2], 0.0]) for i in idx]
    x, y, _ = scene.room_size
    return [np.array([rng.uniform(0.2, x - 0.2), rng.uniform(0.2, y - 0.2), 0.0]) for _ in range(k)]


def sqa3d(scene: SynthScene, seed: int, scene_index: int, situations: int = 3
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Situated questions (questions file records, annotations file records) for ``situations`` poses."""
    rng = scene_rng(seed, scene.scene_id, "sqa3d")
    objs = movable(scene)
    if len(objs) < 2:
        return [], []
    counts = Counter(o.label for o in objs)
    questions, annotations = [], []
    n = 0
    for pos in _standing_points(scene, situations, rng):
        facing = objs[int(rng.integers(len(objs)))]
        dx, dy = np.asarray(facing.aabb[:2], float) - pos[:2]
        yaw = math.atan2(dy, dx)
        situation = f"I am standing in the room facing the {facing.label}."
        others = [o for o in _unique(objs) if o.object_id != facing.object_id]
        items: list[tuple[str, str, str]] = [("What am I facing?", facing.label, "other")]
        if others:
            t = others[int(rng.integers(len(others)))]
            items.append((f"Is the {t.label} on my left or right?", side(pos, facing.aabb[:3], t.aabb[:3]), "other"))
        label = sorted(counts)[int(rng.integers(len(counts)))]
        items.append((f"How many {label}s are there in the room?", str(counts[label]), "number"))
        for q, a, answer_type in items:
            qid = scene_index * 100_000 + n
            n += 1
            questions.append({
                "question_id": qid,
                "scene_id": scene.scene_id,
                "situation": situation,
                "alternative_situation": [f"I just turned to look at the {facing.label}."],
                "question": q,
            })
            annotations.append({
                "question_id": qid,
                "scene_id": scene.scene_id,
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": 1}],
                "position": {"x": float(pos[0]), "y": float(pos[1]), "z": 0.0},
                "rotation": yaw_quaternion(yaw),
                "answer_type": answer_type,
                "question_type": "N/A",
            })
    return questions, annotations


def mmscan_qa(scene: SynthScene, seed: int, absent_label: str = "piano") -> list[dict[str, Any]]:
    """MMScan-style single-object attribute QA (colour, height) and existence QA."""
    objs = movable(scene)
    rows: list[tuple[str, str, str, list[SynthObject]]] = []
    for o in _unique(objs):
        if o.color:
            rows.append(("QA_Single_Attribute", f"What color is the {o.label}?", f"The {o.label} is {o.color}.", [o]))
        rows.append(("QA_Single_Attribute", f"How tall is the {o.label}?",
                     f"The {o.label} is about {float(o.aabb[5]):.1f} meters tall.", [o]))
    labels = sorted({o.label for o in objs})
    for label in labels[:3]:
        rows.append(("QA_Single_EQ", f"Is there a {label} in the room?", "Yes, there is.",
                     [o for o in objs if o.label == label]))
    if absent_label not in labels:
        rows.append(("QA_Single_EQ", f"Is there a {absent_label} in the room?", "No, there isn't.", []))
    out = []
    for i, (sub, q, a, targets) in enumerate(rows):
        ids = [o.object_id for o in targets]
        out.append({
            "sub_class": sub,
            "scan_id": scene.scene_id,
            "question": q,
            "answers": [a],
            "object_ids": ids,
            "object_names": [o.label for o in targets],
            "input_bboxes_id": ids if sub == "QA_Single_Attribute" else None,
            "input_bboxes": None,
            "output_bboxes_id": None,
            "output_bboxes": None,
            "ID": f"{sub}__{scene.scene_id}__{i}",
        })
    return out
