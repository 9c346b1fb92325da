"""Pointer head: identifier logits from a score of every proxy (a pointer-generator output).

At each text position the head scores the row's proxies, (W_q h_t) · (W_k h_p) / sqrt(D), from the last hidden
states h_t of the position and h_p of each proxy (W_q and W_k start at the identity: a pointer network's
attention), and each scene object's best proxy score is added to its ``<OBJm>`` logit; identifiers absent from
the scene get nothing. The LM head alone never learned "Which object is closest to <OBJa>?" above chance in stage
2 (issue 8); ``bench/nearest.py`` found this head, trained on the frozen model with the asked object's position on
its identifier token (``model.direct_position``) and a room-scale F(x, y), 2.3-3x above chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from proxy3d.model.inputs import SceneInput


class PointerHead(nn.Module):
    """Bilinear proxy scores from (D,) hidden states; ``num_ids`` identifiers (``<OBJ000>``...)."""

    def __init__(self, dim: int, num_ids: int) -> None:
        super().__init__()
        self.num_ids = int(num_ids)
        self.q, self.k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        with torch.no_grad():
            for lin in (self.q, self.k):
                lin.weight.copy_(torch.eye(dim))
                lin.bias.zero_()

    def keys(self, hidden: torch.Tensor, proxy_mask: torch.Tensor,
             scenes: Sequence[SceneInput]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per row: (K, D) keys of its proxies (in scene order, as they fill the placeholders) and their (K,)
        identifiers (-1 where the proxy names no identifier). hidden: (B, L, D); proxy_mask: (B, L) bool."""
        out = []
        for row, scene in enumerate(scenes):
            inst = torch.as_tensor(np.asarray(scene.instance), dtype=torch.long, device=hidden.device)
            inst = torch.where((inst >= 0) & (inst < self.num_ids), inst, torch.full_like(inst, -1))
            out.append((self.k(hidden[row][proxy_mask[row]]), inst))
        return out

    def object_logits(self, hidden: torch.Tensor, keys: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """(B, T, num_ids): each identifier's best proxy score from each of the (B, T, D) ``hidden`` positions,
        0 for identifiers the row's scene does not hold."""
        b, t, d = hidden.shape
        q = self.q(hidden)
        out = hidden.new_zeros(b, t, self.num_ids)
        for row, (k, inst) in enumerate(keys):
            named = inst >= 0
            if not bool(named.any()):
                continue
            s = q[row] @ k[named].T / d**0.5  # (T, K')
            idx = inst[named].expand_as(s)
            best = s.new_full((t, self.num_ids), float("-inf")).scatter_reduce(1, idx, s, "amax")
            out[row] = torch.where(torch.isinf(best), torch.zeros_like(best), best)
        return out
