"""Fuse encoder features, point maps and masks into patch triplets (f, p, m) of one scene.

Per patch: f = the encoder feature, p = median (per axis) of the valid pixel points inside the patch,
m = the mask id with the largest area inside the patch, where "unannotated" (-1) competes as one more id
(ties go to the smaller id, so to -1: :func:`patch_labels`), valid = p has >= 1 valid pixel.
Frames stream in batches of ``perception.batch_size`` (a whole-scene geometry backend, ``vggt``, gets the
scene in one batch); the only arrays that grow with the scene are the outputs (preallocated when the frame
count is known) and, for ``sam2`` masks, the association's voxel sets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from proxy3d.config import PerceptionParams
from proxy3d.perception.encoders import Encoder, pixel_to_patch
from proxy3d.perception.masks import MaskAssociator
from proxy3d.types import Frame, SceneObject, Triplets

log = logging.getLogger(__name__)


def _cells(height: int, width: int, grid: tuple[int, int]) -> np.ndarray:
    """(height, width) int64 patch index (row-major over the grid) of each pixel."""
    rows, cols = pixel_to_patch(height, width, grid)
    return rows[:, None] * grid[1] + cols[None, :]


def patch_points(points: np.ndarray, valid: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """points (H, W, 3), valid (H, W) -> per-patch median point (P, 3) float32 (0 where invalid), valid (P,) bool."""
    n_cells = grid[0] * grid[1]
    (h, w), (gh, gw) = valid.shape, grid
    if h % gh == 0 and w % gw == 0:  # fast path: patches are equal pixel blocks; sort within each block
        bh, bw = h // gh, w // gw
        block = lambda a: a.reshape(gh, bh, gw, bw, *a.shape[2:]).swapaxes(1, 2).reshape(n_cells, bh * bw, *a.shape[2:])  # noqa: E731
        v = block(valid)
        count = v.sum(1)
        vals = np.where(v[..., None], block(points).astype(np.float64), np.inf)
        vals.sort(axis=1)  # invalid (+inf) last
        lo, hi = np.maximum((count - 1) // 2, 0), np.maximum(count // 2, 0)
        idx = np.arange(n_cells)
        out = 0.5 * (vals[idx, lo] + vals[idx, hi])
        out[count == 0] = 0.0
        return out.astype(np.float32), count > 0
    return _patch_points_general(points, valid, grid)


def _patch_points_general(points: np.ndarray, valid: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`patch_points` for any frame size: one lexsort by (patch, value) per axis."""
    n_cells = grid[0] * grid[1]
    cell = _cells(*valid.shape, grid)[valid]
    vals = points[valid].astype(np.float64)
    count = np.bincount(cell, minlength=n_cells)
    out = np.zeros((n_cells, 3), np.float64)
    if len(cell):
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        has = count > 0
        lo = (start + (count - 1) // 2)[has]
        hi = (start + count // 2)[has]
        for a in range(3):
            v = vals[np.lexsort((vals[:, a], cell)), a]
            out[has, a] = 0.5 * (v[lo] + v[hi])
    return out.astype(np.float32), count > 0


def patch_labels(labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """labels (H, W) int (-1 none) -> (P,) int32: per patch the id covering the most pixels (ties: smaller id).

    "None" (-1) competes like an id: a patch that is mostly unannotated is -1, so a labelled patch's
    median point lies on its object rather than on the background behind a thin sliver of it.
    """
    n_cells = grid[0] * grid[1]
    out = np.full(n_cells, -1, np.int32)
    cell = _cells(*labels.shape, grid).ravel()
    lab = np.maximum(labels.ravel().astype(np.int64), -1) + 1
    span = int(lab.max()) + 1
    key, count = np.unique(cell * span + lab, return_counts=True)  # 1-D keys: much faster than unique(axis=0)
    pair = np.stack([key // span, key % span - 1], 1)
    order = np.lexsort((pair[:, 1], -count, pair[:, 0]))  # by cell, then larger count, then smaller id
    pair = pair[order]
    first = np.concatenate([[True], pair[1:, 0] != pair[:-1, 0]])
    out[pair[first, 0]] = pair[first, 1]
    return out


def objects_meta(objects: Sequence[SceneObject]) -> list[dict]:
    """Ground-truth objects as JSON-able dicts for ``Triplets.meta['objects']`` (oracle grounding downstream)."""
    return [{"object_id": int(o.object_id), "label": str(o.label), "category": int(o.category),
             "aabb": [float(x) for x in np.asarray(o.aabb, np.float64).reshape(6)]} for o in objects]


@dataclass
class TripletBuilder:
    """Wires an encoder, a geometry backend and a mask backend; ``build`` streams one scene."""

    encoder: Encoder
    geometry: object  # DepthGeometry | VGGTGeometry: points(frames) -> (N, H, W, 3), (N, H, W)
    masks: object  # GTMasks | SAM2Masks: masks(frames) -> (N, H, W) int32
    batch_size: int = 8
    assoc_voxel: float = 0.05
    assoc_iou: float = 0.25
    assoc_containment: float = 0.8
    stats: dict = field(default_factory=dict)

    def build(self, scene_id: str, frames: Iterable[Frame], objects: Sequence[SceneObject] = (),
              n_frames: int | None = None, progress: bool = True) -> Triplets:
        """frames: streamed; n_frames: expected count (preallocates the outputs). -> Triplets of L = N * H' * W' patches."""
        grid = self.encoder.grid_size
        per_frame, dim = grid[0] * grid[1], self.encoder.dim
        cap = (n_frames or 0) * per_frame
        feats = np.zeros((cap, dim), np.float32)
        pts = np.zeros((cap, 3), np.float32)
        labels = np.full(cap, -1, np.int32)
        valid = np.zeros(cap, bool)
        assoc = None if getattr(self.masks, "consistent", True) else MaskAssociator(self.assoc_voxel, self.assoc_iou, self.assoc_containment)
        n, image_size, indices, t0 = 0, None, [], time.perf_counter()
        bar = tqdm(total=n_frames, desc=scene_id, unit="frame", disable=not progress, leave=False)
        batch: list[Frame] = []
        # a reconstruction backend (vggt) puts each call's frames in that call's own frame: give it the scene at once
        limit = float("inf") if getattr(self.geometry, "whole_scene", False) else self.batch_size

        def flush() -> None:
            nonlocal n, feats, pts, labels, valid, image_size
            for fr in batch:  # before any backend stacks the batch
                if image_size is None:
                    image_size = list(fr.rgb.shape[:2])
                elif list(fr.rgb.shape[:2]) != image_size:
                    raise ValueError(f"scene {scene_id!r}: frame {fr.index} is {fr.rgb.shape[:2]}, earlier frames "
                                     f"{tuple(image_size)}; all frames of a scene must share one resolution")
            f = self.encoder.encode(batch).reshape(len(batch), per_frame, dim)
            p, v = self.geometry.points(batch)
            m = self.masks.masks(batch)
            need = (n + len(batch)) * per_frame
            if need > len(feats):  # frame count unknown or larger than announced: grow geometrically
                grow = max(need, 2 * len(feats))
                feats, pts = np.resize(feats, (grow, dim)), np.resize(pts, (grow, 3))
                labels, valid = np.resize(labels, grow), np.resize(valid, grow)
            for k, fr in enumerate(batch):
                local = m[k] if assoc is None else assoc.add(m[k], p[k], v[k])
                sl = slice((n + k) * per_frame, (n + k + 1) * per_frame)
                feats[sl] = f[k]
                pts[sl], valid[sl] = patch_points(p[k], v[k], grid)
                labels[sl] = patch_labels(local, grid)
                indices.append(int(fr.index))
            n += len(batch)
            bar.update(len(batch))
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if len(batch) >= limit:
                flush()
        if batch:
            flush()
        bar.close()
        L = n * per_frame
        feats, pts, labels, valid = feats[:L], pts[:L], labels[:L], valid[:L]
        if assoc is not None:
            lut = assoc.finalize()
            labels = np.where(labels >= 0, lut[np.maximum(labels, 0)] if len(lut) else -1, -1).astype(np.int32)
            instance_category = {int(i): -1 for i in np.unique(lut)}
        else:
            instance_category = {int(o.object_id): int(o.category) for o in objects}
            for i in np.unique(labels[labels >= 0]):
                instance_category.setdefault(int(i), -1)
        seconds = time.perf_counter() - t0
        self.stats = {"frames": n, "patches": L, "valid_pct": float(100.0 * valid.mean()) if L else 0.0,
                      "labelled_pct": float(100.0 * (labels >= 0).mean()) if L else 0.0,
                      "seconds_per_frame": seconds / max(n, 1)}
        meta = {"encoder": self.encoder.name, "stride": self.encoder.stride, "grid": list(grid),
                "input_size": list(self.encoder.input_size), "feature_dim": dim, "frames": n,
                "image_size": image_size or [0, 0], "frame_indices": indices,
                "geometry": getattr(self.geometry, "name", ""), "masks": getattr(self.masks, "name", ""),
                "objects": objects_meta(objects)}
        if n > np.iinfo(np.int16).max + 1:
            raise ValueError(f"scene {scene_id!r}: {n} frames, but Triplets.frame is int16 (at most 32768 frames); "
                             "sample fewer frames (params.yaml data.frames)")
        frame = np.repeat(np.arange(n, dtype=np.int16), per_frame)
        return Triplets(scene_id, feats, pts, labels, valid, frame, instance_category, meta)


def builder_from_params(p: PerceptionParams) -> TripletBuilder:
    """The encoder, geometry and mask backends named in ``params.yaml``'s ``perception:`` section."""
    from proxy3d.perception.encoders import build_encoder
    from proxy3d.perception.geometry import build_geometry
    from proxy3d.perception.masks import build_masks

    encoder = build_encoder(p.encoder, (p.input_height, p.input_width), p.device, p.batch_size, p.encoder_checkpoint)
    geometry = build_geometry(p.geometry, p.vggt_checkpoint, p.device)
    masks = build_masks(p.masks, p.sam2_config, p.sam2_checkpoint, p.device, p.sam2_points_per_side)
    return TripletBuilder(encoder, geometry, masks, p.batch_size, p.assoc_voxel, p.assoc_iou,
                          p.assoc_containment)
