"""The geometry behind the annotation and VSI-Bench answers, against values worked out by hand (the annotation tests
compare the writers with the curriculum, which share this code, so a wrong formula would pass there).
Boxes are (cx, cy, cz, sx, sy, sz): centre and full side lengths, metres, z up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxy3d.scenes.annotations.geometry import aabb_distance, side, size_cm


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 0, 1, 1, 1], [3, 0, 0, 1, 1, 1], 2.0),                  # faces at x=0.5 and x=2.5
    ([0, 0, 0, 1, 1, 1], [3, 4, 0, 1, 1, 1], math.sqrt(2 ** 2 + 3 ** 2)),  # corner to corner: gaps 2 (x), 3 (y)
    ([0, 0, 0, 2, 2, 2], [0, 0, 4, 1, 1, 4], 1.0),                  # z: top at 1, the other's bottom at 4 - 2
    ([0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 1, 1], 0.0),                  # touching faces
    ([0, 0, 0, 2, 2, 2], [0.5, 0.5, 0, 1, 1, 1], 0.0),              # overlapping
    ([1, 1, 0, 0.5, 0.5, 1], [3, 1, 0, 1.5, 0.5, 1], 1.0),          # x: 1.25 to 2.25
])
def test_aabb_distance_is_the_gap_between_the_closest_points(a, b, expected) -> None:
    assert aabb_distance(a, b) == pytest.approx(expected)
    assert aabb_distance(b, a) == pytest.approx(expected)


@pytest.mark.parametrize("standing, facing, target, expected", [
    ((0, 0), (1, 0), (0, 1), "left"),    # looking along +x (z up): +y is on the left
    ((0, 0), (1, 0), (0, -1), "right"),
    ((0, 0), (0, 1), (1, 0), "right"),   # looking along +y: +x is on the right
    ((0, 0), (0, 1), (-1, 5), "left"),
    ((2, 2), (2, 0), (3, 1), "left"),    # looking along -y from (2, 2): +x is on the left
    ((2, 2), (0, 2), (1, 1), "left"),    # looking along -x: -y is on the left
    ((2, 2), (0, 2), (5, 4), "right"),   # behind and to the +y side: right
])
def test_side_is_left_or_right_for_someone_facing_an_object(standing, facing, target, expected) -> None:
    lift = lambda xy, z: np.array([*xy, z], float)  # noqa: E731 - heights play no part
    assert side(lift(standing, 0.0), lift(facing, 1.5), lift(target, 0.4)) == expected


def test_size_cm_is_the_longest_side_in_whole_centimetres() -> None:
    assert size_cm([0.5, 1.234, 0.2]) == 123
    assert size_cm(np.array([0.3, 0.3, 1.7], np.float32)) == 170
    assert size_cm([2.0, 0.016, 0.0]) == 200 and size_cm([0.004, 0.0, 0.0]) == 0


def test_spatial_probe_distance_size_and_room_answers_are_the_hand_computed_ones() -> None:
    """Every VSI-Bench numeric probe question about a hand-made room and its answer: closest-point distances
    between the uniquely labelled objects (1 decimal), their longest side in cm, the floor area in m2."""
    from proxy3d.eval.evaluate import spatial_probe_items
    from proxy3d.train.data import SceneObjects

    labels = ["floor", "chair", "chair", "table", "lamp", "bed"]
    centers = np.array([[2.5, 2.5, -0.05], [1, 1, .5], [3, 1, .5], [2, 3, .4], [0, 3, .85], [5, 6, .3]], np.float32)
    sizes = np.array([[5, 4, .1], [.5, .5, 1], [.5, .5, 1], [2, 1, .8], [.4, .4, 1.7], [2, 2, .6]], np.float32)
    # table x 1..3, y 2.5..3.5; lamp x -0.2..0.2, y 2.8..3.2; bed x 4..6, y 5..7 (z ranges overlap)
    items = spatial_probe_items({"scene0005_00": SceneObjects("scene0005_00", np.arange(6), labels, np.arange(6),
                                                              centers, sizes)}, per_kind=50, seed=0)
    answers: dict[str, dict] = {}
    for it in items:
        named = frozenset(lab for lab in ("table", "lamp", "bed", "chair") if lab in it["question"])
        answers.setdefault(it["question_type"], {})[named] = it["answers"]
    assert answers["object_abs_distance"] == {
        frozenset({"table", "lamp"}): ["0.8"],                                  # x: 1 - 0.2
        frozenset({"table", "bed"}): [f"{math.sqrt(1.0 ** 2 + 1.5 ** 2):.1f}"],  # x 3..4, y 3.5..5: 1.8
        frozenset({"lamp", "bed"}): [f"{math.sqrt(3.8 ** 2 + 1.8 ** 2):.1f}"],   # x 0.2..4, y 3.2..5: 4.2
    }
    assert answers["object_abs_distance"][frozenset({"table", "bed"})] == ["1.8"]
    assert answers["object_abs_distance"][frozenset({"lamp", "bed"})] == ["4.2"]
    assert answers["object_size_estimation"] == {frozenset({"table"}): ["200"], frozenset({"lamp"}): ["170"],
                                                 frozenset({"bed"}): ["200"]}
    assert answers["room_size_estimation"] == {frozenset(): ["20.0"]}
    assert answers["object_counting"] == {frozenset({"chair"}): ["2"]}
