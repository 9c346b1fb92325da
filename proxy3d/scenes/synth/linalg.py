"""Small-matrix algebra written with elementwise numpy ops only.

``@`` on float arrays goes through BLAS, whose kernels (and FMA use) differ between CPUs; a last-bit
difference would flip the rounding of some millimetre depths or colour bytes and break the byte-identical
dataset guard (data.dvc) on another machine. Elementwise ``+ - * /`` and ``sqrt`` are IEEE-exact everywhere.
"""

from __future__ import annotations

import math

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    """``v / |v|`` for a (3,) vector."""
    x, y, z = (float(c) for c in v)
    return np.array([x, y, z]) / math.sqrt(x * x + y * y + z * z)


def apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Rotate ``p`` (..., 3) by ``m[:3, :3]`` and add ``m[:3, 3]`` when ``m`` is 4x4."""
    out = p[..., 0:1] * m[:3, 0] + p[..., 1:2] * m[:3, 1] + p[..., 2:3] * m[:3, 2]
    return out + m[:3, 3] if m.shape[1] == 4 else out


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for (4, 4) matrices."""
    return a[:, 0:1] * b[0:1] + a[:, 1:2] * b[1:2] + a[:, 2:3] * b[2:3] + a[:, 3:4] * b[3:4]


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (rotation + translation) 4x4 transform."""
    out = np.eye(4)
    rt = np.ascontiguousarray(m[:3, :3].T)
    out[:3, :3] = rt
    out[:3, 3] = -apply(rt, m[:3, 3])
    return out
