"""Procedural rooms: walls, floor, door and windows, furniture and small objects, and a camera path.

A room spans ``[0, X] x [0, Y]`` with the floor at ``z = 0`` (world = axis-aligned frame, metres, z up).
Every object is a box whose faces are parallel to the walls: ``yaw`` is the direction the object faces,
``(cos yaw, sin yaw)``, a multiple of pi/2, and ``aabb`` is its world-axis-aligned box (equal to the
oriented box). Objects never interpenetrate (touching is allowed: a book touches the desk it lies on) and
never contain a camera position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from proxy3d import vocab
from proxy3d.scenes.spec import SynthObject, SynthScene
from proxy3d.scenes.synth import catalog
from proxy3d.scenes.synth.catalog import FLOOR, MOUNTED, TOP, WALL, Kind
from proxy3d.scenes.synth.linalg import unit

EPS = 1e-6
WALL_GAP = 0.05  # furniture stands this far from a wall, so it never touches wall-mounted things
CAMERA_CLEARANCE = np.array([0.6, 0.6, 0.3])  # metres (x, y, z) kept free around every camera position
ID_STREAM = 1  # the object-id permutation's random stream: np.random.default_rng([seed, ID_STREAM])


@dataclass
class World:
    """A scene plus what the renderer and the exporter need.

    boxes_lo/boxes_hi: (B, 3) float64 world box corners of every rendered box (objects + ceiling);
    box_instance: (B,) int32 objectId (-1 = ceiling, not an annotated object); box_rgb: (B, 3) float32 0..1;
    box_pattern: (B,) int32 index into catalog.PATTERNS; poses: (F, 4, 4) float64 camera-to-world (OpenCV
    camera: x right, y down, z forward); axis_alignment: (4, 4) float64, maps the scan frame to the world.
    """

    scene: SynthScene
    boxes_lo: np.ndarray
    boxes_hi: np.ndarray
    box_instance: np.ndarray
    box_rgb: np.ndarray
    box_pattern: np.ndarray
    poses: np.ndarray
    axis_alignment: np.ndarray
    room_faces: tuple[int, ...] = ()  # box index of the room's faces: x-lo, x-hi, y-lo, y-hi, z-lo, z-hi

    def render_args(self) -> dict:
        """Keyword arguments of :func:`proxy3d.scenes.synth.render.render` for this world."""
        return {"lo": self.boxes_lo, "hi": self.boxes_hi, "instance": self.box_instance, "rgb": self.box_rgb,
                "pattern": self.box_pattern, "room": (np.asarray(self.scene.room_size), self.room_faces)}


def overlaps(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """Whether box a interpenetrates boxes b (touching faces do not count). lo_b/hi_b: (M, 3) -> (M,) bool."""
    return np.all((lo_a < hi_b - EPS) & (lo_b < hi_a - EPS), axis=-1)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (4, 4) for an OpenCV camera at ``eye`` looking at ``target`` with z up."""
    f = unit(target - eye)
    right = unit(np.array([f[1], -f[0], 0.0]))  # f x z
    down = np.array([f[1] * right[2] - f[2] * right[1], f[2] * right[0] - f[0] * right[2],
                     f[0] * right[1] - f[1] * right[0]])  # f x right
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, f, eye
    return pose


