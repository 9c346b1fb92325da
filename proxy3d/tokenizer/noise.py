"""Label-noise model imitating a real 2D segmenter lifted to patches (``proxies.label_noise``).

Applied to ground-truth patch labels, in this order, with a generator seeded by ``seed`` and the scene id:

1. **Small objects merge into their support.** An object is small when its box volume is below
   ``small_volume`` m³. Its support is estimated from the ground-truth boxes as the object *directly
   below*: among the other objects whose xy-extent contains the small object's xy-centre and whose top
   is at most 5 cm above the small object's bottom, the one with the highest top (e.g. the table under
   a cup, else the floor). A ``merge_small_share`` share of small objects that have a support take its
   label (a segmenter that does not separate a cup from its table).
2. **Boundary bleeding.** A patch with a *different* labelled object within ``boundary_radius`` metres
   takes the label of the nearest such patch with probability ``boundary_share`` (masks leaking over
   object borders); unlabelled patches can be captured the same way.
3. **Scattered misses.** Every labelled patch independently loses its label (becomes -1) with
   probability ``drop_share`` (holes in masks). The tokenizer voxel-groups these, so they cannot form
   room-sized proxies.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from scipy.spatial import cKDTree


def support_of(objects: list[dict[str, Any]]) -> dict[int, int]:
    """Object id -> id of the object directly below it (see module docstring); objects with none omitted."""
    out: dict[int, int] = {}
    boxes = {int(o["object_id"]): np.asarray(o["aabb"], dtype=np.float64) for o in objects}
    for oid, b in boxes.items():
        bottom = b[2] - b[5] / 2
        best, best_top = None, -np.inf
        for sid, s in boxes.items():
            if sid == oid:
                continue
            top = s[2] + s[5] / 2
            inside = (np.abs(b[:2] - s[:2]) <= s[3:5] / 2).all()
            if inside and top <= bottom + 0.05 and top > best_top:
                best, best_top = sid, top
        if best is not None:
            out[oid] = best
    return out


def noisy_labels(points: np.ndarray, labels: np.ndarray, objects: list[dict[str, Any]], p: Any,
                 scene_id: str = "") -> np.ndarray:
    """Noisy copy of ``labels``. points: (N, 3) finite; labels: (N,) int (-1 none); p: LabelNoiseParams."""
    rng = np.random.default_rng([int(p.seed), zlib.crc32(scene_id.encode())])
    out = np.asarray(labels, dtype=np.int64).copy()
    # 1. small objects merge into their support
    support = support_of(objects)
    small = [int(o["object_id"]) for o in objects
             if float(np.prod(np.asarray(o["aabb"], dtype=np.float64)[3:])) < p.small_volume
             and int(o["object_id"]) in support]
    merged = [o for o, r in zip(small, rng.random(len(small)), strict=True) if r < p.merge_small_share]
    for o in merged:
        target, seen = support[o], {o}
        while target in merged and target in support and target not in seen:  # chains: follow to a kept support
            seen.add(target)
            target = support[target]
        out[out == o] = target
    # 2. boundary bleeding: nearest patch of another labelled object within the radius
    N = out.size
    if N > 1 and p.boundary_share > 0 and p.boundary_radius > 0:
        k = min(16, N)
        dist, nbr = cKDTree(points).query(points, k=k, distance_upper_bound=p.boundary_radius)
        nbr = nbr.reshape(N, k)
        found = np.isfinite(dist.reshape(N, k))
        nb_lab = np.where(found, out[np.minimum(nbr, N - 1)], -1)
        other = found & (nb_lab >= 0) & (nb_lab != out[:, None])
        has = other.any(1)
        first = other.argmax(1)  # neighbours are sorted by distance
        flip = has & (rng.random(N) < p.boundary_share)
        out = np.where(flip, nb_lab[np.arange(N), first], out)
    # 3. scattered misses
    drop = (out >= 0) & (rng.random(N) < p.drop_share)
    out[drop] = -1
    return out.astype(np.int32)
