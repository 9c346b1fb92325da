"""Stable sorts of the tokenizer's integer keys as 16-bit radix passes.

NumPy sorts 16-bit integers with a radix sort (``kind="stable"``) but 64-bit ones with introsort or timsort. The
tokenizer's keys (voxel x label cells, Z-order codes, proxy x label pairs) are non-negative and narrower than 64
bits, so sorting them as ceil(bits / 16) stable 16-bit passes (least significant digit first) is 2-4x faster at
its sizes (43k keys: 0.4-0.9 ms against 1.8 ms for ``np.argsort`` and 2.4 ms stable, measured). The permutation
is the one ``np.argsort(keys, kind="stable")`` gives, so everything built on it is unchanged.
"""

from __future__ import annotations

import numpy as np


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """(n,) intp permutation sorting the integer ``keys`` (n,), equal keys in input order."""
    k = np.asarray(keys)
    if k.size == 0:
        return np.zeros(0, dtype=np.intp)
    lo = int(k.min())
    u = (k.astype(np.int64) - lo).astype(np.uint64) if lo < 0 else k.astype(np.uint64)
    bits = max(int(u.max()).bit_length(), 1)
    perm = None
    for shift in range(0, bits, 16):
        digit = ((u >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.uint16)
        perm = np.argsort(digit, kind="stable") if perm is None else perm[np.argsort(digit[perm], kind="stable")]
    return perm


def unique_inverse_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True, return_counts=True)`` for integer keys, on :func:`stable_argsort`."""
    k = np.asarray(keys)
    perm = stable_argsort(k)
    s = k[perm]
    first = np.empty(s.size, dtype=bool)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    inverse = np.empty(s.size, dtype=np.intp)
    inverse[perm] = np.cumsum(first) - 1
    counts = np.diff(np.append(np.flatnonzero(first), s.size))
    return s[first], inverse, counts
