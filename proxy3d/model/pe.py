"""Hybrid 3D position encoding of proxy tokens (paper eq. for z'):

    z' = R(h) · z + F(x, y)

``R(h)`` rotates consecutive feature pairs by angles proportional to the proxy's height h (RoPE over
feature pairs, no parameters, norm preserving); ``F`` maps learnable Fourier features of the floor-plane
coordinates (x, y) through an MLP. World frame: metres, z up, so ``centers[:, 2]`` is the height.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class HeightRoPE(nn.Module):
    """Rotation of feature pairs (2i, 2i+1) by angle ``h * scale * base**(-i / (D/2))``.

    z: (N, D) with D even; h: (N,) metres -> (N, D). ``base`` sets the slowest frequency, so most
    pairs rotate little over a room's height while the fastest turns ``scale`` radians per metre.
    """

    def __init__(self, dim: int, scale: float = 1.0, base: float = 100.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"HeightRoPE needs an even width, got {dim}")
        inv = scale * base ** (-torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        ang = h.to(torch.float32)[:, None] * self.inv_freq[None, :]  # (N, D/2)
        cos, sin = ang.cos().to(z.dtype), ang.sin().to(z.dtype)
        z1, z2 = z[:, 0::2], z[:, 1::2]
        out = torch.stack([z1 * cos - z2 * sin, z1 * sin + z2 * cos], dim=-1)  # (N, D/2, 2)
        return out.flatten(1)


class FourierXY(nn.Module):
    """Learnable Fourier features of (x, y) through a 2-layer MLP: (N, 2) metres -> (N, D)."""

    def __init__(self, dim: int, num_features: int = 16, sigma: float = 0.5) -> None:
        super().__init__()
        self.B = nn.Parameter(torch.randn(2, num_features) * sigma)  # cycles per metre
        self.mlp = nn.Sequential(nn.Linear(2 * num_features, dim), nn.GELU(), nn.Linear(dim, dim))
        with torch.no_grad():  # start at exactly 0 (zero-init output layer): the term grows only where it helps
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()

    @torch.no_grad()
    def reinit(self, sigma: float, norm: float, generator: torch.Generator, room: float = 6.0,
               new_frequencies: bool = True) -> None:
        """Random frequencies of std ``sigma`` cycles/m (``new_frequencies=False``: keep B) and a random output
        layer scaled so F(p) - mean F has mean norm ``norm`` over points p uniform on a ``room`` x ``room`` m floor
        (the MLP's first layer is kept)."""
        if new_frequencies:
            b = torch.randn(self.B.shape, generator=generator)
            self.B.copy_(b * sigma / b.std())
        w = self.mlp[2].weight
        w.copy_(torch.randn(w.shape, generator=generator))
        self.mlp[2].bias.zero_()
        f = self(torch.rand(256, 2, generator=generator).to(w.device) * room)
        w.mul_(norm / (f - f.mean(0)).norm(dim=1).mean().clamp_min(1e-9))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * xy.to(self.B.dtype) @ self.B  # (N, F)
        return self.mlp(torch.cat([proj.cos(), proj.sin()], dim=-1))


class HybridPE3D(nn.Module):
    """z: (N, D) token embeddings, centers: (N, 3) metres -> (N, D) = R(h)·z + F(x, y)."""

    def __init__(self, dim: int, num_fourier: int = 16, height_scale: float = 1.0) -> None:
        super().__init__()
        self.rope = HeightRoPE(dim, scale=height_scale)
        self.fourier = FourierXY(dim, num_fourier)

    def forward(self, z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or centers.shape != (z.shape[0], 3):
            raise ValueError(f"HybridPE3D expects z (N, D) and centers (N, 3), got {tuple(z.shape)} and {tuple(centers.shape)}")
        return self.rope(z, centers[:, 2]) + self.fourier(centers[:, :2]).to(z.dtype)
