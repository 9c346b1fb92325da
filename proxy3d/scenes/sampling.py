"""Frame sampling shared by every reader (export layout, .sens, video): N frames, uniform over the sequence."""

from __future__ import annotations

import numpy as np


def sample_indices(n: int, k: int) -> np.ndarray:
    """Positions of ``k`` frames spread uniformly over ``n`` (first and last included); all when ``k <= 0``
    or ``k >= n``. Returns (min(k, n),) int64, strictly increasing."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if k <= 0 or k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 1:
        return np.array([(n - 1) // 2], dtype=np.int64)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)
