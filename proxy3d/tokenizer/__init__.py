"""Proxy tokenizer: semantic grouping, allocation, intra-group k-means, BFS serialization, baselines."""

from proxy3d.tokenizer.tokenizer import METHODS, ProxyTokenizer

__all__ = ["METHODS", "ProxyTokenizer"]
