"""Robust similarity alignment (Umeyama + RANSAC + IRLS) and gravity from the dominant floor plane.

Used by the ``vggt`` geometry backend to bring VGGT's first-camera, scale-normalised points into the
world frame (metres, z up).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Similarity:
    """y = scale * R @ x + t. R: (3, 3), t: (3,)."""

    scale: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x: (..., 3) -> (..., 3)."""
        return (self.scale * (x @ self.R.T) + self.t).astype(x.dtype, copy=False)

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.scale * self.R, self.t
        return m


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity mapping src (M, 3) onto dst (M, 3), optionally weighted (M,) (Umeyama 1991)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / max(w.sum(), 1e-12)
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var_s = float(w @ (xs ** 2).sum(1))
    scale = float(np.trace(np.diag(S) @ D) / max(var_s, 1e-12))
    return Similarity(scale, R, mu_d - scale * R @ mu_s)


def robust_umeyama(src: np.ndarray, dst: np.ndarray, iters: int = 200, irls_iters: int = 10,
                   threshold: float | None = None, seed: int = 0) -> tuple[Similarity, np.ndarray]:
    """Similarity src -> dst robust to outliers: RANSAC on 3-point samples, then IRLS (Cauchy weights) on the inliers.

    src, dst: (M, 3) corresponding points (M >= 3). ``threshold``: inlier residual in dst units; default
    = 5% of dst's median spread. Returns the similarity and the inlier mask (M,).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    src, dst = src[ok], dst[ok]
    if len(src) < 3:
        raise ValueError(f"similarity alignment needs >= 3 finite correspondences, got {len(src)}")
    if threshold is None:
        threshold = 0.05 * float(np.median(np.linalg.norm(dst - np.median(dst, 0), axis=1))) + 1e-9
    rng = np.random.default_rng(seed)
    best, best_count = None, -1
    for _ in range(iters):
        idx = rng.choice(len(src), 3, replace=False)
        if np.linalg.matrix_rank(src[idx] - src[idx].mean(0), tol=1e-9) < 2:
            continue
        sim = umeyama(src[idx], dst[idx])
        count = int((np.linalg.norm(sim.apply(src) - dst, axis=1) < threshold).sum())
        if count > best_count:
            best, best_count = sim, count
    if best is None:
        raise ValueError("similarity alignment: all correspondences are degenerate (collinear)")
    sim = best
    for _ in range(irls_iters):
        r = np.linalg.norm(sim.apply(src) - dst, axis=1)
        w = 1.0 / (1.0 + (r / threshold) ** 2)  # Cauchy weights
        w[r > 3 * threshold] = 0.0
        if (w > 0).sum() < 3:
            break
        sim = umeyama(src, dst, w)
    inliers = np.zeros(len(ok), bool)
    inliers[np.flatnonzero(ok)] = np.linalg.norm(sim.apply(src) - dst, axis=1) < threshold
    log.debug("robust umeyama: scale %.4f, %d/%d inliers", sim.scale, inliers.sum(), len(inliers))
    return sim, inliers


def fit_plane_ransac(points: np.ndarray, threshold: float, iters: int = 300, seed: int = 0) -> tuple[np.ndarray, float, np.ndarray]:
    """Dominant plane n.x + d = 0 of points (M, 3): unit normal (3,), offset, inlier mask (M,)."""
    rng = np.random.default_rng(seed)
    best = (np.array([0.0, 0.0, 1.0]), 0.0, np.zeros(len(points), bool))
    for _ in range(iters):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n = n / np.linalg.norm(n)
        inl = np.abs(points @ n - n @ a) < threshold
        if inl.sum() > best[2].sum():
            best = (n, -float(n @ a), inl)
    n, _, inl = best
    centre = points[inl].mean(0)  # refine by least squares on the inliers
    n = np.linalg.svd(points[inl] - centre)[2][-1]
    return n, -float(n @ centre), inl


def gravity_alignment(points: np.ndarray, up_hint: np.ndarray, seed: int = 0) -> Similarity:
    """Rotation + translation that puts the dominant floor plane at z = 0 with +z up (scale kept).

    points: (M, 3) scene points; up_hint: (3,) rough up direction in the same frame (e.g. the first
    camera's -y axis). The floor is the plane whose normal is within 45 degrees of the hint and that
    lies lowest along it among planes holding >= 5% of the points.
    """
    pts = points[np.isfinite(points).all(1)]
    up_hint = up_hint / np.linalg.norm(up_hint)
    spread = float(np.median(np.linalg.norm(pts - np.median(pts, 0), axis=1))) + 1e-9
    remaining, candidates = pts, []
    for k in range(4):
        if len(remaining) < max(30, 0.05 * len(pts)):
            break
        n, d, inl = fit_plane_ransac(remaining, 0.02 * spread, seed=seed + k)
        if inl.sum() < 0.05 * len(pts):
            break
        if n @ up_hint < 0:
            n, d = -n, -d
        if n @ up_hint > np.cos(np.radians(45)):
            candidates.append((n, d, float(remaining[inl].mean(0) @ up_hint)))
        remaining = remaining[~inl]
    if not candidates:
        raise ValueError("gravity alignment: no floor-like plane found (no pose, no depth); provide poses or depth")
    n, d, _ = min(candidates, key=lambda c: c[2])
    z = n
    x = np.cross([0.0, 1.0, 0.0], z) if abs(z[1]) < 0.9 else np.cross([1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])  # rows: new axes in old coordinates
    return Similarity(1.0, R, np.array([0.0, 0.0, d]))  # z' = n.x + d: distance above the floor
