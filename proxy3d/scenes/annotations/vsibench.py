"""VSI-Bench records for one synthetic scene, from its true geometry and the camera's first sightings.

Fields as in the public parquet (``nyu-visionx/VSI-Bench``): id (int64), dataset, scene_name, question_type,
question, options (list of str or null), ground_truth (str). Multiple-choice options read "A. left" and the
ground truth is the letter; numeric answers are plain numbers as strings. ``route_plan`` is not generated.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from proxy3d.scenes.annotations.geometry import box_distance, longest_side_cm, movable, scene_rng, side
from proxy3d.scenes.spec import SynthObject, SynthScene

LETTERS = "ABCD"


# question texts of the numeric tasks, shared with the curriculum's templated spatial questions (proxy3d.train.data)
def counting_question(label: str) -> str:
    return f"How many {label}(s) are in this room?"


def abs_distance_question(a: str, b: str) -> str:
    return (f"Measuring from the closest point of each object, what is the direct distance between the {a} and the "
            f"{b} (in meters)?")


def size_question(label: str) -> str:
    return (f"What is the length of the longest dimension (length, width, or height) of the {label}, measured in "
            "centimeters?")


def rel_distance_question(target: str, candidates: list[str]) -> str:
    return ("Measuring from the closest point of each object, which of these objects (" + ", ".join(candidates)
            + f") is the closest to the {target}?")


def rel_direction_question(standing: str, facing: str, target: str) -> str:
    return f"If I am standing by the {standing} and facing the {facing}, is the {target} to my left or the right?"


ROOM_SIZE_QUESTION = ("What is the size of this room (in square meters)? If multiple rooms are shown, estimate the "
                      "size of the combined space.")


def mc_options(options: list[str], correct: int) -> tuple[list[str], str]:
    """("A. left", "B. right", ...), and the correct option's letter."""
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)], LETTERS[correct]


def vsibench(scene: SynthScene, seed: int, scene_index: int) -> list[dict[str, Any]]:
    rng = scene_rng(seed, scene.scene_id, "vsibench")
    objs = movable(scene)
    counts = Counter(o.label for o in objs)
    uniq = [o for o in objs if counts[o.label] == 1]
    rows: list[tuple[str, str, list[str] | None, str]] = []
    for label in sorted(label for label, n in counts.items() if n >= 2):
        rows.append(("object_counting", counting_question(label), None, str(counts[label])))
    for a, b in list(itertools.combinations(uniq, 2))[:2]:
        rows.append(("object_abs_distance", abs_distance_question(a.label, b.label), None, f"{box_distance(a, b):.1f}"))
    for o in uniq[:3]:
        rows.append(("object_size_estimation", size_question(o.label), None, str(longest_side_cm(o))))
    x, y, _ = scene.room_size
    rows.append(("room_size_estimation", ROOM_SIZE_QUESTION, None, f"{x * y:.1f}"))
    if len(uniq) >= 5:
        pick = [uniq[i] for i in rng.permutation(len(uniq))[:5]]
        target, cands = pick[0], pick[1:]
        dists = [round(box_distance(target, c), 6) for c in cands]
        if dists.count(min(dists)) == 1:
            opts, gt = mc_options([c.label for c in cands], dists.index(min(dists)))
            rows.append(("object_rel_distance", rel_distance_question(target.label, [c.label for c in cands]), opts, gt))
    if len(uniq) >= 3:
        a, b, c = (uniq[i] for i in rng.permutation(len(uniq))[:3])
        answer = side(a.aabb[:3], b.aabb[:3], c.aabb[:3])
        opts, gt = mc_options(["left", "right"], 0 if answer == "left" else 1)
        rows.append(("object_rel_direction_easy", rel_direction_question(a.label, b.label, c.label), opts, gt))
    rows.extend(_appearance(uniq, scene, rng))
    return [
        {"id": scene_index * 1000 + i, "dataset": "scannet", "scene_name": scene.scene_id, "question_type": qt,
         "question": q, "options": opts, "ground_truth": gt}
        for i, (qt, q, opts, gt) in enumerate(rows)
    ]


def _appearance(uniq: list[SynthObject], scene: SynthScene, rng: Any) -> list[tuple[str, str, list[str], str]]:
    seen = [o for o in uniq if o.object_id in scene.first_seen]
    by_frame: dict[int, SynthObject] = {}
    for o in sorted(seen, key=lambda o: o.object_id):
        by_frame.setdefault(scene.first_seen[o.object_id], o)
    if len(by_frame) < 4:
        return []
    frames = sorted(by_frame)
    chosen = sorted(rng.choice(len(frames), 4, replace=False).tolist())
    order = [by_frame[frames[i]].label for i in chosen]
    asked = [order[i] for i in rng.permutation(4)]
    wrong = [list(p) for p in itertools.permutations(order) if list(p) != order]
    picks = [wrong[i] for i in rng.choice(len(wrong), 3, replace=False)]
    correct = int(rng.integers(4))
    picks.insert(correct, order)
    opts, gt = mc_options([", ".join(p) for p in picks], correct)
    q = ("What will be the first-time appearance order of the following categories in the video: "
         + ", ".join(asked) + "?")
    return [("obj_appearance_order", q, opts, gt)]
