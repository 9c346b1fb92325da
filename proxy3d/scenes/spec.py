"""What the synthetic world knows about a scene, for generating native-format annotations.

The world generator (``proxy3d.scenes.synth``) builds one :class:`SynthScene` per scene; the annotation
writers (``proxy3d.scenes.annotations``) turn them into ScanRefer/ScanQA/... files. Coordinates are in the
axis-aligned world frame (metres, z up, floor at z = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SynthObject:
    object_id: int  # ScanNet objectId (0-based); identifier token <OBJ{object_id:03d}>
    label: str  # category name from the 213-category vocabulary
    category: int  # category id (line index in resources/categories.txt)
    aabb: np.ndarray  # (6,) centre xyz + size xyz, world frame
    yaw: float = 0.0  # facing direction (cos yaw, sin yaw), radians; the generator uses multiples of pi/2,
    # so the oriented box equals ``aabb`` (local width/depth swap when it faces +-x; see <scene>_gt_boxes.json)
    color: str = ""  # colour name used by the renderer ("red", "wooden", ...; synth.catalog.PALETTE)
    support: int | None = None  # objectId this object stands on; None = floor; -1 = wall-mounted/structural
    structural: bool = False  # wall, floor, window, door: part of the room


@dataclass
class SynthScene:
    scene_id: str
    split: str  # "train" | "val"
    room_size: tuple[float, float, float]  # x, y, z extent in metres (room spans [0, x] x [0, y] x [0, z])
    objects: list[SynthObject] = field(default_factory=list)
    camera_positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (N, 3) per frame, world
    first_seen: dict[int, int] = field(default_factory=dict)  # objectId -> first frame index it is visible in
