"""BFS serialization of proxies: spatially close proxies become neighbours in the token sequence.

Graph: each proxy centre linked to its ``knn`` nearest centres (made symmetric). The walk starts at the
proxy nearest the world origin; a node's unvisited neighbours are queued nearest first (ties: lower
index). When a connected component is exhausted, the unvisited proxy nearest to any visited one (ties:
lower index) starts the next component. The result depends only on the centres, so it is deterministic.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.spatial import cKDTree


def knn_graph(centers: np.ndarray, knn: int) -> list[np.ndarray]:
    """Symmetric k-NN adjacency; each node's neighbours sorted by (distance, index). centers: (K, 3)."""
    K = centers.shape[0]
    if K <= 1:
        return [np.zeros(0, dtype=np.int64) for _ in range(K)]
    k = min(knn + 1, K)
    dist, nbr = cKDTree(centers).query(centers, k=k)
    i = np.repeat(np.arange(K), k)
    j, d = nbr.reshape(-1).astype(np.int64), dist.reshape(-1)
    i, j, d = np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([d, d])
    keep = i != j
    i, j, d = i[keep], j[keep], d[keep]
    order = np.lexsort((j, d, i))
    i, j = i[order], j[order]
    first = np.concatenate([[True], (i[1:] != i[:-1]) | (j[1:] != j[:-1])])  # drop duplicate edges
    i, j = i[first], j[first]
    return np.split(j, np.searchsorted(i, np.arange(1, K)))


def bfs_order(centers: np.ndarray, knn: int = 6) -> np.ndarray:
    """(K,) int64 permutation: ``centers[order]`` is the serialized sequence. centers: (K, 3) finite."""
    c = np.asarray(centers, dtype=np.float64)
    K = c.shape[0]
    if K == 0:
        return np.zeros(0, dtype=np.int64)
    adj = knn_graph(c, knn)
    visited = np.zeros(K, dtype=bool)
    gap = np.full(K, np.inf)  # distance of each proxy to the nearest visited one
    order: list[int] = []
    start = int(np.lexsort((np.arange(K), (c ** 2).sum(1)))[0])
    while True:
        queue = deque([start])
        visited[start] = True
        component = []
        while queue:
            i = queue.popleft()
            component.append(i)
            for j in adj[i].tolist():
                if not visited[j]:
                    visited[j] = True
                    queue.append(j)
        order.extend(component)
        if len(order) == K:
            break
        done = np.asarray(component)
        rest = np.flatnonzero(~visited)
        d, _ = cKDTree(c[done]).query(c[rest], k=1)
        gap[rest] = np.minimum(gap[rest], d)
        start = int(rest[np.lexsort((rest, gap[rest]))[0]])
    return np.asarray(order, dtype=np.int64)


def mean_step(centers: np.ndarray) -> float:
    """Mean distance between consecutive centres of a sequence (K, 3); 0 for K < 2."""
    if centers.shape[0] < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(centers.astype(np.float64), axis=0), axis=1).mean())
