"""ProxyTokenizer: contract, semantic purity vs global k-means, edge cases (empty, unlabelled, NaN, K>L, K<groups)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy3d import ProxyTokenizer
from proxy3d.tokenizer import METHODS
from proxy3d.tokenizer.synthetic import make_triplets
from proxy3d.types import Triplets


@pytest.fixture(scope="module")
def scene() -> Triplets:
    return make_triplets(4000, 16, n_furniture=8, seed=3)


def touching_pair(n: int = 3000) -> Triplets:
    objs = [{"object_id": 0, "label": "a", "category": 1, "aabb": [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]},
            {"object_id": 1, "label": "b", "category": 2, "aabb": [1.5, 0.5, 0.5, 1.0, 1.0, 1.0]}]
    return make_triplets(n, 8, objects=objs, clutter=0.0, seed=1)


def labels_per_proxy(t: Triplets, members: np.ndarray) -> list[set[int]]:
    return [set(t.labels[members == k].tolist()) for k in range(int(members.max()) + 1)]


def test_import_from_package_root() -> None:
    import proxy3d

    assert proxy3d.ProxyTokenizer is ProxyTokenizer


@pytest.mark.parametrize("method", METHODS)
def test_every_method_honours_budget_and_contract(scene: Triplets, method: str) -> None:
    p = ProxyTokenizer(300, method=method).tokenize(scene)
    K = len(p)
    assert 0 < K <= 300
    assert p.features.shape == (K, 16) and p.centers.shape == (K, 3)
    assert p.instance.shape == p.category.shape == p.count.shape == (K,)
    assert (p.count >= 1).all() and p.count.sum() == (p.members >= 0).sum()
    k = int(np.argmax(p.count))
    mine = p.members == k
    np.testing.assert_allclose(p.features[k], scene.features[mine].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p.centers[k], scene.points[mine].mean(0), rtol=1e-4, atol=1e-5)


def test_semantic_uses_exact_budget_and_majority_labels(scene: Triplets) -> None:
    p = ProxyTokenizer(700).tokenize(scene)
    assert len(p) == 700
    lost = p.members < 0  # only isolated background patches (clutter, detached mask patches) may stay unassigned
    assert (scene.labels[lost] >= 0).sum() <= p.meta["detached"] and lost.sum() <= 0.02 * len(scene)
    for k in range(0, 700, 37):
        lab = scene.labels[p.members == k]
        assert p.instance[k] == np.bincount(lab + 1).argmax() - 1
        assert p.category[k] == (scene.instance_category[p.instance[k]] if p.instance[k] >= 0 else -1)


def test_touching_objects_never_share_a_proxy_under_semantic() -> None:
    t = touching_pair()
    p = ProxyTokenizer(40, method="semantic", label_vote_voxel=0.0).tokenize(t)
    assert all(len(s) == 1 for s in labels_per_proxy(t, p.members))
    # with the voxel vote (default) the groups are pure in the voted labels; the vote only moves patches
    # whose (1 cm noisy) point lies within one 5 cm voxel of the shared face x = 1
    tok = ProxyTokenizer(40, method="semantic")
    v = t.valid.astype(bool)
    a, _, info = tok.assign(t.points[v].astype(np.float64), t.labels[v])
    moved = info["labels"] != t.labels[v]
    assert 0 < moved.sum() < 0.05 * v.sum()
    assert (np.abs(t.points[v][moved, 0] - 1.0) < 0.05).all()
    assert all(np.unique(info["labels"][a == k]).size == 1 for k in range(int(a.max()) + 1))


def test_touching_objects_do_share_a_proxy_under_global_kmeans() -> None:
    t = touching_pair()
    p = ProxyTokenizer(40, method="global_kmeans").tokenize(t)
    assert any(len(s) == 2 for s in labels_per_proxy(t, p.members))


def test_tokenize_is_deterministic(scene: Triplets) -> None:
    a, b = ProxyTokenizer(500).tokenize(scene), ProxyTokenizer(500).tokenize(scene)
    np.testing.assert_array_equal(a.members, b.members)
    np.testing.assert_array_equal(a.features, b.features)


def test_faiss_backend_gives_same_contract(scene: Triplets) -> None:
    p = ProxyTokenizer(300, kmeans_backend="faiss").tokenize(scene)
    assert len(p) == 300 and all(len(s) == 1 for s in labels_per_proxy(scene, p.members) if -1 not in s)


def test_empty_input_gives_zero_proxies() -> None:
    t = Triplets("empty", np.zeros((0, 8), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.int32),
                 np.zeros(0, bool), np.zeros(0, np.int16))
    for method in METHODS:
        p = ProxyTokenizer(700, method=method).tokenize(t)
        assert len(p) == 0 and p.features.shape == (0, 8) and p.members.shape == (0,)


def test_all_nan_input_and_zero_budget_give_zero_proxies() -> None:
    t = make_triplets(300, 8, seed=4)
    for method in METHODS:
        p = ProxyTokenizer(0, method=method).tokenize(t)
        assert len(p) == 0 and (p.members == -1).all()
    t.points[:] = np.nan
    for method in METHODS:
        p = ProxyTokenizer(50, method=method).tokenize(t)
        assert len(p) == 0 and p.meta["nan_dropped"] == 300 and (p.members == -1).all()


def test_all_unlabelled_input_is_covered_by_voxel_groups(scene: Triplets) -> None:
    t = make_triplets(3000, 8, seed=5)
    t.labels[:] = -1
    p = ProxyTokenizer(300).tokenize(t)
    assert len(p) == 300 and (p.instance == -1).all()
    assert p.meta["groups"] > 1  # voxel groups, not one room-sized group
    widest = max(np.ptp(t.points[p.members == k], axis=0).max() for k in range(len(p)))
    assert widest <= 3 * 0.5  # a voxel plus absorbed sparse neighbours: never room-sized


def test_nan_points_are_dropped_and_counted(scene: Triplets) -> None:
    t = make_triplets(2000, 8, seed=6)
    t.points[[3, 10, 99]] = np.nan
    t.points[500, 1] = np.inf
    t.valid[7] = False
    p = ProxyTokenizer(100).tokenize(t)
    assert p.meta["nan_dropped"] == 4
    assert (p.members[[3, 7, 10, 99, 500]] == -1).all()
    assert np.isfinite(p.features).all() and np.isfinite(p.centers).all()
    assert p.count.sum() == 2000 - 5 - p.meta["dropped_patches"]


def test_budget_larger_than_patches_gives_one_proxy_per_patch() -> None:
    t = make_triplets(250, 8, seed=7)
    p = ProxyTokenizer(1000).tokenize(t)
    assert len(p) == 250 - p.meta["sparse"] and (p.count == 1).all()  # sparse mixed patches join no proxy
    assert len(ProxyTokenizer(1000, sparse_min_share=0).tokenize(t)) == 250


def test_fewer_proxies_than_groups_keeps_the_largest_objects(scene: Triplets) -> None:
    groups = np.unique(scene.labels[scene.labels >= 0])
    p = ProxyTokenizer(5).tokenize(scene)
    assert len(p) == 5 and p.meta["dropped_groups"] > 0 and len(groups) > 5
    sizes = {g: int((scene.labels == g).sum()) for g in groups}
    kept = set(p.instance.tolist())
    assert min(sizes[g] for g in kept) >= max(sizes[g] for g in groups if g not in kept)
    assert (p.members[np.isin(scene.labels, list(kept))] < 0).sum() <= p.meta["detached"]


def test_per_object_cap_limits_proxies_per_object(scene: Triplets) -> None:
    p = ProxyTokenizer(700, per_object_cap=5).tokenize(scene)
    _, per_obj = np.unique(p.instance[p.instance >= 0], return_counts=True)
    assert per_obj.max() <= 5


def test_bad_input_names_scene_and_shapes() -> None:
    t = make_triplets(100, 8, seed=8)
    t.labels = t.labels[:50]
    with pytest.raises(ValueError, match="synthetic.*labels.*\\(50,\\)"):
        ProxyTokenizer(10).tokenize(t)
    with pytest.raises(ValueError, match="unknown tokenizer method 'kmeans'"):
        ProxyTokenizer(10, method="kmeans")


def test_an_object_without_proxies_is_dropped_not_merged_into_the_background() -> None:
    """min_per_group=0 and a budget below the groups: the small object gets no proxy and its patches stay
    unassigned (counted), instead of joining a background proxy whose feature they would then pollute."""
    rng = np.random.default_rng(0)
    cells = np.array([[0.25, 0.25, 0.25], [1.25, 0.25, 0.25], [0.25, 1.25, 0.25], [1.25, 1.25, 0.25]])
    bg = np.concatenate([c + rng.uniform(-0.2, 0.2, (6, 3)) for c in cells])  # 4 background voxels x 6 patches
    obj = np.array([0.3, 0.3, 0.3]) + rng.normal(0, 0.01, (3, 3))  # object 7: 3 patches inside voxel 0
    pts = np.r_[bg, obj].astype(np.float32)
    labels = np.r_[np.full(len(bg), -1), np.full(3, 7)].astype(np.int32)
    n = len(pts)
    t = Triplets("s", rng.normal(size=(n, 4)).astype(np.float32), pts, labels, np.ones(n, bool),
                 np.zeros(n, np.int16), {7: 42}, {})
    p = ProxyTokenizer(4, min_per_group=0).tokenize(t)
    assert len(p) == 4 and (p.instance == -1).all()
    assert (p.members[len(bg):] == -1).all() and p.meta["dropped_patches"] == 3 and p.meta["dropped_groups"] == 1


def test_inconsistent_cap_and_labels_below_minus_one_are_refused() -> None:
    with pytest.raises(ValueError, match="per_object_cap=2 is below proxies.min_per_group=3"):
        ProxyTokenizer(30, min_per_group=3, per_object_cap=2)
    t = make_triplets(100, 8, seed=8)
    t.labels[:3] = -2  # the majority vote keys label + 1: a -2 landed on the previous proxy's top label
    with pytest.raises(ValueError, match="label -2 < -1"):
        ProxyTokenizer(10, method="uniform").tokenize(t)
    with pytest.raises(ValueError, match="proxies.knn must be >= 1, got 0"):  # had failed later, in the BFS walk
        ProxyTokenizer(30, knn=0)


def test_mask_outliers_are_detached_before_grouping() -> None:
    from proxy3d.tokenizer.grouping import detach_outliers

    rng = np.random.default_rng(0)
    body = rng.uniform(0, 1, (400, 3))
    halves = np.concatenate([rng.uniform(0, 0.5, (100, 3)), rng.uniform(0, 0.5, (100, 3)) + [3, 0, 0]])
    stray = np.array([[2.5, 2.5, 2.5], [2.52, 2.5, 2.5]])  # two patches of object 0 projected 2 m away
    pts = np.concatenate([body, stray, halves])
    lab = np.array([0] * 402 + [1] * 200)
    out = detach_outliers(pts, lab, radius=0.25, min_share=0.1)
    assert (out[400:402] == -1).all() and (out[:400] == 0).all()
    assert (out[402:] == 1).all()  # two equal pieces of one object (occlusion) are both kept
    t = make_triplets(2000, 8, seed=11, clutter=0.0)
    t.points[:3] = [[50, 50, 50]] * 3  # far strays keep a labelled proxy from spanning the room
    p = ProxyTokenizer(100).tokenize(t)
    m = p.members[:3]
    assert ((m == -1) | (p.instance[np.maximum(m, 0)] == -1)).all()
    assert p.meta["detached"] >= 3


def test_sparse_mixed_patches_touching_their_object_are_detached() -> None:
    """A streak of mixed-pixel patches running from an object's edge towards the wall behind it touches the
    object (detach_outliers keeps it) but is far sparser than its surface: detach_sparse unlabels it, leaves the
    surface and a 5-patch object whole, and changes nothing when disabled."""
    from proxy3d.tokenizer.grouping import detach_outliers, detach_sparse

    g = np.arange(0, 1 + 1e-9, 0.02)
    xx, zz = np.meshgrid(g, g)
    plate = np.stack([xx.ravel(), np.zeros(xx.size), zz.ravel()], 1)  # 2,601 patches 2 cm apart
    streak = np.stack([np.full(12, 1.0), 0.05 * np.arange(1, 13), np.full(12, 0.5)], 1)  # 5 cm steps, 0.6 m back
    cup = np.array([[3.0, 0, 0], [3.02, 0, 0], [3.0, 0.02, 0], [3.0, 0, 0.02], [3.02, 0.02, 0.02]])
    pts = np.concatenate([plate, streak, cup])
    lab = np.array([0] * (len(plate) + len(streak)) + [1] * len(cup))
    assert (detach_outliers(pts, lab, radius=0.1, min_share=0.1) == lab).all()  # one connected piece
    out = detach_sparse(pts, lab, spacings=3.0, min_share=0.2)
    s = slice(len(plate), len(plate) + len(streak))
    assert (out[s][2:] == -1).all()  # all but the two steps nearest the plate
    assert (out[: len(plate)] == 0).all() and (out[-len(cup):] == 1).all()
    assert (detach_sparse(pts, lab, spacings=0.0, min_share=0.2) == lab).all()
    assert (detach_sparse(pts, lab, spacings=3.0, min_share=0.0) == lab).all()
    box = lambda q: q.max(0) - q.min(0)  # noqa: E731
    assert box(pts[out == 0])[1] < 0.15 < box(pts[lab == 0])[1]


def test_outlier_radius_grows_with_patch_spacing() -> None:
    """On a coarse grid the radius is raised to OUTLIER_SPACINGS spacings, so an object's own faces stay together;
    on a fine grid the same object split by a 0.3 m gap loses its smaller piece."""
    from proxy3d.tokenizer.grouping import OUTLIER_SPACINGS, detach_outliers, patch_spacing

    def plate(step: float, x0: float, x1: float) -> np.ndarray:  # a vertical 2D grid of points, spacing ``step``
        g = np.arange(x0, x1 + 1e-9, step)
        xx, zz = np.meshgrid(g, np.arange(0, 1 + 1e-9, step))
        return np.stack([xx.ravel(), np.zeros(xx.size), zz.ravel()], 1)

    fine = plate(0.02, 0, 1)
    assert patch_spacing(fine) == pytest.approx(0.02, rel=0.1)
    for step, kept in ((0.02, False), (0.1, True)):
        pts = np.concatenate([plate(step, 0, 1), plate(step, 1.3, 1.35)])  # body and a thin strip 0.3 m away
        assert (OUTLIER_SPACINGS * patch_spacing(pts) > 0.3) == kept
        out = detach_outliers(pts, np.zeros(len(pts), np.int64), radius=0.1, min_share=0.1)
        strip = pts[:, 0] > 1.2
        assert (out[strip] == 0).all() == kept and (out[~strip] == 0).all()


def test_neighbour_pairs_match_a_brute_force_search() -> None:
    """The 4-search neighbour lookup finds exactly the touching cell pairs (26-neighbourhood), each once."""
    from proxy3d.tokenizer.grouping import _neighbour_pairs

    rng = np.random.default_rng(0)
    side = 12
    xyz = rng.integers(1, side - 1, size=(400, 3))
    code = rng.integers(0, 2, size=400)  # two labels: the same (x, y, z) under another label never touches
    cells = np.unique(((code * side + xyz[:, 0]) * side + xyz[:, 1]) * side + xyz[:, 2])
    src, dst = _neighbour_pairs(cells, side)
    got = {tuple(sorted(p)) for p in zip(src.tolist(), dst.tolist(), strict=True)}
    assert len(got) == src.size  # no pair twice

    def unpack(c: int) -> np.ndarray:
        return np.array([c // side ** 3, c // side ** 2 % side, c // side % side, c % side])

    parts = np.array([unpack(int(c)) for c in cells])
    want = {(i, j) for i in range(cells.size) for j in range(i + 1, cells.size)
            if parts[i, 0] == parts[j, 0] and np.abs(parts[i, 1:] - parts[j, 1:]).max() == 1}
    assert got == want and len(want) > 100


def test_kmeans_sample_keeps_quality_on_a_dense_grid() -> None:
    """Iterating on <= 16 points per cluster (then two passes over the rest) gives a valid clustering whose inertia
    is within 5% of iterating on every point, deterministically; a negative sample names the parameter."""
    from proxy3d.tokenizer import pooling
    from proxy3d.tokenizer.clustering import grouped_kmeans

    t = make_triplets(20000, 4, n_furniture=6, seed=2)
    pts = t.points.astype(np.float64)
    _, group = np.unique(t.labels, return_inverse=True)  # one group per label, the unlabelled patches one more
    k = np.maximum(np.bincount(group) // 200, 1)  # ~200 points per cluster: sample=16 iterates on ~8%
    inertia = {}
    for sample in (0, 16):
        a = grouped_kmeans(pts, group, k, iters=6, sample=sample)
        np.testing.assert_array_equal(a, grouped_kmeans(pts, group, k, iters=6, sample=sample))
        assert (np.bincount(a, minlength=int(k.sum())) > 0).all()
        offset = np.concatenate([[0], np.cumsum(k)[:-1]])
        assert ((a >= offset[group]) & (a < offset[group] + k[group])).all()  # clusters stay inside their group
        c = pooling.mean_points(a, int(k.sum()), pts)
        inertia[sample] = float(((pts - c[a]) ** 2).sum(1).mean())
    assert inertia[16] <= 1.05 * inertia[0]
    with pytest.raises(ValueError, match="kmeans_sample"):
        grouped_kmeans(pts, group, k, sample=-1)
    with pytest.raises(ValueError, match="kmeans_sample"):
        ProxyTokenizer(100, kmeans_sample=-1)


def test_bounds_equal_axis_reductions() -> None:
    from proxy3d.tokenizer.pooling import bounds

    p = np.random.default_rng(1).normal(size=(1000, 3))
    lo, hi = bounds(p)
    np.testing.assert_array_equal(lo, p.min(0))
    np.testing.assert_array_equal(hi, p.max(0))
    q = np.floor(p * 10).astype(np.int64)
    assert bounds(q)[0].dtype == np.int64 and (bounds(q)[0] == q.min(0)).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=-(2**40), max_value=2**62), max_size=300), st.integers(0, 3))
def test_radix_sort_and_unique_are_numpys(values: list[int], repeat: int) -> None:
    """The 16-bit radix passes give np.argsort's stable permutation and np.unique's values, inverse and counts,
    for negative keys, keys past 48 bits and many repeats (so every tokenizer result built on them is unchanged)."""
    from proxy3d.tokenizer.sorting import stable_argsort, unique_inverse_counts

    keys = np.asarray(values * (repeat + 1), dtype=np.int64)
    np.testing.assert_array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))
    for got, want in zip(unique_inverse_counts(keys), np.unique(keys, return_inverse=True, return_counts=True),
                         strict=True):
        np.testing.assert_array_equal(got, want.reshape(-1))
    u = keys.astype(np.uint64) if keys.size and keys.min() >= 0 else np.zeros(0, dtype=np.uint64)
    np.testing.assert_array_equal(stable_argsort(u), np.argsort(u, kind="stable"))
