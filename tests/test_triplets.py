"""Patch triplets: label and point rules, invalid depth, end-to-end build on the analytic scene, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proxy3d.perception.encoders import build_encoder
from proxy3d.perception.geometry import DepthGeometry
from proxy3d.perception.masks import GTMasks
from proxy3d.perception.toy import toy_scene
from proxy3d.perception.triplets import TripletBuilder, _patch_points_general, patch_labels, patch_points
from proxy3d.types import load_triplets, save_triplets

torch.set_num_threads(1)


def test_largest_area_label_wins_in_a_hand_made_patch():
    lab = np.full((8, 8), -1, np.int32)  # a 2x2 grid of 4x4 patches
    lab[0:4, 0:4] = 7
    lab[0:1, 0:4] = 3  # patch 0: 7 has 12 px, 3 has 4 px
    lab[0:4, 4:8] = -1
    lab[0:1, 4:6] = 5  # patch 1: 2 px of 5, 14 px unannotated -> -1 (mostly background)
    lab[4:6, 0:4] = 2
    lab[6:8, 0:4] = 1  # patch 2: tie 8/8 -> smaller id
    lab[4:8, 4:8] = 4
    lab[4:6, 4:6] = 9
    lab[6:8, 6:8] = -1  # patch 3: 4 has 8 px, 9 has 4, none 4 -> 4
    assert patch_labels(lab, (2, 2)).tolist() == [7, -1, 1, 4]


def test_patch_point_is_median_of_valid_pixels_only():
    pts = np.zeros((4, 4, 3), np.float32)
    pts[:2, :2, 0] = [[1.0, 2.0], [3.0, 100.0]]
    valid = np.zeros((4, 4), bool)
    valid[:2, :2] = True
    valid[1, 1] = False  # the outlier is invalid
    p, v = patch_points(pts, valid, (2, 2))
    assert v.tolist() == [True, False, False, False]
    assert p[0, 0] == pytest.approx(2.0) and np.all(p[1:] == 0)


def test_block_fast_path_matches_general_median():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(48, 64, 3)).astype(np.float32)
    valid = rng.random((48, 64)) > 0.4
    valid[:16, :16] = False  # one empty patch
    fast, fv = patch_points(pts, valid, (3, 4))
    slow, sv = _patch_points_general(pts, valid, (3, 4))
    assert np.array_equal(fv, sv) and not fv[0] and np.allclose(fast, slow)


class ShuffledGTMasks:
    """Per-frame masks = ground truth with ids shuffled per frame (what SAM 2 gives: no cross-frame ids)."""

    name, consistent = "shuffled_gt", False

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def masks(self, frames):
        out = []
        for f in frames:
            perm = self.rng.permutation(64) + 10
            out.append(np.where(f.instance >= 0, perm[np.maximum(f.instance, 0)], -1).astype(np.int32))
        return np.stack(out)


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("efficientnet_lite0", (120, 160), "cpu", batch_size=4)


@pytest.fixture(scope="module")
def scene():
    return toy_scene(n_frames=6, size=(120, 160))


def test_build_gt_scene_roundtrips_with_objects_meta(tmp_path, encoder, scene):
    boxes, frames = scene
    builder = TripletBuilder(encoder, DepthGeometry(), GTMasks(), batch_size=4)
    trip = builder.build("toy0", iter(frames), [b.scene_object() for b in boxes], n_frames=len(frames), progress=False)
    per_frame = 8 * 10
    assert len(trip) == 6 * per_frame and trip.features.shape == (6 * per_frame, encoder.dim)
    assert trip.valid.all() and trip.frame.tolist() == np.repeat(np.arange(6), per_frame).tolist()
    for b in boxes:  # labelled patches' points lie on their box (a patch shared by two boxes may not)
        p = trip.points[trip.labels == b.object_id]
        if len(p):
            assert ((p > b.lo - 0.05) & (p < b.hi + 0.05)).all(1).mean() > 0.95
    assert trip.instance_category == {b.object_id: b.category for b in boxes}
    assert 0 < builder.stats["labelled_pct"] < 100 and builder.stats["valid_pct"] == 100.0
    save_triplets(trip, tmp_path / "toy0.safetensors")
    back = load_triplets(tmp_path / "toy0.safetensors")
    assert np.array_equal(back.labels, trip.labels) and np.array_equal(back.features, trip.features)
    meta = back.meta
    assert meta["encoder"] == "efficientnet_lite0" and meta["stride"] == 16 and meta["frames"] == 6
    assert meta["image_size"] == [120, 160] and meta["grid"] == [8, 10]
    obj = meta["objects"][0]
    assert set(obj) == {"object_id", "label", "category", "aabb"} and len(obj["aabb"]) == 6
    assert np.allclose(obj["aabb"], boxes[0].scene_object().aabb)


def test_all_invalid_depth_frame_yields_no_valid_triplets(encoder, scene):
    boxes, frames = scene
    bad = [f for f in frames[:2]]
    bad[1] = type(bad[1])(**{**bad[1].__dict__, "depth": np.zeros_like(bad[1].depth)})
    trip = TripletBuilder(encoder, DepthGeometry(), GTMasks()).build("toy1", bad, progress=False)
    per_frame = 80
    assert trip.valid[:per_frame].all() and not trip.valid[per_frame:].any()
    assert np.all(trip.points[per_frame:] == 0) and np.isfinite(trip.points).all()


def test_association_inside_builder_gives_one_id_per_object(encoder, scene):
    boxes, frames = scene
    gt = TripletBuilder(encoder, DepthGeometry(), GTMasks(), batch_size=4).build("a", frames, progress=False)
    sh = TripletBuilder(encoder, DepthGeometry(), ShuffledGTMasks(), batch_size=4).build("b", frames, progress=False)
    assert np.array_equal(gt.labels < 0, sh.labels < 0)
    lab = gt.labels >= 0
    pairs, counts = np.unique(np.stack([sh.labels[lab], gt.labels[lab]], 1), axis=0, return_counts=True)
    majority = {p: counts[pairs[:, 0] == p].max() for p in np.unique(pairs[:, 0])}
    assert sum(majority.values()) / lab.sum() >= 0.95  # purity
    assert set(sh.instance_category.values()) == {-1}  # SAM-style instances have unknown categories
