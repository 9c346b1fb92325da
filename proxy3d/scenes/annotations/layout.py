"""Layout-only :class:`SynthScene` objects (no rendering): inputs for the writers' tests and the SpaceSpan
scale benchmark, where only object tables and camera positions matter.

Objects are placed on a grid so boxes never overlap; some small objects stand on furniture.
"""

from __future__ import annotations

import numpy as np

from proxy3d.scenes.annotations.geometry import scene_rng
from proxy3d.scenes.spec import SynthObject, SynthScene
from proxy3d.vocab import category_id

FURNITURE = ["table", "chair", "bed", "desk", "couch", "cabinet", "bookshelf", "dresser", "nightstand", "armchair"]
SMALL = ["lamp", "book", "cup", "plant", "box", "bottle", "laptop", "pillow", "bowl", "clock"]
COLOURS = ["red", "blue", "green", "white", "black", "brown", "yellow", "grey", "wooden"]


def layout_scene(scene_id: str, split: str, n_objects: int, seed: int, frames: int = 32) -> SynthScene:
    """A room of ``n_objects`` (< 100) objects: walls/floor (ids 0-1), furniture on a grid, small objects on it."""
    rng = scene_rng(seed, scene_id, "layout")
    room = (float(rng.uniform(4.0, 7.0)), float(rng.uniform(4.0, 7.0)), 2.6)
    objects = [
        SynthObject(0, "floor", category_id("floor"), np.array([room[0] / 2, room[1] / 2, 0.0, room[0], room[1], 0.02]),
                    structural=True),
        SynthObject(1, "wall", category_id("wall"), np.array([0.0, room[1] / 2, 1.3, 0.1, room[1], 2.6]),
                    structural=True, support=-1),
    ]
    n_furn = max(2, (n_objects - 2) * 2 // 3)
    cells = [(i, j) for i in range(6) for j in range(6)]
    order = rng.permutation(len(cells))
    for k in range(min(n_furn, len(cells))):
        i, j = cells[order[k]]
        label = FURNITURE[int(rng.integers(len(FURNITURE)))]
        size = rng.uniform([0.4, 0.4, 0.4], [0.6, 0.6, 1.0])
        centre = [(i + 0.5) * room[0] / 6, (j + 0.5) * room[1] / 6, size[2] / 2]
        objects.append(SynthObject(len(objects), label, category_id(label), np.array([*centre, *size]),
                                   color=COLOURS[int(rng.integers(len(COLOURS)))]))
    furniture = objects[2:]
    while len(objects) < n_objects:
        base = furniture[int(rng.integers(len(furniture)))]
        label = SMALL[int(rng.integers(len(SMALL)))]
        size = rng.uniform([0.05, 0.05, 0.05], [0.15, 0.15, 0.3])
        top = base.aabb[2] + base.aabb[5] / 2
        centre = [base.aabb[0], base.aabb[1], top + size[2] / 2]
        objects.append(SynthObject(len(objects), label, category_id(label), np.array([*centre, *size]),
                                   color=COLOURS[int(rng.integers(len(COLOURS)))], support=base.object_id))
    t = np.linspace(0, 2 * np.pi, frames, endpoint=False)
    cams = np.stack([room[0] / 2 + 0.3 * room[0] * np.cos(t), room[1] / 2 + 0.3 * room[1] * np.sin(t),
                     np.full(frames, 1.5)], axis=1)
    first_seen = {o.object_id: int(rng.integers(frames)) for o in objects}
    return SynthScene(scene_id, split, room, objects, cams, first_seen)
