"""Proxy3D: compact 3D proxy tokens for vision-language models.

``from proxy3d import ProxyTokenizer`` gives the tokenizer with no orchestration code involved.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ProxyTokenizer", "Triplets", "Proxies", "Frame", "load_params"]


def __getattr__(name: str) -> Any:  # lazy: importing proxy3d must not import torch/faiss
    if name == "ProxyTokenizer":
        from proxy3d.tokenizer import ProxyTokenizer

        return ProxyTokenizer
    if name in ("Triplets", "Proxies", "Frame"):
        from proxy3d import types

        return getattr(types, name)
    if name == "load_params":
        from proxy3d.config import load_params

        return load_params
    raise AttributeError(f"module 'proxy3d' has no attribute {name!r}")
