"""Multi-view label consensus: a voxel-level vote across frames before semantic grouping.

A real 2D segmenter labels the same 3D point inconsistently across views: a mask leaks over an object
border in one frame and not in the next, and mixed pixels at depth edges lift a patch of one object onto
the surface of another. Per-frame masks carry no 3D consistency; the patches of all frames that fall in
one small voxel (``label_vote_voxel``, 5 cm by default) are several views of the same bit of surface, so
a vote among them restores it. A labelled patch whose label holds less than ``keep`` of the labelled
patches in its voxel, while another label holds at least ``take``, takes that label. Voxels without a
clear majority (two objects genuinely touching) are left alone, and unlabelled patches (-1) neither
vote nor change: covering them stays the job of the background voxels in :mod:`.grouping`.

Cost: one sort of N (voxel, label) keys (16-bit radix passes, :mod:`.sorting`), no loop over patches; deterministic
(no randomness, ties impossible because ``take`` > 1/2 admits at most one winner per voxel).
"""

from __future__ import annotations

import numpy as np

from proxy3d.tokenizer.pooling import bounds
from proxy3d.tokenizer.sorting import unique_inverse_counts


def check_vote_params(voxel: float, keep: float, take: float) -> None:
    """Raise ``ValueError`` naming the ``proxies.label_vote_*`` value and the valid range."""
    if not np.isfinite(voxel) or voxel < 0:
        raise ValueError(f"proxies.label_vote_voxel must be >= 0 metres (0 disables the vote), got {voxel}")
    if not 0.5 < take <= 1:
        raise ValueError(f"proxies.label_vote_take must be in (0.5, 1] so a voxel has at most one winner, got {take}")
    if not 0 <= keep <= take:
        raise ValueError(f"proxies.label_vote_keep must be in [0, label_vote_take={take}], got {keep}")


def vote_labels(points: np.ndarray, labels: np.ndarray, voxel: float = 0.05, keep: float = 0.34,
                take: float = 0.66) -> np.ndarray:
    """Labels after the voxel vote (see module docstring).

    points: (N, 3) finite float, world frame, metres; labels: (N,) int (-1 = unlabelled).
    Returns (N,) int64, a copy; ``voxel == 0`` returns the labels unchanged.
    """
    check_vote_params(voxel, keep, take)
    out = np.asarray(labels, dtype=np.int64).copy()
    lab = np.flatnonzero(out >= 0)
    if voxel == 0 or lab.size < 2:
        return out
    q = np.floor(np.asarray(points, dtype=np.float64)[lab] / voxel).astype(np.int64)
    q -= bounds(q)[0]
    side = int(q.max()) + 1
    codes, code = label_codes(out[lab])
    n_codes = codes.size
    if float(side) ** 3 * n_codes < 2.0 ** 62:  # one sort of (voxel, label) keys
        key = ((q[:, 0] * side + q[:, 1]) * side + q[:, 2]) * n_codes + code
    else:  # huge extent (km-sized at 5 cm): number the voxels first (one more sort) so keys cannot overflow
        _, vid = np.unique(q, axis=0, return_inverse=True)
        key = vid.reshape(-1) * n_codes + code
    pair, pair_of, pair_n = unique_inverse_counts(key)
    pair_code = pair % n_codes
    pair_vox = np.cumsum(np.concatenate([[0], np.diff(pair // n_codes) != 0]))  # sorted keys: voxel runs
    total = np.bincount(pair_vox, weights=pair_n)  # labelled patches per voxel
    share = pair_n / total[pair_vox]
    winner = np.full(total.size, -1, dtype=np.int64)
    strong = share >= take
    winner[pair_vox[strong]] = pair_code[strong]  # at most one per voxel since take > 1/2
    win = winner[pair_vox[pair_of]]
    flip = (share[pair_of] < keep) & (win >= 0)
    out[lab[flip]] = codes[win[flip]]
    return out


def label_codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct labels ascending, (n,) code of each) for labels >= 0; a lookup table when labels are small."""
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    top = int(labels.max())
    if top < 4 * labels.size + 65536:
        present = np.bincount(labels, minlength=top + 1) > 0
        return np.flatnonzero(present), (np.cumsum(present) - 1)[labels]
    codes, code = np.unique(labels, return_inverse=True)
    return codes, code.reshape(-1)
