"""BFS serialization (permutation, deterministic, spatially coherent) and proxies save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from proxy3d import ProxyTokenizer
from proxy3d.tokenizer.serialize import bfs_order, mean_step
from proxy3d.tokenizer.synthetic import make_triplets
from proxy3d.types import load_proxies, save_proxies


def test_bfs_is_a_deterministic_permutation() -> None:
    c = np.random.default_rng(0).uniform(0, 5, (300, 3))
    a, b = bfs_order(c, 6), bfs_order(c.copy(), 6)
    assert sorted(a.tolist()) == list(range(300))
    np.testing.assert_array_equal(a, b)


def test_bfs_starts_nearest_the_origin_and_neighbours_are_close() -> None:
    c = np.random.default_rng(1).uniform(0, 6, (700, 3))
    order = bfs_order(c, 6)
    assert order[0] == np.argmin((c ** 2).sum(1))
    bfs = mean_step(c[order])
    rnd = np.mean([mean_step(c[np.random.default_rng(s).permutation(700)]) for s in range(5)])
    assert bfs < 0.5 * rnd, (bfs, rnd)


def test_disconnected_parts_are_appended_nearest_first() -> None:
    rng = np.random.default_rng(2)
    near = rng.uniform(0, 1, (20, 3))
    mid = rng.uniform(0, 1, (20, 3)) + [10, 0, 0]
    far = rng.uniform(0, 1, (20, 3)) + [30, 0, 0]
    c = np.concatenate([far, near, mid])  # input order must not matter
    order = bfs_order(c, 3)
    part = np.repeat([2, 0, 1], 20)[order]
    assert part.tolist() == [0] * 20 + [1] * 20 + [2] * 20


def test_bfs_handles_tiny_inputs() -> None:
    assert bfs_order(np.zeros((0, 3))).size == 0
    assert bfs_order(np.ones((1, 3))).tolist() == [0]
    assert sorted(bfs_order(np.zeros((5, 3))).tolist()) == list(range(5))  # duplicate centres


def test_tokenized_sequence_is_spatially_coherent() -> None:
    t = make_triplets(5000, 8, seed=4)
    p = ProxyTokenizer(400).tokenize(t)
    rnd = mean_step(p.centers[np.random.default_rng(0).permutation(len(p))])
    assert mean_step(p.centers) < 0.5 * rnd


def test_saved_proxies_round_trip(tmp_path: Path) -> None:
    t = make_triplets(3000, 16, seed=9)
    p = ProxyTokenizer(200).tokenize(t)
    save_proxies(p, tmp_path / "s.safetensors")
    q = load_proxies(tmp_path / "s.safetensors")
    assert q.scene_id == p.scene_id and q.meta == p.meta
    for name in ("features", "centers", "instance", "category", "count", "members"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))


def test_tokenize_file_writes_and_reports(tmp_path: Path) -> None:
    from proxy3d.types import save_triplets

    t = make_triplets(2000, 8, seed=10, scene_id="scene0001_00")
    save_triplets(t, tmp_path / "scene0001_00.safetensors")
    stats = ProxyTokenizer(150).tokenize_file(tmp_path / "scene0001_00.safetensors", tmp_path / "out" / "p.safetensors")
    assert stats["scene_id"] == "scene0001_00" and stats["tokens"] == 150 and stats["time_s"] >= 0
    assert len(load_proxies(tmp_path / "out" / "p.safetensors")) == 150
    # a second run writes the same bytes (no wall time in the file), so DVC sees unchanged proxies
    ProxyTokenizer(150).tokenize_file(tmp_path / "scene0001_00.safetensors", tmp_path / "out" / "q.safetensors")
    assert (tmp_path / "out" / "p.safetensors").read_bytes() == (tmp_path / "out" / "q.safetensors").read_bytes()


def test_tokenize_cli_names_outputs_by_scene_and_refuses_bad_arguments(tmp_path: Path, capsys, monkeypatch) -> None:
    import pytest

    from proxy3d.stages.tokenize_cli import main
    from proxy3d.types import save_triplets

    monkeypatch.chdir(tmp_path)  # no ./params.yaml: the built-in defaults, not the checkout's params
    src = tmp_path / "triplets"
    save_triplets(make_triplets(800, 8, seed=11, scene_id="sceneB"), src / "wrongname.safetensors")
    assert main([str(src), "--budget", "40", "--out", str(tmp_path / "out")]) == 0
    # readers look proxies up as <scene_id>.safetensors: named after the input file, this scene was skipped
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sceneB.safetensors"]
    assert len(load_proxies(tmp_path / "out" / "sceneB.safetensors")) == 40
    assert "sceneB: 40 tokens" in capsys.readouterr().out
    with pytest.raises(ValueError, match="is the folder of the input triplets"):
        main([str(src), "--out", str(src)])
    with pytest.raises(ValueError, match="--budget 0: a scene needs at least 1"):
        main([str(src), "--budget", "0", "--out", str(tmp_path / "o2")])
    with pytest.raises(FileNotFoundError, match="--params .*nope.yaml: no such file"):
        main([str(src), "--params", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o2")])
    with pytest.raises(ValueError, match="not a triplets file .*missing \\['points'"):
        main([str(tmp_path / "out" / "sceneB.safetensors"), "--out", str(tmp_path / "o3")])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        main([str(src), "--out", str(tmp_path / "afile")])
