"""Multi-view label consensus (``proxy3d.tokenizer.consensus``) and its use by ``semantic``."""

from __future__ import annotations

import numpy as np
import pytest

from proxy3d.tokenizer import ProxyTokenizer
from proxy3d.tokenizer.consensus import vote_labels


def _voxel(centre: tuple[float, float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """n points strictly inside the 5 cm voxel whose lower corner is ``centre`` (no boundary crossings)."""
    return np.asarray(centre) + 0.005 + 0.04 * rng.random((n, 3))


def test_minority_mislabelled_patch_takes_the_voxel_majority() -> None:
    rng = np.random.default_rng(0)
    pts = np.concatenate([_voxel((0.0, 0.0, 0.0), 10, rng), _voxel((1.0, 0.0, 0.0), 5, rng)])
    lab = np.array([3] * 9 + [7] + [7] * 5)  # patch 9: another view's mask leaked label 7 onto object 3
    out = vote_labels(pts, lab, voxel=0.05, keep=0.34, take=0.66)
    assert out[9] == 3
    assert (out[:9] == 3).all() and (out[10:] == 7).all()  # object 7's own voxel is untouched
    assert out.dtype == np.int64 and lab[9] == 7  # a copy, input not modified


def test_mixed_voxel_keeps_its_labels() -> None:
    rng = np.random.default_rng(1)
    pts = _voxel((0.0, 0.0, 0.0), 10, rng)
    two = np.array([1] * 6 + [2] * 4)  # 60/40: no label holds 2/3, nobody flips
    np.testing.assert_array_equal(vote_labels(pts, two), two)
    three = np.array([1] * 5 + [2] * 3 + [5] * 2)  # 50/30/20: label 5 is a minority but there is no clear winner
    np.testing.assert_array_equal(vote_labels(pts, three), three)
    close = np.array([1] * 7 + [2] * 3)  # winner 70% but label 2 holds 30% < keep 34%: flips
    assert (vote_labels(pts, close) == 1).all()
    assert (vote_labels(pts, close, keep=0.25) == close).all()  # 30% >= keep 25%: stays


def test_unlabelled_patches_neither_vote_nor_change() -> None:
    rng = np.random.default_rng(2)
    pts = _voxel((0.0, 0.0, 0.0), 10, rng)
    lab = np.array([-1] * 6 + [4, 4, 4, 9])  # -1 would be the majority if it voted
    out = vote_labels(pts, lab)
    assert (out[:6] == -1).all()  # unlabelled stay unlabelled
    assert (out[6:] == 4).all()  # 9 holds 1/4 of the labelled patches, 4 holds 3/4
    assert (vote_labels(pts, np.full(10, -1)) == -1).all()
    assert vote_labels(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)).shape == (0,)


def test_vote_is_deterministic_and_order_independent() -> None:
    rng = np.random.default_rng(3)
    pts = rng.random((3000, 3)) * 0.5
    lab = rng.integers(-1, 4, 3000)
    lab[pts[:, 0] < 0.25] = np.where(rng.random(int((pts[:, 0] < 0.25).sum())) < 0.9, 2, lab[pts[:, 0] < 0.25])
    a, b = vote_labels(pts, lab), vote_labels(pts, lab)
    np.testing.assert_array_equal(a, b)
    assert (a != lab).sum() > 0
    perm = rng.permutation(3000)
    np.testing.assert_array_equal(vote_labels(pts[perm], lab[perm]), a[perm])


def test_disabled_with_zero_voxel_and_bad_params_rejected() -> None:
    rng = np.random.default_rng(4)
    pts = _voxel((0.0, 0.0, 0.0), 10, rng)
    lab = np.array([3] * 9 + [7])
    np.testing.assert_array_equal(vote_labels(pts, lab, voxel=0.0), lab)
    tok = ProxyTokenizer(4, label_vote_voxel=0.0)
    _, _, info = tok.assign(pts, lab)
    assert info["relabelled"] == 0 and info["labels"][9] == 7
    with pytest.raises(ValueError, match="label_vote_voxel"):
        vote_labels(pts, lab, voxel=-0.05)
    with pytest.raises(ValueError, match="label_vote_take"):
        ProxyTokenizer(4, label_vote_take=0.5)
    with pytest.raises(ValueError, match="label_vote_keep"):
        ProxyTokenizer(4, label_vote_keep=0.8, label_vote_take=0.7)


def test_semantic_uses_the_vote_and_baselines_see_labels_as_given() -> None:
    rng = np.random.default_rng(5)
    pts = np.concatenate([_voxel((0.0, 0.0, 0.0), 10, rng), _voxel((1.0, 0.0, 0.0), 10, rng)])
    lab = np.array([3] * 9 + [7] + [7] * 10)  # patch 9 leaked from object 7, 1 m away
    _, _, info = ProxyTokenizer(4, method="semantic").assign(pts, lab)
    assert info["relabelled"] == 1 and info["labels"][9] == 3
    _, _, base = ProxyTokenizer(4, method="global_kmeans").assign(pts, lab)
    np.testing.assert_array_equal(base["labels"], lab)


def test_huge_extent_and_large_label_ids_give_the_same_vote() -> None:
    rng = np.random.default_rng(6)
    pts = np.concatenate([_voxel((0.0, 0.0, 0.0), 10, rng), [[4e5, 4e5, 4e5]]])  # 5 cm keys would overflow int64
    lab = np.array([3] * 9 + [7, 5])
    out = vote_labels(pts, lab)
    np.testing.assert_array_equal(out, [3] * 10 + [5])
    big = np.where(lab >= 0, lab * 10**12, -1)  # label ids far above N: no lookup table
    np.testing.assert_array_equal(vote_labels(pts, big), out * 10**12)
