"""Training is deterministic with 2 CPU threads: the backward of the reference embeddings' gather."""

from __future__ import annotations

import subprocess
import sys

SNIPPET = r"""
import hashlib, torch
torch.set_num_threads(2)
torch.manual_seed(0)
from proxy3d.model.reference import ReferenceEmbedding
refs = ReferenceEmbedding(256)
refs.set_banks(torch.randn(100, 256), torch.randn(213, 256))
n = 20000
z = torch.randn(n, 256)
inst, cat = torch.randint(0, 100, (n,)), torch.randint(0, 213, (n,))
(refs.fuse(z, inst, cat) * torch.randn(n, 256)).sum().backward()
print(hashlib.sha256(b"".join(p.grad.numpy().tobytes() for p in refs.parameters())).hexdigest())
"""


def test_reference_gradients_are_the_same_in_every_process_with_two_threads() -> None:
    """Indexed as table[ids], the gathers' backward accumulated repeated rows in a varying order with two threads
    (two `dvc repro` runs trained other models); F.embedding's backward does not."""
    runs = {subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, check=True).stdout
            for _ in range(4)}
    assert len(runs) == 1, runs
