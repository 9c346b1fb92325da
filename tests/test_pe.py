"""Hybrid 3D position encoding: z' = R(height)·z + FourierMLP(x, y)."""

from __future__ import annotations

import torch

from proxy3d.model.pe import HeightRoPE, HybridPE3D


def test_pe_shapes_and_dtype() -> None:
    pe = HybridPE3D(64, num_fourier=8)
    out = pe(torch.randn(5, 64), torch.rand(5, 3))
    assert out.shape == (5, 64) and out.dtype == torch.float32


def test_height_rope_is_a_rotation_that_depends_on_height() -> None:
    rope = HeightRoPE(64, scale=1.0)
    z = torch.randn(7, 64, dtype=torch.float64).float()
    h = torch.linspace(0.0, 3.0, 7)
    rz = rope(z, h)
    torch.testing.assert_close(rz.norm(dim=1), z.norm(dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rope(z[:1], torch.zeros(1)), z[:1])  # height 0 = identity
    assert (rz[1:] - z[1:]).abs().max() > 1e-3  # non-zero heights actually rotate
    # a rotation: R(a) then R(b) == R(a + b)
    torch.testing.assert_close(rope(rope(z, h), h), rope(z, 2 * h), rtol=1e-4, atol=1e-4)


def test_fourier_term_depends_only_on_floor_coordinates() -> None:
    torch.manual_seed(0)
    pe = HybridPE3D(32, num_fourier=8)
    assert pe.fourier(torch.rand(3, 2)).abs().max() == 0  # zero-initialised output layer: starts as pure RoPE
    torch.nn.init.normal_(pe.fourier.mlp[2].weight, std=0.1)  # as after training
    z1, z2 = torch.randn(4, 32), torch.randn(4, 32)
    c1 = torch.tensor([[1.0, 2.0, 0.1], [0.5, 0.5, 1.0], [3.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    c2 = c1.clone()
    c2[:, 2] = torch.tensor([2.5, 0.0, 0.7, 1.1])  # other heights, same (x, y)
    f1 = pe(z1, c1) - pe.rope(z1, c1[:, 2])
    f2 = pe(z2, c2) - pe.rope(z2, c2[:, 2])
    torch.testing.assert_close(f1, f2, rtol=1e-5, atol=1e-6)  # independent of z and of the height
    c3 = c1.clone()
    c3[:, 0] += 0.7
    f3 = pe(z1, c3) - pe.rope(z1, c3[:, 2])
    assert (f3 - f1).abs().max() > 1e-4  # but it does depend on x
