"""2D encoders: shape contract, declared grid, and real semantics of the EfficientNet-Lite0 weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proxy3d.perception.encoders import build_encoder, pixel_to_patch
from proxy3d.perception.toy import toy_scene
from proxy3d.perception.triplets import patch_labels

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def effnet():
    return build_encoder("efficientnet_lite0", (240, 320), "cpu", batch_size=4)


def test_efficientnet_declares_grid_and_returns_float32(effnet):
    _, frames = toy_scene(n_frames=2, size=(120, 160))  # resized to the 240x320 input
    out = effnet.encode(frames)
    assert effnet.stride == 16 and effnet.grid_size == (15, 20)
    assert out.shape == (2, 15, 20, effnet.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    assert effnet.encode([]).shape == (0, 15, 20, effnet.dim)


def test_efficientnet_features_separate_two_rendered_categories(effnet):
    """Patches of checkered boxes resemble each other more than striped boxes (cosine, on average)."""
    boxes, frames = toy_scene(n_frames=8, size=(240, 320))
    feats = effnet.encode(frames).reshape(-1, effnet.dim)
    labels = np.concatenate([patch_labels(f.instance, effnet.grid_size) for f in frames])
    # keep patches fully inside one box so the test measures the surface, not its border
    pure = np.concatenate([_pure(f.instance, effnet.grid_size) for f in frames])
    style = {b.object_id: b.category for b in boxes}
    cat = np.array([style.get(int(x), -1) if ok else -1 for x, ok in zip(labels, pure, strict=True)])
    f = feats[cat >= 0]
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    c = cat[cat >= 0]
    assert (c == 0).sum() > 30 and (c == 1).sum() > 30
    sim = f @ f.T
    same, diff = c[:, None] == c[None, :], c[:, None] != c[None, :]
    np.fill_diagonal(same, False)
    within, across = sim[same].mean(), sim[diff].mean()
    assert within > across + 0.05, (within, across)


def _pure(instance: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    rows, cols = pixel_to_patch(*instance.shape, grid)
    cell = rows[:, None] * grid[1] + cols[None, :]
    n = grid[0] * grid[1]
    lo = np.full(n, np.iinfo(np.int64).max)
    hi = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(lo, cell.ravel(), instance.ravel())
    np.maximum.at(hi, cell.ravel(), instance.ravel())
    return (lo == hi) & (lo >= 0)


def test_qwen_vision_tower_tiny_contract():
    enc = build_encoder("qwen2_5_vl", (240, 320), "cpu", batch_size=2)
    _, frames = toy_scene(n_frames=3, size=(60, 80))
    out = enc.encode(frames)
    assert enc.stride == 28 and enc.input_size == (252, 308) and enc.grid_size == (9, 11)
    assert out.shape == (3, 9, 11, enc.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    # batching does not change the result: images attend only to themselves
    single = enc.encode(frames[:1])
    assert np.allclose(single[0], out[0], atol=1e-4)


def test_unknown_encoder_and_missing_checkpoint_are_named(tmp_path):
    with pytest.raises(ValueError, match="perception.encoder='clip'"):
        build_encoder("clip")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_encoder("qwen2_5_vl", checkpoint=str(tmp_path))
