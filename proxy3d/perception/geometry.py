"""Geometry backends: ``points(frames) -> (points (N, H, W, 3) float32 world, valid (N, H, W) bool)``.

- ``depth``: exact unprojection of the depth map with K and the camera-to-world pose (pixel (v, u) is the
  ray through image coordinates (u, v), as in ScanNet's tools). Depth 0, NaN or inf, and frames whose
  pose is not finite, are invalid.
- ``vggt``: VGGT (installed from its source repository; no PyPI package carries the model) predicts
  first-camera, scale-normalised point maps; they are brought to the world frame by a robust similarity
  (:func:`proxy3d.perception.align.robust_umeyama`) fitted to depth points placed by the known poses, or
  to the known camera centres; without poses, depth gives the metric scale and the dominant floor plane
  gives up and floor height (heading and origin then follow the first camera). Each call is one
  reconstruction aligned on its own, so :class:`~proxy3d.perception.triplets.TripletBuilder` passes a
  scene's frames in one call (``whole_scene``): batches of frames would each get their own first camera
  and, without poses, their own world frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from proxy3d.perception.align import Similarity, gravity_alignment, robust_umeyama
from proxy3d.perception.encoders import resolve_device
from proxy3d.types import Frame

log = logging.getLogger(__name__)

GEOMETRIES = ("depth", "vggt")
VGGT_INSTALL = ("install VGGT's code from source: 'pip install git+https://github.com/facebookresearch/vggt' "
                "(or clone it and 'pip install -e .'), download its checkpoint (model.pt of facebook/VGGT-1B) to a "
                "local path and set perception.vggt_checkpoint to it; or use perception.geometry=depth")


def unproject(depth: np.ndarray, K: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """depth (H, W) metres, K (3, 3), pose (4, 4) camera-to-world -> points (H, W, 3) float32, valid (H, W) bool."""
    h, w = depth.shape
    z = depth.astype(np.float64)
    valid = np.isfinite(z) & (z > 0) & bool(np.isfinite(pose).all())
    z = np.where(valid, z, 0.0)
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    pose = np.where(np.isfinite(pose), pose, 0.0)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    world[~valid] = 0.0
    return world.astype(np.float32), valid


class DepthGeometry:
    """Exact points from depth + K + pose. ``axis_alignment`` (4, 4) is applied on top of the pose
    (identity when poses are already in the axis-aligned world frame, as the scene reader returns them)."""

    name = "depth"
    whole_scene = False  # frames are independent: any batch size gives the same points

    def __init__(self, axis_alignment: np.ndarray | None = None) -> None:
        self.axis_alignment = np.eye(4) if axis_alignment is None else np.asarray(axis_alignment, np.float64)

    def points(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
        pts, valid = [], []
        for f in frames:
            if f.depth is None:
                raise ValueError(f"frame {f.index} has no depth; geometry=depth needs depth maps (use geometry=vggt)")
            pose = np.asarray(f.pose, np.float64)
            pose = self.axis_alignment @ pose if np.isfinite(pose).all() else pose  # non-finite: unproject masks it
            p, v = unproject(f.depth, np.asarray(f.K, np.float64), pose)
            pts.append(p)
            valid.append(v)
        return np.stack(pts), np.stack(valid)


class VGGTGeometry:
    """VGGT point maps aligned to the world frame. Needs the ``vggt`` package and a local checkpoint."""

    name = "vggt"
    whole_scene = True  # one reconstruction per call: the scene's frames must come in one call

    def __init__(self, checkpoint: str, device: str = "auto", resolution: int = 518, conf_quantile: float = 0.3,
                 seed: int = 0) -> None:
        try:
            from vggt.models.vggt import VGGT
            from vggt.utils.pose_enc import pose_encoding_to_extri_intri
        except ImportError as e:
            raise RuntimeError(f"perception.geometry=vggt but the 'vggt' package is not installed ({e}); "
                               f"checkpoint: {checkpoint or '(perception.vggt_checkpoint not set)'}. {VGGT_INSTALL}") from None
        if not checkpoint or not Path(checkpoint).is_file():
            raise FileNotFoundError(f"perception.geometry=vggt: checkpoint {checkpoint or '(perception.vggt_checkpoint not set)'!s} "
                                    f"not found (the 'vggt' package is installed). {VGGT_INSTALL}")
        self.device = resolve_device(device)
        self.resolution, self.conf_quantile, self.seed = resolution, conf_quantile, seed
        self._pose_decode = pose_encoding_to_extri_intri
        model = VGGT()
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        self.model = model.eval().to(self.device)
        self.depth = DepthGeometry()

    def _predict(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> points (S, H, W, 3) and conf (S, H, W) at frame resolution, camera centres (S, 3); first-camera frame."""
        h, w = frames[0].rgb.shape[:2]
        size = (max(14, round(self.resolution * h / w / 14) * 14), self.resolution)
        x = torch.stack([torch.from_numpy(np.ascontiguousarray(f.rgb)).permute(2, 0, 1) for f in frames])
        x = F.interpolate(x.float().div(255), size=size, mode="bilinear", align_corners=False).to(self.device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=self.device.type == "cuda"):
            pred = self.model(x)
        extrinsic, _ = self._pose_decode(pred["pose_enc"], x.shape[-2:])  # (1, S, 3, 4) camera-from-world
        E = extrinsic[0].float().cpu().numpy()
        centres = -np.einsum("sji,sj->si", E[:, :, :3], E[:, :, 3])
        wp = pred["world_points"][0].float().permute(0, 3, 1, 2)
        conf = pred["world_points_conf"][0].float()[:, None]
        wp = F.interpolate(wp, size=(h, w), mode="nearest").permute(0, 2, 3, 1).cpu().numpy()
        conf = F.interpolate(conf, size=(h, w), mode="nearest")[:, 0].cpu().numpy()
        return wp, conf, centres

    def fit(self, frames: Sequence[Frame], points: np.ndarray, centres: np.ndarray) -> tuple[Similarity, str]:
        """Similarity from VGGT's frame to the world, and what it was fitted to.

        points: (S, H, W, 3) VGGT points (first-camera frame); centres: (S, 3) VGGT camera centres.
        - poses known (>= 3 non-collinear centres): to world depth points when every frame has depth
          ("depth"), else to the camera centres ("poses");
        - no poses, depth: metric scale from frame 0's depth (camera-0 frame = VGGT's frame up to scale),
          then up and floor height from the floor plane ("depth+gravity");
        - neither: floor plane only, VGGT's scale ("gravity").
        """
        poses = np.stack([np.asarray(f.pose, np.float64) for f in frames])
        known = np.isfinite(poses).all((1, 2))
        has_depth = all(f.depth is not None for f in frames)
        rng = np.random.default_rng(self.seed)
        if known.sum() >= 3 and np.linalg.matrix_rank(poses[known, :3, 3] - poses[known, :3, 3].mean(0), tol=1e-3) >= 2:
            if has_depth:
                gt, gt_valid = self.depth.points(frames)
                idx = np.flatnonzero(gt_valid.reshape(-1))
                if len(idx) >= 3:
                    idx = rng.choice(idx, min(len(idx), 20000), replace=False)
                    return robust_umeyama(points.reshape(-1, 3)[idx], gt.reshape(-1, 3)[idx], seed=self.seed)[0], "depth"
            return robust_umeyama(centres[known], poses[known, :3, 3], seed=self.seed)[0], "poses"
        metric, source = Similarity(1.0, np.eye(3), np.zeros(3)), "gravity"
        if has_depth:
            cam0, ok = unproject(frames[0].depth, np.asarray(frames[0].K, np.float64), np.eye(4))
            idx = np.flatnonzero(ok.reshape(-1))
            if len(idx) >= 3:
                idx = rng.choice(idx, min(len(idx), 20000), replace=False)
                metric = robust_umeyama(points[0].reshape(-1, 3)[idx], cam0.reshape(-1, 3)[idx], seed=self.seed)[0]
                source = "depth+gravity"
        flat = metric.apply(points.reshape(-1, 3).astype(np.float64))
        sample = flat[rng.choice(len(flat), min(len(flat), 50000), replace=False)]
        up = gravity_alignment(sample, up_hint=np.array([0.0, -1.0, 0.0]), seed=self.seed)  # OpenCV: y down
        return Similarity(up.scale * metric.scale, up.R @ metric.R, up.R @ metric.t + up.t), source

    def points(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
        pts, conf, centres = self._predict(frames)
        valid = np.isfinite(pts).all(-1) & (conf >= np.quantile(conf, self.conf_quantile))
        sim, source = self.fit(frames, pts, centres)
        log.info("vggt: aligned %d frames to the world by %s (scale %.3f)", len(frames), source, sim.scale)
        return sim.apply(pts.astype(np.float64)).astype(np.float32), valid


def build_geometry(name: str, vggt_checkpoint: str = "", device: str = "auto") -> DepthGeometry | VGGTGeometry:
    """Geometry backend by name (``perception.geometry``)."""
    if name == "depth":
        return DepthGeometry()
    if name == "vggt":
        return VGGTGeometry(vggt_checkpoint, device)
    raise ValueError(f"perception.geometry={name!r}: choose one of {', '.join(GEOMETRIES)}")
