"""Generated patch triplets of a box-world room, for tests and ``bench/tokenizer.py``.

A room (floor, four walls) holds furniture boxes standing on the floor, some carrying small objects on
top. Patches are points sampled on the visible surfaces (no box bottoms) with 1 cm noise, the label of
the surface's object, a feature = the object's random direction + noise, and a frame index; a share of
patches is unlabelled clutter. ``meta["objects"]`` lists the ground-truth boxes like the triplets stage.
"""

from __future__ import annotations

import numpy as np

from proxy3d.types import Triplets

ROOM = (6.0, 5.0, 2.8)


def _faces(box: np.ndarray, bottom: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Faces of an aabb (cx, cy, cz, dx, dy, dz) as (origin, edge u, edge v)."""
    c, d = box[:3], box[3:]
    lo = c - d / 2
    faces = []
    for axis in range(3):
        u_ax, v_ax = [a for a in range(3) if a != axis]
        u = np.zeros(3)
        v = np.zeros(3)
        u[u_ax], v[v_ax] = d[u_ax], d[v_ax]
        for side in (0, 1):
            if axis == 2 and side == 0 and not bottom:
                continue
            o = lo.copy()
            o[axis] += side * d[axis]
            faces.append((o, u, v))
    return faces


def room_objects(n_furniture: int, rng: np.random.Generator, small_share: float = 0.4) -> list[dict]:
    """Ground-truth objects: floor, 4 walls, non-overlapping furniture, small objects on furniture."""
    W, D, H = ROOM
    t = 0.1  # structural thickness: floor and walls are boxes outside the room's interior
    objs = [{"aabb": [W / 2, D / 2, -t / 2, W, D, t]},
            {"aabb": [W / 2, -t / 2, H / 2, W, t, H]}, {"aabb": [W / 2, D + t / 2, H / 2, W, t, H]},
            {"aabb": [-t / 2, D / 2, H / 2, t, D, H]}, {"aabb": [W + t / 2, D / 2, H / 2, t, D, H]}]
    placed: list[np.ndarray] = []
    tries = 0
    while len(placed) < n_furniture and tries < 2000:
        tries += 1
        size = rng.uniform([0.4, 0.4, 0.4], [1.6, 1.2, 1.2])
        cxy = rng.uniform(size[:2] / 2 + 0.05, np.array([W, D]) - size[:2] / 2 - 0.05)
        box = np.array([cxy[0], cxy[1], size[2] / 2, *size])
        if all((np.abs(box[:2] - b[:2]) >= (box[3:5] + b[3:5]) / 2 + 0.02).any() for b in placed):
            placed.append(box)
    for b in placed:
        objs.append({"aabb": b.tolist()})
        if rng.random() < small_share:
            s = rng.uniform(0.1, 0.25, 3)
            objs.append({"aabb": [b[0], b[1], b[5] + s[2] / 2, *s]})
    for i, o in enumerate(objs):
        o.update(object_id=i, label=f"object{i}", category=i % 213)
    return objs


def make_triplets(n_patches: int = 6000, channels: int = 64, n_furniture: int = 12, seed: int = 0,
                  clutter: float = 0.05, objects: list[dict] | None = None, scene_id: str = "synthetic") -> Triplets:
    """Triplets with ``n_patches`` patches sampled on the objects' visible faces (area-weighted).

    features: (L, C) float32; points: (L, 3) float32; labels: (L,) int32 object id (-1 for clutter).
    """
    rng = np.random.default_rng(seed)
    objs = objects if objects is not None else room_objects(n_furniture, rng)
    faces, owner = [], []
    for o in objs:
        for f in _faces(np.asarray(o["aabb"], dtype=np.float64), bottom=False):
            faces.append(f)
            owner.append(o["object_id"])
    area = np.array([np.linalg.norm(np.cross(u, v)) for _, u, v in faces])
    n_clutter = int(round(clutter * n_patches))
    n_obj = n_patches - n_clutter
    fi = rng.choice(len(faces), size=n_obj, p=area / area.sum())
    st = rng.random((n_obj, 2))
    origin, u, v = (np.stack([f[j] for f in faces]) for j in range(3))
    pts = origin[fi] + st[:, :1] * u[fi] + st[:, 1:] * v[fi]
    labels = np.asarray(owner, dtype=np.int32)[fi]
    clutter_pts = rng.uniform([0, 0, 0], ROOM, size=(n_clutter, 3))
    points = np.concatenate([pts, clutter_pts]) + rng.normal(0, 0.01, (n_patches, 3))
    labels = np.concatenate([labels, np.full(n_clutter, -1, dtype=np.int32)])
    perm = rng.permutation(n_patches)
    points, labels = points[perm], labels[perm]
    dirs = rng.normal(size=(len(objs) + 1, channels)).astype(np.float32)
    features = rng.standard_normal((n_patches, channels), dtype=np.float32)
    features *= np.float32(0.3)
    features += dirs[labels]
    return Triplets(scene_id=scene_id, features=features.astype(np.float32), points=points.astype(np.float32),
                    labels=labels, valid=np.ones(n_patches, dtype=bool),
                    frame=np.sort(rng.integers(0, 32, n_patches)).astype(np.int16),
                    instance_category={o["object_id"]: o["category"] for o in objs},
                    meta={"objects": objs})
