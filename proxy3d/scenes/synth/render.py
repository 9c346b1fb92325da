"""Vectorised CPU ray caster for worlds made of axis-aligned boxes.

Each pixel's ray is tested against every box (slab test) with numpy; a box is only tested on the
pixels inside the screen rectangle its corners project to, so small objects cost little. Colour is the
box's base colour times a category pattern (stripes, checker, wood grain, ...) times Lambert shading.
"""

from __future__ import annotations

import numpy as np

from proxy3d.scenes.synth.catalog import PATTERNS
from proxy3d.scenes.synth.linalg import apply, unit

NEAR = 0.05
_LIGHT = unit(np.array([0.35, 0.25, 0.9])).astype(np.float32)


def intrinsics(width: int, height: int) -> np.ndarray:
    """(3, 3) pinhole intrinsics with a ~64 degree horizontal field of view, principal point at the centre."""
    f = 0.8 * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _rect(corners_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (u0, u1, v0, v1) covering the projection of 8 camera-frame corners; None if unseen."""
    z = corners_cam[:, 2]
    if np.all(z <= NEAR):
        return None
    if np.any(z <= NEAR):
        return 0, width, 0, height
    u = K[0, 0] * corners_cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * corners_cam[:, 1] / z + K[1, 2]
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, width)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, u1, v0, v1


def _pattern(kind: np.ndarray, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Brightness factor per pixel for pattern ids ``kind``; u, v: face coordinates (m), z: height (m)."""
    out = np.ones_like(u)
    for i, name in enumerate(PATTERNS):
        m = kind == i
        if not m.any() or name == "plain":
            continue
        a, b, h = u[m], v[m], z[m]
        if name == "stripes":
            val = 0.78 + 0.22 * (np.floor(a / 0.06) % 2)
        elif name == "checker":
            val = 0.74 + 0.26 * ((np.floor(a / 0.1) + np.floor(b / 0.1)) % 2)
        elif name == "grain":  # wavy wood grain from a triangle wave (no sin: CPU-independent results)
            wave = np.abs((b / 0.9) % 1 - 0.5) * 0.12
            val = 0.86 + 0.28 * np.abs(((a + wave) / 0.09) % 1 - 0.5)
        elif name == "dots":
            da, db = (a / 0.08) % 1 - 0.5, (b / 0.08) % 1 - 0.5
            val = 1.0 - 0.4 * (da * da + db * db < 0.09)
        elif name == "grid":
            fa, fb = (a / 0.2) % 1, (b / 0.2) % 1
            val = 1.0 - 0.45 * ((fa < 0.08) | (fb < 0.08))
        else:  # bands: horizontal bands in height
            val = 0.72 + 0.28 * (np.floor(h / 0.07) % 2)
        out[m] = val
    return out


def _room_hits(room: np.ndarray, o: np.ndarray, inv: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Where rays from ``o`` inside the box [0, room] leave it: z-depth (H, W) and face (H, W) int in
    0..5 = (x-lo, x-hi, y-lo, y-hi, z-lo, z-hi)."""
    t = []
    for a in range(3):
        t_lo, t_hi = (0.0 - o[a]) * inv[a], (room[a] - o[a]) * inv[a]
        t.append(np.where(inv[a] > 0, t_hi, t_lo))
    tt = np.stack(t)
    axis = tt.argmin(axis=0)
    side = np.take_along_axis(np.stack(inv), axis[None], 0)[0] > 0
    return np.take_along_axis(tt, axis[None], 0)[0], 2 * axis + side


def render(lo: np.ndarray, hi: np.ndarray, instance: np.ndarray, rgb: np.ndarray, pattern: np.ndarray,
           pose: np.ndarray, K: np.ndarray, width: int, height: int,
           room: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one frame.

    lo, hi: (B, 3) box corners (world); instance: (B,) int32 id written to the instance map; rgb: (B, 3)
    base colours 0..1; pattern: (B,) pattern ids; pose: (4, 4) camera-to-world (OpenCV); K: (3, 3).
    ``room = (size (3,), faces (6,) box indices)``: the camera is inside the box [0, size] whose six faces
    are the given boxes (walls, floor, ceiling); they are hit with one cheap exit test instead of six slab
    tests. Returns rgb (H, W, 3) uint8, depth (H, W) float32 z-depth in metres (0 = no hit) and
    instance (H, W) int32 (-1 = no object).
    """
    R, o = pose[:3, :3].astype(np.float32), pose[:3, 3].astype(np.float32)
    us, vs = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    d_cam = np.stack([(us - K[0, 2]) / K[0, 0], (vs - K[1, 2]) / K[1, 1], np.ones_like(us)], axis=-1)
    d = apply(R, d_cam).astype(np.float32)  # (H, W, 3) world ray directions with unit z in camera
    inv = [np.ascontiguousarray(1.0 / np.where(np.abs(d[..., a]) < 1e-12, 1e-12, d[..., a])) for a in range(3)]
    zbuf = np.full((height, width), np.inf, dtype=np.float32)
    ibuf = np.full((height, width), -1, dtype=np.int32)  # box index
    skip: set[int] = set()
    if room is not None:
        size, faces = room
        zbuf, face = _room_hits(np.asarray(size, np.float32), o, inv)
        ibuf = np.asarray(faces, np.int32)[face]
        skip = {int(f) for f in faces}
    w2c = np.eye(4)
    w2c[:3, :3] = R.T
    w2c[:3, 3] = -apply(w2c[:3, :3], o.astype(np.float64))
    for b in range(lo.shape[0]):
        if b in skip:
            continue
        corners = np.stack(np.meshgrid(*zip(lo[b], hi[b], strict=True), indexing="ij"), -1).reshape(-1, 3)
        rect = _rect(apply(w2c, corners), K, width, height)
        if rect is None:
            continue
        u0, u1, v0, v1 = rect
        tn = tf = None
        for a in range(3):
            ia = inv[a][v0:v1, u0:u1]
            t1, t2 = (np.float32(lo[b, a]) - o[a]) * ia, (np.float32(hi[b, a]) - o[a]) * ia
            near, far = np.minimum(t1, t2), np.maximum(t1, t2)
            tn = near if tn is None else np.maximum(tn, near)
            tf = far if tf is None else np.minimum(tf, far)
        zb = zbuf[v0:v1, u0:u1]
        hit = (tn <= tf) & (tn > NEAR) & (tn < zb)
        zb[hit] = tn[hit]
        ibuf[v0:v1, u0:u1][hit] = b
    seen = ibuf >= 0
    depth = np.where(seen, zbuf, 0.0).astype(np.float32)
    inst = np.where(seen, instance[np.maximum(ibuf, 0)], -1).astype(np.int32)
    color = np.zeros((height, width, 3), dtype=np.float32)
    bi = ibuf[seen]
    p = o + depth[seen][:, None] * d[seen]  # (P, 3) hit points
    q = p - lo[bi].astype(np.float32)
    size = (hi[bi] - lo[bi]).astype(np.float32)
    dist = np.concatenate([np.abs(q), np.abs(size - q)], axis=1)  # (P, 6) distance to each face
    face = dist.argmin(axis=1)
    axis = face % 3
    facing = _LIGHT[axis] * np.where(face < 3, -1.0, 1.0).astype(np.float32)  # normal . light
    shade = 0.5 + 0.5 * np.clip(facing, 0.0, None) + 0.08 * (axis == 1)
    ua = np.where(axis == 0, q[:, 1], q[:, 0])
    va = np.where(axis == 2, q[:, 1], q[:, 2])
    tex = _pattern(pattern[bi], ua, va, p[:, 2])
    color[seen] = rgb[bi] * (tex * shade)[:, None]
    return (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8), depth, inst
