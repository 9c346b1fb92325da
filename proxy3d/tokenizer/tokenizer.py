"""``ProxyTokenizer``: patch triplets (L patches) -> K' <= K proxy tokens in BFS order.

``semantic`` (the method): relabel patches outvoted by the other views of their 5 cm voxel
(``consensus.vote_labels``, ``label_vote_*``), unlabel mask outliers and sparse mixed patches
(``grouping.detach_outliers`` / ``detach_sparse``), group patches by mask label (unlabelled ones by coarse
voxel), allocate the budget between groups (``allocation.allocate``), k-means on 3D points inside each
group, average member features with one sparse (K, L) @ (L, C) product, order by BFS over a k-NN graph
of centres.
``uniform``/``voxel``/``fps``/``global_kmeans``: baselines with the same interface and budget.

Invalid patches and patches with non-finite points are dropped (counted in ``meta["nan_dropped"]``)
and get ``members = -1``; so do semantic's sparse mixed patches (``meta["sparse"]``: points between two
surfaces, on neither). Background voxels too sparse to earn a proxy (their share of the budget
rounds to 0) join the nearest background proxy within two voxels, else stay unassigned; when objects
outnumber the budget, the smallest objects get no proxy (``allocation`` documents the policy), and their
patches stay unassigned. ``meta["dropped_patches"]`` counts every patch of the valid ones in no proxy (the
sparse ones included), ``meta["dropped_groups"]`` the groups that got no proxy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from proxy3d.io import validate_scene_id
from proxy3d.tokenizer import baselines, pooling
from proxy3d.tokenizer.allocation import allocate
from proxy3d.tokenizer.clustering import BACKENDS, grouped_kmeans
from proxy3d.tokenizer.consensus import check_vote_params, vote_labels
from proxy3d.tokenizer.grouping import detach_outliers, detach_sparse, group_patches, patch_spacing
from proxy3d.tokenizer.serialize import bfs_order
from proxy3d.types import Proxies, Triplets, load_meta, load_triplets, save_proxies

log = logging.getLogger(__name__)

METHODS = ("semantic", "global_kmeans", "uniform", "voxel", "fps")


class ProxyTokenizer:
    """Turn :class:`~proxy3d.types.Triplets` into :class:`~proxy3d.types.Proxies` with at most ``budget`` tokens."""

    def __init__(self, budget: int, min_per_group: int = 1, per_object_cap: int = 0, method: str = "semantic",
                 background_voxel: float = 0.5, kmeans_iters: int = 6, knn: int = 6, seed: int = 0,
                 kmeans_backend: str = "batched", outlier_radius: float = 0.1, outlier_min_share: float = 0.1,
                 sparse_spacings: float = 3.0, sparse_min_share: float = 0.2, label_vote_voxel: float = 0.05,
                 label_vote_keep: float = 0.34, label_vote_take: float = 0.66, kmeans_sample: int = 64) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown tokenizer method {method!r}; choose one of {', '.join(METHODS)} (proxies.method)")
        if kmeans_backend not in BACKENDS:
            raise ValueError(f"unknown k-means backend {kmeans_backend!r}; choose one of {BACKENDS} (proxies.kmeans_backend)")
        for name, v in (("budget", budget), ("min_per_group", min_per_group), ("per_object_cap", per_object_cap),
                        ("kmeans_iters", kmeans_iters), ("knn", knn), ("kmeans_sample", kmeans_sample)):
            if int(v) < 0:
                raise ValueError(f"proxies.{name} must be >= 0, got {v}")
        if int(knn) < 1:
            raise ValueError(f"proxies.knn must be >= 1, got {knn}: the BFS order walks a graph of each proxy's knn "
                             "nearest proxies (default 6)")
        if 0 < int(per_object_cap) < int(min_per_group):
            raise ValueError(f"proxies.per_object_cap={per_object_cap} is below proxies.min_per_group={min_per_group}: "
                             "an object cannot get at least the minimum and at most the cap; raise the cap or set it "
                             "to 0 (no cap)")
        self.budget, self.method = int(budget), method
        self.min_per_group, self.per_object_cap = int(min_per_group), int(per_object_cap)
        self.background_voxel, self.kmeans_iters = float(background_voxel), int(kmeans_iters)
        self.knn, self.seed, self.kmeans_backend = int(knn), int(seed), kmeans_backend
        self.kmeans_sample = int(kmeans_sample)
        self.outlier_radius, self.outlier_min_share = float(outlier_radius), float(outlier_min_share)
        self.sparse_spacings, self.sparse_min_share = float(sparse_spacings), float(sparse_min_share)
        check_vote_params(float(label_vote_voxel), float(label_vote_keep), float(label_vote_take))
        self.label_vote = (float(label_vote_voxel), float(label_vote_keep), float(label_vote_take))

    @classmethod
    def from_params(cls, p: Any, **overrides: Any) -> ProxyTokenizer:
        """Build from a :class:`proxy3d.config.ProxiesParams`; keyword overrides win (e.g. ``budget=450``)."""
        kw = dict(budget=p.budget, min_per_group=p.min_per_group, per_object_cap=p.per_object_cap,
                  method=p.method, background_voxel=p.background_voxel, kmeans_iters=p.kmeans_iters,
                  knn=p.knn, seed=p.seed, kmeans_backend=p.kmeans_backend, outlier_radius=p.outlier_radius,
                  outlier_min_share=p.outlier_min_share, sparse_spacings=p.sparse_spacings,
                  sparse_min_share=p.sparse_min_share, label_vote_voxel=p.label_vote_voxel,
                  label_vote_keep=p.label_vote_keep, label_vote_take=p.label_vote_take, kmeans_sample=p.kmeans_sample)
        kw.update(overrides)
        if int(kw["budget"]) < 1:  # the class allows 0 (no proxies); a pipeline run with it is a mistake
            raise ValueError(f"proxies.budget must be >= 1, got {kw['budget']}: a scene needs at least 1 "
                             "proxy token; set proxies.budget in params.yaml or with -S proxies.budget=700")
        return cls(**kw)

    def assign(self, points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int, dict[str, Any]]:
        """Proxy index of each patch before ordering.

        points: (N, 3) finite; labels: (N,) int (-1 none). Returns (assign (N,) int64 in [-1, K'), K', info);
        ``info["labels"]`` (N,) are the labels the proxies' majority vote uses (``semantic``: after the
        voxel vote, with mask outliers unlabelled; baselines: ``labels`` as given). Empty proxies are removed, so every proxy in [0, K') has >= 1 member.
        """
        N = points.shape[0]
        info: dict[str, Any] = {"groups": 0, "dropped_groups": 0, "dropped_patches": 0, "detached": 0, "relabelled": 0}
        if self.method == "semantic":
            voted = vote_labels(points, labels, *self.label_vote)
            info["relabelled"] = int((voted != labels).sum())
            spacing = patch_spacing(points[voted >= 0])
            clean = detach_outliers(points, voted, self.outlier_radius, self.outlier_min_share, spacing)
            labels = detach_sparse(points, clean, self.sparse_spacings, self.sparse_min_share, spacing)
            sparse = labels != clean
            info.update(detached=int((labels != voted).sum()), sparse=int(sparse.sum()))
            # sparse mixed patches lie between surfaces, on neither: as background they became ~30 junk proxies per
            # scene (identifier lookup on real proxies fell from 80 to 61%), so they join no proxy
            keep = np.flatnonzero(~sparse)
            g = group_patches(points[keep], labels[keep], self.background_voxel)
            caps = np.where(g.is_object, self.per_object_cap, 0)
            k = allocate(g.sizes, self.budget, self.min_per_group, caps=caps, priority=g.is_object.astype(np.int64),
                         guaranteed=g.is_object)
            sub = grouped_kmeans(points[keep], g.index, k, iters=self.kmeans_iters, backend=self.kmeans_backend,
                                 seed=self.seed, neighbours=self.knn, sample=self.kmeans_sample)
            bg_cluster = np.repeat(~g.is_object, k)
            assign = np.full(N, -1, dtype=np.int64)
            assign[keep] = _absorb_sparse_background(points[keep], sub, bg_cluster, 2.0 * self.background_voxel,
                                                     ~g.is_object[g.index])
            info.update(groups=int(g.label.size), dropped_groups=int(((k == 0) & (g.sizes > 0)).sum()),
                        dropped_patches=int((assign < 0).sum()))
        elif self.method == "global_kmeans":
            assign, _ = baselines.global_kmeans_assign(points, self.budget, self.kmeans_iters, self.kmeans_backend, self.seed,
                                                       self.kmeans_sample)
        elif self.method == "uniform":
            assign, _ = baselines.uniform_assign(points, self.budget)
        elif self.method == "voxel":
            assign, _ = baselines.voxel_assign(points, self.budget)
        else:
            assign, _ = baselines.fps_assign(points, self.budget)
        info["labels"] = np.asarray(labels)
        if N == 0:
            return assign, 0, info
        used = np.bincount(assign[assign >= 0], minlength=1) > 0
        remap = np.cumsum(used) - 1
        return np.where(assign >= 0, remap[np.maximum(assign, 0)], -1).astype(np.int64), int(used.sum()), info

    def tokenize(self, t: Triplets) -> Proxies:
        """Tokenize one scene. Features (L, C) float32 are read once (sparse product)."""
        t0 = time.perf_counter()
        L = _check(t)
        finite = np.isfinite(t.points).all(1)
        keep = np.flatnonzero(t.valid.astype(bool) & finite)
        nan_dropped = int((t.valid.astype(bool) & ~finite).sum())
        if nan_dropped:
            log.warning("scene %s: dropped %d valid patches with non-finite points", t.scene_id, nan_dropped)
        pts = t.points[keep].astype(np.float64)
        assign, K, info = self.assign(pts, t.labels[keep])
        full = np.full(L, -1, dtype=np.int64)
        full[keep] = assign
        used_labels = np.full(L, -1, dtype=np.int64)
        used_labels[keep] = info.pop("labels")
        centers = pooling.mean_points(full, K, np.where(np.isfinite(t.points), t.points, 0))
        order = bfs_order(centers, self.knn)
        rank = np.empty(K, dtype=np.int64)
        rank[order] = np.arange(K)
        members = np.where(full >= 0, rank[np.maximum(full, 0)], -1) if K else np.full(L, -1, dtype=np.int64)
        features = pooling.mean_features(members, K, t.features)
        bad = ~np.isfinite(features).all(1)
        if bad.any():  # rare: a non-finite feature row; average only the finite members of those proxies
            feats_ok = np.isfinite(t.features[members >= 0]).all(1)
            masked = members.copy()
            masked[np.flatnonzero(members >= 0)[~feats_ok]] = -1
            features[bad] = pooling.mean_features(masked, K, np.nan_to_num(t.features, nan=0.0, posinf=0.0, neginf=0.0))[bad]
            log.warning("scene %s: %d patches with non-finite features left out of feature means", t.scene_id, int((~feats_ok).sum()))
        instance, _ = pooling.majority_label(members, K, used_labels)
        category = np.array([t.instance_category.get(int(i), -1) if i >= 0 else -1 for i in instance], dtype=np.int32)
        meta = {"method": self.method, "budget": self.budget, "patches": L, "valid": int(keep.size),
                "nan_dropped": nan_dropped, "unassigned": int((members < 0).sum()), **info,
                "time_s": round(time.perf_counter() - t0, 4)}
        return Proxies(scene_id=t.scene_id, features=features, centers=centers[order], instance=instance,
                       category=category, count=pooling.counts(members, K).astype(np.int32),
                       members=members.astype(np.int32), meta=meta)

    def tokenize_file(self, in_path: str | Path, out_path: str | Path | None = None,
                      out_dir: str | Path | None = None) -> dict[str, Any]:
        """Load triplets, tokenize, save proxies (atomic) to ``out_path``, or to ``out_dir/<scene_id>.safetensors``
        (the name every reader of proxies looks up; the scene id is validated). Returns the proxies' stats
        (``meta``) with the scene id and the written ``path``.

        The wall time (``meta["time_s"]``) is returned but not saved: the same proxies are then the same bytes, so a
        tokenizer change that leaves the proxies alone does not make DVC retrain the stages that read them."""
        t = load_triplets(in_path)
        if out_path is None:
            if out_dir is None:
                raise ValueError("tokenize_file needs out_path or out_dir")
            out_path = Path(out_dir) / f"{validate_scene_id(t.scene_id, str(in_path))}.safetensors"
        p = self.tokenize(t)
        stats = {"scene_id": p.scene_id, "tokens": len(p), **p.meta, "path": str(out_path)}
        save_proxies(dataclasses.replace(p, meta={k: v for k, v in p.meta.items() if k != "time_s"}), out_path)
        return stats


def check_unique_scenes(files: list[Path]) -> None:
    """Refuse two triplets files of one scene: both would be written to ``<out>/<scene_id>.safetensors``, the
    second overwriting the first."""
    seen: dict[str, Path] = {}
    for f in files:
        sid = str(load_meta(f, "triplets").get("scene_id", ""))
        if sid in seen:
            raise ValueError(f"{seen[sid]} and {f} both hold scene {sid!r}: their proxies would overwrite "
                             f"each other at <out>/{sid}.safetensors; keep one of them (or tokenize them "
                             "separately)")
        seen[sid] = f


def _absorb_sparse_background(points: np.ndarray, assign: np.ndarray, bg_cluster: np.ndarray,
                              radius: float, background: np.ndarray) -> np.ndarray:
    """Patches of background voxels (``background`` (N,) bool) too sparse to earn a proxy join the nearest
    background proxy (by centre) within ``radius``; farther ones (isolated segmenter misses) stay unassigned
    (-1). Patches of an object that got no proxy (``min_per_group`` = 0) stay unassigned too: in a background
    proxy they would mix the object's features into the floor's."""
    lost = np.flatnonzero((assign < 0) & background)
    bg_ids = np.flatnonzero(bg_cluster)
    if lost.size == 0 or bg_ids.size == 0:
        return assign
    centres = pooling.mean_points(assign, bg_cluster.size, points)[bg_ids]
    d, j = cKDTree(centres).query(points[lost], k=1, distance_upper_bound=radius)
    near = np.isfinite(d)
    assign = assign.copy()
    assign[lost[near]] = bg_ids[j[near]]
    return assign


def _check(t: Triplets) -> int:
    """Validate shapes; return L."""
    L = t.features.shape[0] if t.features.ndim == 2 else -1
    where = f"triplets of scene {t.scene_id!r}"
    if L < 0:
        raise ValueError(f"{where}: features must be (L, C), got shape {t.features.shape}; re-run the triplets stage")
    for name, arr, shape in (("points", t.points, (L, 3)), ("labels", t.labels, (L,)), ("valid", t.valid, (L,))):
        if tuple(arr.shape) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(arr.shape)}, expected {shape} to match features "
                             f"{tuple(t.features.shape)}; re-run the triplets stage")
    if L and int(np.min(t.labels)) < -1:  # the majority vote keys labels as label + 1 >= 0
        raise ValueError(f"{where}: label {int(np.min(t.labels))} < -1; instance labels are object ids >= 0, or -1 "
                         "for no mask")
    return L