def camera_path(room: tuple[float, float, float], frames: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, 4, 4) poses on an ellipse around the room centre, each looking across the room."""
    x, y, _ = room
    cx, cy = x / 2, y / 2
    a, b = max(cx - 1.1, 0.4), max(cy - 1.1, 0.4)
    start = rng.uniform(0, 2 * math.pi)
    sweep = rng.uniform(1.5, 1.9) * math.pi * (1 if rng.random() < 0.5 else -1)
    height = rng.uniform(1.35, 1.6)
    poses = []
    for k in range(frames):
        th = start + sweep * k / max(frames - 1, 1)
        eye = np.array([cx + a * math.cos(th), cy + b * math.sin(th), height + 0.08 * math.sin(3 * th)])
        target = np.array([cx - 0.5 * a * math.cos(th + 0.3), cy - 0.5 * b * math.sin(th + 0.3), 0.6])
        poses.append(look_at(eye, target))
    return np.stack(poses)


class _Builder:
    """Places objects one at a time, refusing overlaps and camera collisions."""

    def __init__(self, room: tuple[float, float, float], cams: np.ndarray, rng: np.random.Generator):
        self.room, self.cams, self.rng = room, cams, rng
        self.objects: list[SynthObject] = []
        self.patterns: list[str] = []
        self.lo = np.zeros((0, 3))
        self.hi = np.zeros((0, 3))
        self.reserved: list[tuple[np.ndarray, np.ndarray]] = []  # free space kept in front of the door

    def fits(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        if overlaps(lo, hi, self.lo, self.hi).any():
            return False
        if any(overlaps(lo, hi, r_lo[None], r_hi[None])[0] for r_lo, r_hi in self.reserved):
            return False
        near = np.all((self.cams > lo - CAMERA_CLEARANCE) & (self.cams < hi + CAMERA_CLEARANCE), axis=1)
        return not near.any()

    def add(self, label: str, lo: np.ndarray, hi: np.ndarray, color: str, pattern: str, *, yaw: float = 0.0,
            support: int | None = None, structural: bool = False) -> SynthObject:
        centre, size = (lo + hi) / 2, hi - lo
        obj = SynthObject(object_id=len(self.objects), label=label, category=vocab.category_id(label),
                          aabb=np.concatenate([centre, size]), yaw=yaw, color=color, support=support,
                          structural=structural)
        self.objects.append(obj)
        self.patterns.append(pattern)
        self.lo, self.hi = np.vstack([self.lo, lo]), np.vstack([self.hi, hi])
        return obj

    def pick(self, options: tuple) -> object:
        return options[int(self.rng.integers(len(options)))]

    # --- structure -------------------------------------------------------------------------------
    def structure(self) -> None:
        x, y, h = self.room
        s = catalog.STRUCTURE
        floor_c, wall_c = self.pick(s["floor"][0]), self.pick(s["wall"][0])
        # the floor is the room's inner area (as a ScanNet floor segment is), not the slab under the walls too:
        # its box is what the curriculum's templated "size of this room" answers read (train.data.spatial_pool)
        self.add("floor", np.array([0.0, 0.0, -0.05]), np.array([x, y, 0.0]), floor_c,
                 s["floor"][1], support=-1, structural=True)
        for lo, hi in (([-0.1, -0.1, 0], [0, y + 0.1, h]), ([x, -0.1, 0], [x + 0.1, y + 0.1, h]),
                       ([0, -0.1, 0], [x, 0, h]), ([0, y, 0], [x, y + 0.1, h])):
            self.add("wall", np.array(lo, float), np.array(hi, float), wall_c, s["wall"][1], support=-1,
                     structural=True)
        self.on_wall("door", (0.9, 0.04, 2.05), 0.0, reserve=0.9)
        for _ in range(int(self.rng.integers(1, 3))):
            size = (self.rng.uniform(0.8, 1.6), 0.03, self.rng.uniform(0.9, 1.2))
            self.on_wall("window", size, 0.9)

    def on_wall(self, label: str, size: tuple[float, float, float], z0: float, reserve: float = 0.0,
                tries: int = 50) -> SynthObject | None:
        """Put a thin thing flush on a random wall; structural if it is a door or window."""
        colors, pattern = catalog.STRUCTURE.get(label, (None, None))
        for _ in range(tries):
            lo, hi, yaw = self._against_wall(size, gap=0.0, z0=z0)
            if lo is None or not self.fits(lo, hi):
                continue
            if reserve:
                r_lo, r_hi = lo.copy(), hi.copy()
                axis = 0 if math.cos(yaw) ** 2 > 0.5 else 1
                step = reserve * (1 if (math.cos(yaw) if axis == 0 else math.sin(yaw)) > 0 else -1)
                (r_hi if step > 0 else r_lo)[axis] += step
                self.reserved.append((r_lo, r_hi))
            structural = label in catalog.STRUCTURE
            return self.add(label, lo, hi, self.pick(colors) if colors else "", pattern or "plain", yaw=yaw,
                            support=-1, structural=structural)
        return None

    def _against_wall(self, size: tuple[float, float, float], gap: float, z0: float):
        """Box of local ``size`` (width, depth, height) backed against a random wall, facing the room."""
        x, y, _ = self.room
        w, d, h = size
        wall = int(self.rng.integers(4))
        yaw = (0.0, math.pi, math.pi / 2, 3 * math.pi / 2)[wall]
        along = y if wall < 2 else x
        if w > along - 2 * WALL_GAP - 0.2:
            return None, None, yaw
        c = self.rng.uniform(WALL_GAP + 0.1 + w / 2, along - WALL_GAP - 0.1 - w / 2)
        if wall == 0:
            lo, hi = [gap, c - w / 2, z0], [gap + d, c + w / 2, z0 + h]
        elif wall == 1:
            lo, hi = [x - gap - d, c - w / 2, z0], [x - gap, c + w / 2, z0 + h]
        elif wall == 2:
            lo, hi = [c - w / 2, gap, z0], [c + w / 2, gap + d, z0 + h]
        else:
            lo, hi = [c - w / 2, y - gap - d, z0], [c + w / 2, y - gap, z0 + h]
        return np.array(lo, float), np.array(hi, float), yaw

    # --- contents --------------------------------------------------------------------------------
    def sample_kind(self, place: str) -> Kind:
        kinds = catalog.kinds_by_place(place)
        p = np.array([k.weight for k in kinds])
        return kinds[int(self.rng.choice(len(kinds), p=p / p.sum()))]

    def size_of(self, kind: Kind) -> tuple[float, float, float]:
        return tuple(float(self.rng.uniform(a, b)) for a, b in zip(kind.size_min, kind.size_max, strict=True))

    def try_place(self, place: str, kind: Kind | None = None) -> Kind | None:
        """Place one object of ``kind`` (default: a random kind of ``place``) at a random free spot; the kind
        placed, or None when the spot was taken."""
        kind = kind or self.sample_kind(place)
        w, d, h = self.size_of(kind)
        color = self.pick(kind.colors)
        if place == WALL:
            lo, hi, yaw = self._against_wall((w, d, h), gap=WALL_GAP, z0=0.0)
            support = None
        elif place == MOUNTED:
            lo, hi, yaw = self._against_wall((w, d, h), gap=0.0, z0=float(self.rng.uniform(1.0, 1.5)))
            support = -1
        elif place == FLOOR:
            yaw = float(self.rng.integers(4)) * math.pi / 2
            sx, sy = (d, w) if int(round(yaw / (math.pi / 2))) % 2 == 0 else (w, d)
            x, y, _ = self.room
            if sx > x - 2 * WALL_GAP or sy > y - 2 * WALL_GAP:
                return None
            cx = self.rng.uniform(WALL_GAP + sx / 2, x - WALL_GAP - sx / 2)
            cy = self.rng.uniform(WALL_GAP + sy / 2, y - WALL_GAP - sy / 2)
            lo, hi = np.array([cx - sx / 2, cy - sy / 2, 0.0]), np.array([cx + sx / 2, cy + sy / 2, h])
            support = None
        else:
            parents = [o for o in self.objects if self._supports(o)]
            if not parents:
                return None
            parent = self.pick(tuple(parents))
            p_lo, p_hi = parent.aabb[:3] - parent.aabb[3:] / 2, parent.aabb[:3] + parent.aabb[3:] / 2
            yaw = parent.yaw
            sx, sy = (d, w) if int(round(yaw / (math.pi / 2))) % 2 == 0 else (w, d)
            if sx > p_hi[0] - p_lo[0] or sy > p_hi[1] - p_lo[1]:
                return None
            cx = self.rng.uniform(p_lo[0] + sx / 2, p_hi[0] - sx / 2)
            cy = self.rng.uniform(p_lo[1] + sy / 2, p_hi[1] - sy / 2)
            lo = np.array([cx - sx / 2, cy - sy / 2, p_hi[2]])
            hi = np.array([cx + sx / 2, cy + sy / 2, p_hi[2] + h])
            support = parent.object_id
        if lo is None or hi[2] > self.room[2] - 0.05 or not self.fits(lo, hi):
            return None
        self.add(kind.label, lo, hi, color, kind.pattern, yaw=yaw, support=support)
        return kind

    def place_set(self, kind: Kind, room_left: int) -> None:
        """After one object of ``kind``: 1..copies-1 more of it (none when copies is 1; at most ``room_left``),
        each at its own free spot of the same kind of place (a set of chairs, books on desks, pictures on the
        walls). Without sets 9 in 10 labels that occur more than once occurred twice, and "How many" was
        answered by "2" (issue 6)."""
        extra = int(self.rng.integers(1, kind.copies)) if kind.copies > 1 else 0
        for _ in range(min(extra, room_left)):
            for _ in range(30):
                if self.try_place(kind.place, kind) is not None:
                    break

    def _supports(self, obj: SynthObject) -> bool:
        kind = next((k for k in catalog.KINDS if k.label == obj.label), None)
        return kind is not None and kind.supports


def renumber_objects(objects: list[SynthObject], rng: np.random.Generator) -> None:
    """Give ``objects`` (ids 0..n-1) the ids of a random permutation, in place, supports included.

    ScanNet numbers objects in annotation order, which says nothing about what an object is. Numbered in
    placement order, ours did (floor 0, walls 1-4, door 5, windows, then furniture, then small things on top),
    and a model that never saw the scene learned to ground descriptions from the text alone (issue 6: the
    blind baseline beat the model on ScanRefer). The permutation comes from its own random stream, so the
    geometry, the frames and every other draw of the generator are unchanged.
    """
    perm = rng.permutation(len(objects))
    for o in objects:
        o.object_id = int(perm[o.object_id])
        if o.support is not None and o.support >= 0:
            o.support = int(perm[o.support])


def build_world(scene_id: str, split: str, seed: int, frames: int = 32, min_objects: int = 10,
                max_objects: int = 24) -> World:
    """Generate one room deterministically from ``seed`` (same seed -> identical world)."""
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"synth.min_objects={min_objects}, synth.max_objects={max_objects}: need 1 <= min <= max")
    if frames < 1:
        raise ValueError(f"synth.frames={frames}: need at least 1 frame")
    rng = np.random.default_rng(seed)
    room = (round(float(rng.uniform(4.5, 7.5)), 2), round(float(rng.uniform(4.0, 6.5)), 2),
            round(float(rng.uniform(2.5, 3.0)), 2))
    poses = camera_path(room, frames, rng)
    b = _Builder(room, poses[:, :3, 3], rng)
    b.structure()
    n_structural = len(b.objects)
    target = int(rng.integers(min_objects, max_objects + 1))
    plan = [MOUNTED] * int(rng.integers(1, 3))
    n_furniture = max(3, round(0.5 * (target - len(plan))))
    plan += [WALL if rng.random() < 0.45 else FLOOR for _ in range(n_furniture)]
    plan += [TOP] * (target - len(plan))
    for place in plan:
        if len(b.objects) - n_structural >= target:
            break
        for _ in range(40):
            kind = b.try_place(place)
            if kind is not None:
                b.place_set(kind, target - (len(b.objects) - n_structural))
                break
    fill = (FLOOR, TOP, WALL)
    attempts = 0
    while len(b.objects) - n_structural < target and attempts < 2000:
        b.try_place(fill[attempts % 3])
        attempts += 1
    if len(b.objects) - n_structural < min_objects:
        raise RuntimeError(f"scene {scene_id!r} (seed {seed}): placed only {len(b.objects) - n_structural} objects, "
                           f"need synth.min_objects={min_objects}; lower it or use larger rooms")
    renumber_objects(b.objects, np.random.default_rng([seed, ID_STREAM]))
    scene = SynthScene(scene_id=scene_id, split=split, room_size=room,
                       objects=sorted(b.objects, key=lambda o: o.object_id), camera_positions=poses[:, :3, 3].copy())
    x, y, h = room
    lo = np.vstack([b.lo, [-0.1, -0.1, h]])
    hi = np.vstack([b.hi, [x + 0.1, y + 0.1, h + 0.05]])
    rgb = [catalog.PALETTE[o.color] for o in b.objects] + [catalog.PALETTE["white"]]
    patterns = [*b.patterns, "plain"]
    phi = float(rng.uniform(-math.pi, math.pi))
    align = np.eye(4)
    align[:2, :2] = [[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]]
    align[:3, 3] = [rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-0.2, 0.2)]
    return World(scene=scene, boxes_lo=lo, boxes_hi=hi,
                 box_instance=np.array([o.object_id for o in b.objects] + [-1], dtype=np.int32),
                 box_rgb=np.asarray(rgb, dtype=np.float32) / 255.0,
                 box_pattern=np.array([catalog.pattern_id(p) for p in patterns], dtype=np.int32),
                 poses=poses, axis_alignment=align, room_faces=(1, 2, 3, 4, 0, len(b.objects)))
