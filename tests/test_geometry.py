"""Geometry backends and the robust similarity / gravity alignment used by the vggt backend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from proxy3d.perception.align import gravity_alignment, robust_umeyama
from proxy3d.perception.geometry import DepthGeometry, build_geometry
from proxy3d.perception.toy import toy_scene


def _distance_to_box_surface(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Unsigned distance of points (M, 3) to the surface of an axis-aligned box."""
    outside = np.linalg.norm(np.maximum(0, np.maximum(lo - p, p - hi)), axis=1)
    inside = np.minimum(p - lo, hi - p).min(1)
    return np.where(outside > 0, outside, np.abs(inside))


def test_depth_backend_reproduces_box_surfaces_within_1cm():
    boxes, frames = toy_scene(n_frames=4, size=(60, 80))
    for f in frames:  # store depth as the dataset does: uint16 millimetres
        f.depth = (np.round(f.depth * 1000) / 1000).astype(np.float32)
    pts, valid = DepthGeometry().points(frames)
    assert pts.shape == (4, 60, 80, 3) and valid.shape == (4, 60, 80) and valid.all()
    inst = np.stack([f.instance for f in frames])
    checked = 0
    for b in boxes:
        sel = inst == b.object_id
        if sel.any():
            assert _distance_to_box_surface(pts[sel].astype(np.float64), b.lo, b.hi).max() < 0.01
            checked += int(sel.sum())
    room = pts[inst < 0].astype(np.float64)  # background pixels lie on the room's floor/walls/ceiling
    d_room = _distance_to_box_surface(room, np.zeros(3), np.array([5.0, 4.0, 2.6]))
    assert d_room.max() < 0.01 and checked > 500


def test_invalid_depth_and_pose_are_masked():
    _, frames = toy_scene(n_frames=2, size=(30, 40))
    frames[0].depth[:5] = 0.0
    frames[0].depth[5:8] = np.nan
    frames[1].pose = np.full((4, 4), np.inf)
    pts, valid = DepthGeometry().points(frames)
    assert not valid[0, :8].any() and valid[0, 8:].all()
    assert not valid[1].any() and np.isfinite(pts).all()


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_robust_umeyama_recovers_similarity_with_20pct_outliers():
    rng = np.random.default_rng(3)
    src = rng.uniform(-1, 1, (2000, 3))
    R, s, t = _random_rotation(rng), 2.7, np.array([1.5, -3.0, 0.8])
    dst = s * src @ R.T + t + rng.normal(scale=0.005, size=src.shape)
    out = rng.random(len(src)) < 0.2
    dst[out] = rng.uniform(-6, 6, (out.sum(), 3))  # gross outliers
    sim, inliers = robust_umeyama(src, dst)
    assert abs(sim.scale / s - 1) < 0.01
    angle = np.degrees(np.arccos(np.clip((np.trace(sim.R.T @ R) - 1) / 2, -1, 1)))
    assert angle < 0.5
    assert np.linalg.norm(sim.t - t) < 0.02
    assert (inliers[~out]).mean() > 0.95 and (inliers[out]).mean() < 0.05


def test_gravity_alignment_puts_floor_at_z0():
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(0, 4, (3000, 2)), np.zeros(3000)]
    box = rng.uniform([1, 1, 0], [2, 2, 1], (1000, 3))
    wall = np.c_[rng.uniform(0, 4, 800), np.full(800, 4.0), rng.uniform(0, 2.5, 800)]
    world = np.concatenate([floor, box, wall])
    R = _random_rotation(np.random.default_rng(1))
    cam = (world - [2, 2, 1.5]) @ R.T  # an unknown frame; up = R @ z
    sim = gravity_alignment(cam, up_hint=R @ np.array([0.1, 0.0, 1.0]))
    back = sim.apply(cam)
    assert np.abs(back[: len(floor), 2]).max() < 0.01
    assert np.allclose(back[len(floor) + len(box):, 2], world[len(floor) + len(box):, 2], atol=0.02)


def test_vggt_missing_names_package_checkpoint_and_install():
    try:
        import vggt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vggt is installed here")
    with pytest.raises(RuntimeError) as e:
        build_geometry("vggt", "/nowhere/model.pt")
    msg = str(e.value)
    assert "'vggt' package is not installed" in msg and "/nowhere/model.pt" in msg
    assert "pip install git+https://github.com/facebookresearch/vggt" in msg and "geometry=depth" in msg


def test_unknown_geometry_is_named():
    with pytest.raises(ValueError, match="perception.geometry='lidar'"):
        build_geometry("lidar")


