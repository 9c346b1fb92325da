"""Mask backends: SAM 2 wrapper contract, GT masks, and cross-frame association by voxel IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proxy3d.perception.geometry import DepthGeometry
from proxy3d.perception.masks import GTMasks, MaskAssociator, SAM2Masks, associate, build_masks
from proxy3d.perception.toy import toy_scene


def test_sam2_tiny_build_runs_through_wrapper():
    torch.set_num_threads(1)
    _, frames = toy_scene(n_frames=1, size=(96, 128))
    # random weights: quality filters off so that masks come out and the painting path runs
    sam = SAM2Masks(checkpoint=None, device="cpu", points_per_side=4, min_area=1, pred_iou_thresh=0.0,
                    stability_score_thresh=0.0)
    out = sam.masks(frames)
    assert out.shape == (1, 96, 128) and out.dtype == np.int32
    assert out.min() >= -1
    ids = np.unique(out[out >= 0])
    assert len(ids) > 0 and np.array_equal(ids, np.arange(len(ids)))  # local ids are 0..k-1


def test_sam2_missing_checkpoint_is_named():
    with pytest.raises(FileNotFoundError, match="perception.sam2_checkpoint"):
        build_masks("sam2", sam2_checkpoint="")
    with pytest.raises(FileNotFoundError, match="/nowhere/sam2.pt"):
        SAM2Masks(checkpoint="/nowhere/sam2.pt", device="cpu")


def test_gt_masks_need_instance_maps():
    _, frames = toy_scene(n_frames=1, size=(20, 30))
    assert GTMasks().masks(frames).shape == (1, 20, 30)
    frames[0].instance = None
    with pytest.raises(ValueError, match="instance map"):
        GTMasks().masks(frames)


def test_association_merges_shuffled_per_frame_masks_into_one_id_per_object():
    boxes, frames = toy_scene(n_frames=12, size=(90, 120))
    pts, valid = DepthGeometry().points(frames)
    rng = np.random.default_rng(0)
    assoc = MaskAssociator(voxel=0.05, iou=0.25)
    provisional, gts = [], []
    for k, f in enumerate(frames):
        gt = f.instance
        perm = rng.permutation(len(boxes)) + 3  # ids shuffled per frame, unrelated to the object ids
        local = np.where(gt >= 0, perm[np.maximum(gt, 0)], -1).astype(np.int32)
        provisional.append(assoc.add(local, pts[k], valid[k]))
        gts.append(gt)
    lut = assoc.finalize()
    pred = np.concatenate([np.where(p >= 0, lut[np.maximum(p, 0)], -1).ravel() for p in provisional])
    gt = np.concatenate([g.ravel() for g in gts])
    sel = pred >= 0
    assert np.array_equal(sel, gt >= 0)
    pairs, counts = np.unique(np.stack([pred[sel], gt[sel]], 1), axis=0, return_counts=True)
    # purity: share of labelled pixels whose predicted instance's majority object is their object
    best_per_pred = {p: 0 for p in np.unique(pairs[:, 0])}
    for (p, _), c in zip(pairs, counts, strict=True):
        best_per_pred[p] = max(best_per_pred[p], c)
    purity = sum(best_per_pred.values()) / sel.sum()
    # completeness: share of each object's pixels under its most common predicted id
    best_per_gt = {g: 0 for g in np.unique(pairs[:, 1])}
    for (_, g), c in zip(pairs, counts, strict=True):
        best_per_gt[g] = max(best_per_gt[g], c)
    completeness = sum(best_per_gt.values()) / sel.sum()
    assert purity >= 0.95 and completeness >= 0.95
    ids, px = np.unique(pred[sel], return_counts=True)
    assert (px >= 0.01 * sel.sum()).sum() == len(np.unique(gt[sel]))  # one id per object (slivers aside)


def test_association_keeps_distinct_objects_apart_when_frames_do_not_overlap():
    assoc = MaskAssociator(voxel=0.1, iou=0.25)
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 20), np.linspace(0, 1, 20), indexing="ij"), -1)
    a = np.concatenate([grid, np.zeros((20, 20, 1))], -1)
    b = a + [5.0, 0.0, 0.0]
    ones, valid = np.zeros((20, 20), np.int32), np.ones((20, 20), bool)
    assoc.add(ones, a, valid)
    assoc.add(ones, b, valid)
    assoc.add(ones, a + 0.01, valid)
    assert assoc.finalize().tolist() == [0, 1, 0]


def test_associate_in_memory_matches_ground_truth_partition():
    boxes, frames = toy_scene(n_frames=12, size=(90, 120))
    pts, valid = DepthGeometry().points(frames)
    gt = np.stack([f.instance for f in frames])
    local = np.where(gt >= 0, (gt * 7 + np.arange(12)[:, None, None]) % 11, -1).astype(np.int32)  # per-frame relabelling
    out = associate(local, pts, valid)
    assert out.shape == gt.shape and out.dtype == np.int32 and np.array_equal(out < 0, gt < 0)
    for g in np.unique(gt[gt >= 0]):  # each object maps to (almost only) one id
        ids, n = np.unique(out[gt == g], return_counts=True)
        assert n.max() / n.sum() > 0.95
