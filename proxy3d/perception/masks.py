"""Mask backends and cross-frame association.

``masks(frames) -> (N, H, W) int32`` instance ids, -1 = none.
- ``gt``: the dataset's instance maps (``Frame.instance``), already consistent across frames.
- ``sam2``: SAM 2's automatic mask generator per frame (ids local to each frame); :class:`MaskAssociator`
  then merges masks of different frames whose back-projected points overlap in 3D with union-find, so
  one object keeps one id across the scene. Same object = IoU of two masks' voxel sets >= ``iou``, or
  >= ``containment`` of the smaller mask's voxels inside the other, or of a new mask's voxels inside an
  instance built so far (union of its masks): a
  close-up, or a view cut by the image border or an occluder, covers a small part of the object, so its
  IoU with any single earlier view is low although it is the same object (seen in the tests).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from proxy3d.perception.encoders import resolve_device
from proxy3d.types import Frame

log = logging.getLogger(__name__)

MASKS = ("gt", "sam2")


class GTMasks:
    """Ground-truth instance maps; ``consistent``: ids already agree across frames (no association needed)."""

    name = "gt"
    consistent = True

    def masks(self, frames: Sequence[Frame]) -> np.ndarray:
        out = []
        for f in frames:
            if f.instance is None:
                raise ValueError(f"frame {f.index} has no instance map; perception.masks=gt needs the dataset's "
                                 "instance-filt/ maps (or use perception.masks=sam2)")
            out.append(np.asarray(f.instance, np.int32))
        return np.stack(out)


class SAM2Masks:
    """SAM 2 automatic masks per frame (ids local to the frame, larger masks painted first so small ones stay on top).

    ``checkpoint=None`` builds the model with random weights (tests only: with the default quality thresholds
    it finds no masks). ``generator_kwargs`` go to ``SAM2AutomaticMaskGenerator`` (e.g. ``pred_iou_thresh``).
    """

    name = "sam2"
    consistent = False

    def __init__(self, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml", checkpoint: str | None = None,
                 device: str = "auto", points_per_side: int = 32, min_area: int = 64, **generator_kwargs: float) -> None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2

        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"perception.sam2_checkpoint={checkpoint!r}: no such file; download a SAM 2 "
                                    "checkpoint (e.g. sam2.1_hiera_tiny.pt) to a local path, matching perception.sam2_config")
        self.device = resolve_device(device)
        torch.manual_seed(0)
        model = build_sam2(config, ckpt_path=checkpoint, device=str(self.device))
        self.generator = SAM2AutomaticMaskGenerator(model, points_per_side=points_per_side, min_mask_region_area=min_area,
                                                    **generator_kwargs)
        self.min_area = min_area

    def frame_masks(self, rgb: np.ndarray) -> np.ndarray:
        """rgb (H, W, 3) uint8 -> (H, W) int32 local ids 0..k-1, -1 = no mask."""
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cuda):
            found = self.generator.generate(np.ascontiguousarray(rgb))
        out = np.full(rgb.shape[:2], -1, np.int32)
        found = [m for m in found if int(m["area"]) >= self.min_area]
        for k, m in enumerate(sorted(found, key=lambda m: -int(m["area"]))):
            out[np.asarray(m["segmentation"], bool)] = k
        return out

    def masks(self, frames: Sequence[Frame]) -> np.ndarray:
        return np.stack([self.frame_masks(f.rgb) for f in frames])


def _unique_rows(a: np.ndarray, return_counts: bool = False):
    """Unique rows of an (M, k) int64 array, sorted, like np.unique(axis=0) but via lexsort (much faster)."""
    if len(a) == 0:
        return (a, np.zeros(0, np.int64)) if return_counts else a
    a = a[np.lexsort(a.T[::-1])]
    first = np.concatenate([[True], (a[1:] != a[:-1]).any(1)])
    if not return_counts:
        return a[first]
    starts = np.flatnonzero(first)
    return a[first], np.diff(np.append(starts, len(a)))


def _voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    """points (M, 3) -> (M,) int64 voxel keys (21 bits per axis, +-52 km at 5 cm)."""
    q = np.floor(points / voxel).astype(np.int64) + (1 << 20)
    return (q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2]


class MaskAssociator:
    """Streams per-frame masks, gives each a scene-unique provisional id, and merges ids across frames.

    Memory: one (voxel, mask) pair per occupied voxel of each mask, not per pixel.
    """

    def __init__(self, voxel: float = 0.05, iou: float = 0.25, containment: float = 0.8, min_voxels: int = 3) -> None:
        self.voxel, self.iou, self.containment, self.min_voxels = float(voxel), float(iou), float(containment), min_voxels
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.keys = np.zeros(0, np.int64)  # sorted voxel keys of all masks so far
        self.owner = np.zeros(0, np.int64)  # provisional mask id of each key

    def _find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def add(self, local: np.ndarray, points: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """local (H, W) int32 per-frame ids (-1 none), points (H, W, 3), valid (H, W) -> (H, W) int32 provisional ids."""
        ids = np.unique(local[local >= 0])
        base = len(self.parent)
        out = np.full(local.shape, -1, np.int32)
        lut = np.full(int(ids.max()) + 1 if len(ids) else 1, -1, np.int64)
        lut[ids] = base + np.arange(len(ids))
        out[local >= 0] = lut[local[local >= 0]]
        self.parent.extend(range(base, base + len(ids)))
        sel = (local >= 0) & valid
        pairs = _unique_rows(np.stack([_voxel_keys(points[sel].astype(np.float64), self.voxel), out[sel].astype(np.int64)], 1))
        sizes = np.bincount(pairs[:, 1] - base, minlength=len(ids)) if len(pairs) else np.zeros(len(ids), np.int64)
        self.sizes.extend(int(s) for s in sizes)
        if len(pairs) and len(self.keys):
            lo = np.searchsorted(self.keys, pairs[:, 0], "left")
            hi = np.searchsorted(self.keys, pairs[:, 0], "right")
            n = hi - lo
            new = np.repeat(pairs[:, 1], n)
            old = self.owner[np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))]
            if len(new):
                size = np.asarray(self.sizes)
                pair_ids, inter = _unique_rows(np.stack([new, old], 1), return_counts=True)
                sa, sb = size[pair_ids[:, 0]], size[pair_ids[:, 1]]
                same = (inter / np.maximum(sa + sb - inter, 1) >= self.iou) | (inter / np.maximum(np.minimum(sa, sb), 1) >= self.containment)
                same &= inter >= self.min_voxels
                # containment of the new mask in an instance seen so far (union of its masks' voxels)
                roots = np.array([self._find(i) for i in range(base)], np.int64)
                key = np.repeat(pairs[:, 0], n)
                trip = _unique_rows(np.stack([new, roots[old], key], 1))
                comp_ids, comp_inter = _unique_rows(trip[:, :2], return_counts=True)
                inside = comp_inter / np.maximum(size[comp_ids[:, 0]], 1) >= self.containment
                merge = np.concatenate([pair_ids[same], comp_ids[inside & (comp_inter >= self.min_voxels)]])
                for (a, b) in merge:
                    self._union(int(a), int(b))
        if len(pairs):
            keys = np.concatenate([self.keys, pairs[:, 0]])
            owner = np.concatenate([self.owner, pairs[:, 1]])
            order = np.argsort(keys, kind="stable")
            self.keys, self.owner = keys[order], owner[order]
        return out

    def finalize(self) -> np.ndarray:
        """(M,) int32 scene instance id of every provisional id: compact, numbered by first appearance."""
        roots = np.array([self._find(i) for i in range(len(self.parent))], np.int64)
        _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))  # number components by their first provisional id
        return rank[inverse].astype(np.int32)


def associate(local: np.ndarray, points: np.ndarray, valid: np.ndarray, voxel: float = 0.05, iou: float = 0.25,
              containment: float = 0.8) -> np.ndarray:
    """Per-frame ids (N, H, W) int32 + points (N, H, W, 3) + valid (N, H, W) -> scene-consistent ids (N, H, W) int32.

    The in-memory form of what :class:`proxy3d.perception.triplets.TripletBuilder` does while streaming.
    """
    assoc = MaskAssociator(voxel, iou, containment)
    provisional = np.stack([assoc.add(local[k], points[k], valid[k]) for k in range(len(local))])
    lut = assoc.finalize()
    if not len(lut):
        return provisional
    return np.where(provisional >= 0, lut[np.maximum(provisional, 0)], -1).astype(np.int32)


def build_masks(name: str, sam2_config: str = "", sam2_checkpoint: str = "", device: str = "auto",
                points_per_side: int = 32) -> GTMasks | SAM2Masks:
    """Mask backend by name (``perception.masks``)."""
    if name == "gt":
        return GTMasks()
    if name == "sam2":
        if not sam2_checkpoint:
            raise FileNotFoundError("perception.masks=sam2 needs perception.sam2_checkpoint: a local SAM 2 checkpoint "
                                    "(e.g. sam2.1_hiera_tiny.pt) matching perception.sam2_config")
        return SAM2Masks(sam2_config, sam2_checkpoint, device, points_per_side)
    raise ValueError(f"perception.masks={name!r}: choose one of {', '.join(MASKS)}")