@pytest.mark.parametrize("source", ["poses", "depth", "depth+gravity", "gravity"])
def test_vggt_alignment_brings_first_camera_points_to_world(source):
    """VGGT's model is not installed here: feed ``fit`` what VGGT returns (first-camera frame, unit scale)."""
    from proxy3d.perception.geometry import VGGTGeometry

    boxes, frames = toy_scene(n_frames=6, size=(48, 64))
    world, valid = DepthGeometry().points(frames)
    to_cam0 = np.linalg.inv(frames[0].pose)
    scale = 0.37  # VGGT normalises scale
    vggt_pts = scale * (world.astype(np.float64) @ to_cam0[:3, :3].T + to_cam0[:3, 3])
    centres = scale * (np.stack([f.pose[:3, 3] for f in frames]) @ to_cam0[:3, :3].T + to_cam0[:3, 3])
    rng = np.random.default_rng(0)
    flat = vggt_pts.reshape(-1, 3)
    bad = rng.random(len(flat)) < 0.2
    flat[bad] += rng.normal(scale=0.5, size=(bad.sum(), 3))  # 20% outliers
    if source == "poses":
        for f in frames:
            f.depth = None
    if source.endswith("gravity"):
        for f in frames:
            f.pose = np.full((4, 4), np.nan)  # poses unknown
    if source == "gravity":
        for f in frames:
            f.depth = None
    g = object.__new__(VGGTGeometry)
    g.seed, g.depth = 0, DepthGeometry()
    sim, used = g.fit(frames, vggt_pts, centres)
    assert used == source
    out = sim.apply(vggt_pts.reshape(-1, 3))[~bad]
    ref = world.reshape(-1, 3)[~bad].astype(np.float64)
    if source.endswith("gravity"):  # up and floor height are recovered; heading follows camera 0
        s = scale if source == "gravity" else 1.0  # depth fixes the metric scale
        if source != "gravity":
            assert abs(sim.scale * scale - 1) < 0.01
        floor = ref[:, 2] < 1e-3
        assert np.median(np.abs(out[floor, 2])) < 0.01
        assert np.median(np.abs(out[:, 2] - ref[:, 2] * s)) < 0.01
    else:
        assert abs(sim.scale * scale - 1) < 0.01
        assert np.median(np.linalg.norm(out - ref, axis=1)) < 0.01


def test_vggt_without_poses_puts_every_frame_of_a_scene_in_one_world_frame():
    """VGGT reconstructs each call in that call's first camera: fed in batches of ``perception.batch_size``,
    a pose-less scene came out in one world frame per batch (batch 1 rotated 180 degrees from batch 0)."""
    from proxy3d.perception.geometry import VGGTGeometry
    from proxy3d.perception.masks import GTMasks
    from proxy3d.perception.triplets import TripletBuilder

    boxes, frames = toy_scene(n_frames=16, size=(48, 64))
    world = {f.index: DepthGeometry().points([f])[0][0].astype(np.float64) for f in frames}
    poses = {f.index: f.pose.copy() for f in frames}
    calls = []

    class StubVGGT(VGGTGeometry):  # what VGGT returns: the call's first-camera frame, normalised scale
        def __init__(self) -> None:
            self.seed, self.depth, self.conf_quantile = 0, DepthGeometry(), 0.0

        def _predict(self, fr):
            calls.append(len(fr))
            to0, s = np.linalg.inv(poses[fr[0].index]), 0.37
            pts = np.stack([s * (world[f.index] @ to0[:3, :3].T + to0[:3, 3]) for f in fr])
            cent = np.stack([s * (poses[f.index][:3, 3] @ to0[:3, :3].T + to0[:3, 3]) for f in fr])
            return pts, np.ones(pts.shape[:3]), cent

    class Encoder:
        grid_size, dim, name, stride, input_size = (6, 8), 4, "stub", 8, (48, 64)

        def encode(self, batch):
            return np.zeros((len(batch), 6, 8, 4), np.float32)

    for f in frames:
        f.pose = np.full((4, 4), np.nan)  # a video: depth but no poses
    t = TripletBuilder(Encoder(), StubVGGT(), GTMasks(), batch_size=8).build("s", iter(frames), n_frames=16,
                                                                             progress=False)
    assert calls == [16]
    from proxy3d.perception.align import umeyama
    from proxy3d.perception.triplets import patch_points

    ref = np.concatenate([patch_points(*(a[0] for a in DepthGeometry().points(
        [dataclasses.replace(f, pose=poses[f.index])])), (6, 8))[0] for f in frames]).astype(np.float64)
    ok = t.valid
    sim = umeyama(ref[ok], t.points[ok].astype(np.float64))  # one similarity must explain every frame
    assert np.median(np.linalg.norm(sim.apply(ref[ok]) - t.points[ok], axis=1)) < 0.01


def test_mixed_resolution_frames_are_named_before_any_backend_stacks_them():
    from proxy3d.perception.masks import GTMasks
    from proxy3d.perception.triplets import TripletBuilder

    _, small = toy_scene(n_frames=1, size=(48, 64))
    _, large = toy_scene(n_frames=1, size=(60, 80))
    large[0].index = 1

    class Encoder:
        grid_size, dim, name, stride, input_size = (6, 8), 4, "stub", 8, (48, 64)

        def encode(self, batch):
            return np.zeros((len(batch), 6, 8, 4), np.float32)

    with pytest.raises(ValueError, match="frame 1 is .*all frames of a scene must share one resolution"):
        TripletBuilder(Encoder(), DepthGeometry(), GTMasks(), batch_size=8).build("s", iter(small + large),
                                                                                  progress=False)
