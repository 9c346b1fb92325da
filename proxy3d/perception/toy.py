"""A tiny analytic world for tests and benchmarks: boxes in a room, ray-cast exactly with numpy.

Gives frames with exact depth, instance maps, poses and intrinsics, plus the ground-truth boxes, without
the dataset. Two surface styles make two visually different categories: ``checker`` (red/white 3D
checkerboard) and ``stripes`` (blue/yellow stripes along z). Camera convention: OpenCV (x right, y down,
z forward), pose = camera-to-world, world z up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from proxy3d.types import Frame, SceneObject

STYLES = {"checker": ((200, 30, 30), (240, 240, 240)), "stripes": ((30, 60, 200), (230, 210, 40))}
ROOM_COLOURS = ((150, 150, 150), (120, 110, 100))
ROOM = np.array([5.0, 4.0, 2.6])  # the room spans [0, ROOM]


@dataclass
class ToyBox:
    object_id: int
    lo: np.ndarray  # (3,) min corner
    hi: np.ndarray  # (3,) max corner
    style: str = "checker"
    category: int = -1
    label: str = "box"

    def scene_object(self) -> SceneObject:
        return SceneObject(self.object_id, self.label, self.category,
                           np.concatenate([(self.lo + self.hi) / 2, self.hi - self.lo]))


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world pose of an OpenCV camera at ``eye`` looking at ``target`` (world z up)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], 1)
    pose[:3, 3] = eye
    return pose


def _slab(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray/box entry and exit distances: dirs (M, 3) -> t_near (M,), t_far (M,)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1, t2 = (lo - origin) * inv, (hi - origin) * inv
    t1, t2 = np.nan_to_num(t1, nan=-np.inf), np.nan_to_num(t2, nan=np.inf)
    return np.minimum(t1, t2).max(1), np.maximum(t1, t2).min(1)


def _shade(points: np.ndarray, style: str | None) -> np.ndarray:
    """Surface colour (M, 3) uint8 of world points by style (None = room)."""
    if style == "stripes":
        phase = (np.floor(points[:, 2] / 0.06).astype(np.int64) % 2).astype(bool)
        a, b = STYLES["stripes"]
    elif style == "checker":
        phase = (np.floor(points / 0.08).astype(np.int64).sum(1) % 2).astype(bool)
        a, b = STYLES["checker"]
    else:  # room: checkered floor, plain walls
        phase = (np.floor(points[:, :2] / 0.5).astype(np.int64).sum(1) % 2).astype(bool) | (points[:, 2] > 1e-3)
        a, b = ROOM_COLOURS
    return np.where(phase[:, None], np.array(a, np.uint8), np.array(b, np.uint8))


def render(boxes: list[ToyBox], room: np.ndarray, pose: np.ndarray, K: np.ndarray, size: tuple[int, int],
           index: int = 0) -> Frame:
    """Ray-cast one frame. room: (3,) extent (room spans [0, room]); size: (H, W). Depth = camera z (metres)."""
    h, w = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    dirs = d_cam @ pose[:3, :3].T  # t along dirs = camera depth, since d_cam has z = 1
    origin = pose[:3, 3]
    t = _slab(origin, dirs, np.zeros(3), room)[1]  # inside the room: exit distance
    inst = np.full(len(dirs), -1, np.int32)
    style = np.full(len(dirs), -1, np.int64)
    for k, b in enumerate(boxes):
        tn, tf = _slab(origin, dirs, b.lo, b.hi)
        hit = (tn <= tf) & (tn > 1e-6) & (tn < t)
        t[hit], inst[hit], style[hit] = tn[hit], b.object_id, k
    pts = origin + dirs * t[:, None]
    rgb = np.zeros((len(dirs), 3), np.uint8)
    rgb[style < 0] = _shade(pts[style < 0], None)
    for k, b in enumerate(boxes):
        rgb[style == k] = _shade(pts[style == k], b.style)
    return Frame(rgb=rgb.reshape(h, w, 3), depth=t.reshape(h, w).astype(np.float32), pose=pose, K=K,
                 instance=inst.reshape(h, w), index=index)


def toy_boxes(n_boxes: int = 6, seed: int = 0) -> list[ToyBox]:
    """``n_boxes`` boxes of alternating styles (category 0 = checker, 1 = stripes) on the floor of the room."""
    rng = np.random.default_rng(seed)
    slots = [(1.0, 1.0), (2.5, 0.9), (4.0, 1.1), (1.1, 3.0), (2.5, 3.1), (3.9, 2.9), (2.5, 2.0), (1.8, 2.0)]
    boxes = []
    for i in range(n_boxes):
        cx, cy = slots[i % len(slots)]
        half = rng.uniform([0.2, 0.2, 0.2], [0.45, 0.45, 0.6])
        lo = np.array([cx - half[0], cy - half[1], 0.0])
        boxes.append(ToyBox(i, lo, lo + 2 * half, "checker" if i % 2 == 0 else "stripes",
                            category=i % 2, label="checker box" if i % 2 == 0 else "striped box"))
    return boxes


def toy_frames(boxes: list[ToyBox], n_frames: int = 8, size: tuple[int, int] = (120, 160)) -> Iterator[Frame]:
    """Stream frames of cameras circling the room's centre (rendered one at a time)."""
    h, w = size
    K = np.array([[0.9 * w, 0, w / 2 - 0.5], [0, 0.9 * w, h / 2 - 0.5], [0, 0, 1]])
    centre = np.array([2.5, 2.0, 0.4])
    for i in range(n_frames):
        a = 2 * np.pi * i / max(n_frames, 1) + 0.3
        eye = centre + np.array([1.4 * np.cos(a), 1.2 * np.sin(a), 1.1])
        target = centre + np.array([-1.0 * np.cos(a), -0.8 * np.sin(a), -0.4])
        yield render(boxes, ROOM, look_at(eye, target), K, size, index=i)


def toy_scene(n_frames: int = 8, size: tuple[int, int] = (120, 160), seed: int = 0, n_boxes: int = 6
              ) -> tuple[list[ToyBox], list[Frame]]:
    """A room (5 x 4 x 2.6 m) with ``n_boxes`` boxes and ``n_frames`` frames (a list) around its centre."""
    boxes = toy_boxes(n_boxes, seed)
    return boxes, list(toy_frames(boxes, n_frames, size))
