"""Geometry facts about a synthetic scene that annotation questions are built from.

All boxes are axis-aligned ``(cx, cy, cz, dx, dy, dz)`` in the world frame (metres, z up).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from proxy3d.scenes.spec import SynthObject, SynthScene

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def scene_rng(seed: int, scene_id: str, stream: str) -> np.random.Generator:
    """A generator that depends only on (seed, scene id, stream name): stable across runs and platforms."""
    return np.random.default_rng([seed, zlib.crc32(scene_id.encode()), zlib.crc32(stream.encode())])


def movable(scene: SynthScene) -> list[SynthObject]:
    """Objects questions are asked about: everything but floor and walls (ordered by object id)."""
    return sorted((o for o in scene.objects if o.label not in ("floor", "wall")), key=lambda o: o.object_id)


def box_distance(a: SynthObject, b: SynthObject) -> float:
    """Distance between the closest points of two axis-aligned boxes (0 when they touch or overlap)."""
    return aabb_distance(a.aabb, b.aabb)


def aabb_distance(a: Any, b: Any) -> float:
    """:func:`box_distance` of two (cx, cy, cz, sx, sy, sz) boxes."""
    total = 0.0
    for i in range(3):
        gap = abs(float(a[i]) - float(b[i])) - (float(a[i + 3]) + float(b[i + 3])) / 2.0
        if gap > 0:
            total += gap * gap
    return math.sqrt(total)


def center_distance(a: SynthObject, b: SynthObject) -> float:
    return float(np.linalg.norm(np.asarray(a.aabb[:3], float) - np.asarray(b.aabb[:3], float)))


def nearest(obj: SynthObject, others: list[SynthObject]) -> SynthObject | None:
    """The other object whose box is closest to ``obj`` (ties broken by object id)."""
    cands = [o for o in others if o.object_id != obj.object_id]
    if not cands:
        return None
    return min(cands, key=lambda o: (round(box_distance(obj, o), 6), o.object_id))


def side(standing: np.ndarray, facing: np.ndarray, target: np.ndarray) -> str:
    """'left' or 'right': where ``target`` lies for someone at ``standing`` looking towards ``facing``.

    Uses the sign of the z component of (facing - standing) x (target - standing); z is up, so a positive
    sign means counter-clockwise, i.e. to the left.
    """
    v = np.asarray(facing, float)[:2] - np.asarray(standing, float)[:2]
    w = np.asarray(target, float)[:2] - np.asarray(standing, float)[:2]
    return "left" if v[0] * w[1] - v[1] * w[0] > 0 else "right"


def yaw_quaternion(yaw: float) -> dict[str, float]:
    """SQA3D-style rotation dict for a rotation of ``yaw`` radians about z: {_w, _x, _y, _z}."""
    return {"_w": math.cos(yaw / 2.0), "_x": 0.0, "_y": 0.0, "_z": math.sin(yaw / 2.0)}


def longest_side_cm(obj: SynthObject) -> int:
    return size_cm(obj.aabb[3:])


def size_cm(size: Any) -> int:
    """The longest of a box's (sx, sy, sz) metres, in whole centimetres (VSI-Bench's object size answer)."""
    return int(round(float(np.max(size)) * 100.0))


def count_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def support_name(obj: SynthObject, by_id: dict[int, SynthObject]) -> str:
    """What ``obj`` stands on: another object's label, 'floor' or 'wall'."""
    if obj.support is None:
        return "floor"
    if obj.support < 0 or obj.support not in by_id:
        return "wall"
    return by_id[obj.support].label


def tokenize(text: str) -> list[str]:
    """ScanRefer-style tokens: lower-case words with punctuation as separate tokens."""
    out: list[str] = []
    for word in text.lower().split():
        core = word.rstrip(".,?!")
        if core:
            out.append(core)
        out.extend(ch for ch in word[len(core):])
    return out
