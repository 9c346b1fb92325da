"""Model inputs: the visual tokens of a scene (:class:`SceneInput`) and text encoding/collation.

A sequence is ``[PROXY]×K`` (one placeholder per visual token, replaced by its embedding in
:meth:`Proxy3DModel.embed`) followed by one or more turns ``prompt`` + ``" " + answer`` + eos. Labels
are -100 everywhere except on answer tokens and their eos (loss on answers only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

IGNORE = -100


@dataclass
class SceneInput:
    """Visual tokens of one scene, in sequence order (K may be 0: blind baseline).

    centers: (K, 3) float32 metres (z up); instance: (K,) int64 object id (-1 none);
    category: (K,) int64 category id (-1 unknown); features: (K, C) float32 proxy features, or None for
    a simplified scene (stages 1-3: one token per object = identifier + symbol embedding at its centre).
    """

    centers: np.ndarray
    instance: np.ndarray
    category: np.ndarray
    features: np.ndarray | None = None
    scene_id: str = ""

    def __post_init__(self) -> None:
        # a length-1 instance or category array would broadcast over every proxy and give wrong answers silently
        k = np.shape(self.centers)[0] if np.ndim(self.centers) == 2 else -1
        shapes = {"centers": np.shape(self.centers), "instance": np.shape(self.instance),
                  "category": np.shape(self.category)}
        if self.features is not None:
            shapes["features"] = np.shape(self.features)
        ok = (k >= 0 and shapes["centers"][1:] == (3,) and shapes["instance"] == (k,) and shapes["category"] == (k,)
              and (self.features is None or (len(shapes["features"]) == 2 and shapes["features"][0] == k)))
        if not ok:
            raise ValueError(f"SceneInput {self.scene_id!r}: shapes {shapes}; need centers (K, 3), instance (K,), "
                             "category (K,) and features (K, C) or None for the same K")

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    @classmethod
    def empty(cls, scene_id: str = "") -> SceneInput:
        """No visual tokens (blind baseline)."""
        return cls(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), None, scene_id)

    @classmethod
    def from_proxies(cls, proxies: Any) -> SceneInput:
        """From :class:`proxy3d.types.Proxies` (real scenes, stage 4 and evaluation)."""
        return cls(np.asarray(proxies.centers, np.float32), np.asarray(proxies.instance, np.int64),
                   np.asarray(proxies.category, np.int64), np.asarray(proxies.features, np.float32),
                   proxies.scene_id)

    @classmethod
    def from_objects(cls, object_ids: Sequence[int], categories: Sequence[int], centers: np.ndarray,
                     scene_id: str = "") -> SceneInput:
        """Simplified scene: one fused identifier+symbol token per object at its centre."""
        return cls(np.asarray(centers, np.float32).reshape(-1, 3), np.asarray(object_ids, np.int64),
                   np.asarray(categories, np.int64), None, scene_id)


@dataclass
class Example:
    """One training sequence: a scene and its (prompt, answer) turns."""

    scene: SceneInput
    turns: list[tuple[str, str]] = field(default_factory=list)


def prompt_text(question: str, situation: Any = None, options: Any = None) -> str:
    """The text of one question (situation and options inline). A missing situation — None, empty, or the NaN
    that pandas reads from a null Parquet cell (every non-SQA3D SpaceSpan row) — adds no "Situation:" part;
    "Situation: nan" was once trained into every such prompt while the API's ``situation=None`` left it out.
    ``options`` (:func:`option_list`) is normalised here too, so training rows and API items with the same
    values get the same prompt."""
    parts = []
    situation = text_or_none(situation)
    if situation is not None:
        parts.append(f"Situation: {situation}")
    parts.append(f"Question: {question}")
    opts = option_list(options)
    if opts:
        parts.append("Options: " + "; ".join(opts))
    return " ".join(parts) + " Answer:"


def text_or_none(value: Any) -> str | None:
    """``value`` as stripped text, or None when it is missing (None, NaN/pandas NA, blank)."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def option_list(value: Any) -> list[str] | None:
    """Multiple-choice options as a list of strings, or None when missing (None, NaN, blank, empty). A list,
    tuple or array (Parquet list cells come back as numpy arrays) is taken as is; a single string is refused,
    since splitting it into characters (or dropping it) would silently change the question."""
    if value is None or (np.ndim(value) == 0 and not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        raise ValueError(f"options={value[:60]!r} is one string; give a list of options such as "
                         "['A. chair', 'B. table'] (SpaceSpan's options column is a list of strings)")
    return [str(o) for o in value] or None


@dataclass
class Batch:
    """input_ids, attention_mask, labels: (B, L) long; scenes: B scene inputs (placeholders in order)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    scenes: list[SceneInput]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


class TextCodec:
    """Token-id side of the format, wrapping any HF tokenizer that has the proxy and ``<OBJ###>`` tokens."""

    def __init__(self, tokenizer: Any, proxy_token_id: int) -> None:
        self.tok = tokenizer
        self.proxy_id = int(proxy_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def example(self, ex: Example, max_text: int) -> tuple[list[int], list[int]]:
        """ids and labels of one example; turns past ``max_text`` text tokens are dropped (the first is kept)."""
        ids = [self.proxy_id] * len(ex.scene)
        labels = [IGNORE] * len(ids)
        used = 0
        for i, (prompt, answer) in enumerate(ex.turns):
            q, a = self.encode(prompt), self.encode(" " + answer) + [self.eos_id]
            if i and used + len(q) + len(a) > max_text:
                break
            ids += q + a
            labels += [IGNORE] * len(q) + a
            used += len(q) + len(a)
        return ids, labels

    def collate(self, examples: Sequence[Example], max_text: int) -> Batch:
        """Right-padded training batch."""
        seqs = [self.example(ex, max_text) for ex in examples]
        L = max(len(s[0]) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        lab = torch.full((len(seqs), L), IGNORE, dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        for b, (i, lb) in enumerate(seqs):
            ids[b, : len(i)] = torch.tensor(i)
            lab[b, : len(lb)] = torch.tensor(lb)
            att[b, : len(i)] = 1
        return Batch(ids, att, lab, [ex.scene for ex in examples])

    def prompts(self, scenes: Sequence[SceneInput], prompts: Sequence[str]) -> Batch:
        """Left-padded generation batch (labels unused)."""
        seqs = [[self.proxy_id] * len(s) + self.encode(p) for s, p in zip(scenes, prompts, strict=True)]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, L - len(s) :] = torch.tensor(s)
            att[b, L - len(s) :] = 1
        return Batch(ids, att, torch.full_like(ids, IGNORE), list(scenes))
