"""Proxy allocation between groups: K_g ∝ |G_g| with exact largest-remainder rounding.

Policy (DESIGN.md §5), for group sizes ``n`` (G,), budget ``K`` and ``T = min(K, Σ n)``:

* Every *guaranteed* group gets at least ``lo_g = min(m, n_g)`` proxies (``m = min_per_group``), the
  others (the tokenizer's background voxels) ``lo_g = 0``; at most ``hi_g = min(n_g, cap_g)``
  (``cap_g`` = per-object cap for capped groups, else unbounded).
* Continuous quotas ``q_g = clip(s · n_g, lo_g, hi_g)`` with the scale ``s`` chosen so Σ q_g = T; then
  floors plus the largest fractional remainders (ties: larger group, then lower index) give integers
  with Σ K_g = T exactly. A larger group never gets fewer proxies than a smaller one with the same bounds.
* If ``m`` proxies per guaranteed group do not fit (``G' · m > T``, G' guaranteed groups) but one each
  does, ``m`` is lowered to ``T // G'``.
* **More guaranteed groups than budget** (``G' > T``): the ``T`` groups with the highest ``priority``
  (then the largest, then the lowest index) get one proxy each, all others get 0. A group with 0
  proxies leaves its patches unassigned (``members = -1``, counted as ``dropped_patches``).
* With a cap, Σ hi_g may be below ``T``: then every group gets ``hi_g`` and the total is Σ hi_g < T.
"""

from __future__ import annotations

import numpy as np


def allocate(sizes: np.ndarray, budget: int, min_per_group: int = 1, caps: np.ndarray | None = None,
             priority: np.ndarray | None = None, guaranteed: np.ndarray | None = None) -> np.ndarray:
    """Proxies per group.

    sizes: (G,) int >= 0 patches per group; budget: K >= 0; caps: (G,) int, 0 = uncapped;
    priority: (G,) int, higher is kept first when groups outnumber the budget; guaranteed: (G,) bool
    groups owed the minimum (default: all).
    Returns (G,) int64 with 0 <= K_g <= n_g and Σ K_g = min(K, Σ n) (or Σ hi_g when caps bind).
    """
    n = np.asarray(sizes, dtype=np.int64)
    if n.ndim != 1 or (n < 0).any():
        raise ValueError(f"group sizes must be a 1-D array of non-negative ints, got {n!r}")
    if budget < 0 or min_per_group < 0:
        raise ValueError(f"budget ({budget}) and min_per_group ({min_per_group}) must be >= 0")
    G = n.size
    out = np.zeros(G, dtype=np.int64)
    nonempty = n > 0
    T = int(min(budget, n.sum()))
    if T == 0:
        return out
    caps_arr = np.zeros(G, dtype=np.int64) if caps is None else np.asarray(caps, dtype=np.int64)
    prio = np.zeros(G, dtype=np.int64) if priority is None else np.asarray(priority, dtype=np.int64)
    owed = nonempty if guaranteed is None else nonempty & np.asarray(guaranteed, dtype=bool)
    n_owed = int(owed.sum())
    if n_owed > T:
        idx = np.flatnonzero(owed)
        keep = idx[np.lexsort((idx, -n[idx], -prio[idx]))[:T]]
        out[keep] = 1
        return out
    m = min(min_per_group, T // n_owed) if n_owed else 0
    lo = np.where(owed, np.minimum(m, n), 0)
    hi = np.where(caps_arr > 0, np.minimum(n, caps_arr), n)
    hi = np.where(nonempty, np.maximum(hi, lo), 0)
    if hi.sum() <= T:
        return hi.copy()
    q = _quotas(n.astype(np.float64), lo.astype(np.float64), hi.astype(np.float64), float(T))
    return _round(q, n, lo, hi, T)


def _quotas(n: np.ndarray, lo: np.ndarray, hi: np.ndarray, T: float) -> np.ndarray:
    """clip(s·n, lo, hi) with Σ = T, found by bisection on s (Σ is continuous, non-decreasing in s)."""
    a, b = 0.0, 1.0  # s = 1 gives clip(n, lo, hi) = hi, and Σ hi > T here
    for _ in range(200):
        s = 0.5 * (a + b)
        if np.clip(s * n, lo, hi).sum() < T:
            a = s
        else:
            b = s
        if b - a <= 1e-15 * b:
            break
    return np.clip(b * n, lo, hi)


def _round(q: np.ndarray, n: np.ndarray, lo: np.ndarray, hi: np.ndarray, T: int) -> np.ndarray:
    """Largest-remainder rounding of quotas ``q`` to integers in [lo, hi] summing to ``T``."""
    k = np.clip(np.floor(q + 1e-9).astype(np.int64), lo, hi)
    frac = q - k
    idx = np.arange(q.size)
    short = T - int(k.sum())
    if short > 0:
        room = np.flatnonzero(k < hi)
        order = room[np.lexsort((idx[room], -n[room], -frac[room]))]
        k[order[:short]] += 1
    elif short < 0:  # only from float error: take back from the smallest remainders
        room = np.flatnonzero(k > lo)
        order = room[np.lexsort((-idx[room], n[room], frac[room]))]
        k[order[:-short]] -= 1
    return k
