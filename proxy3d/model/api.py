"""Stable inference API of a trained Proxy3D checkpoint (what evaluation uses).

    from proxy3d.model.api import SceneInput, load_bundle
    from proxy3d.types import load_proxies

    bundle = load_bundle("artifacts/checkpoints/stage4", device="cpu")
    scenes = {"scene0000_00": SceneInput.from_proxies(load_proxies("artifacts/proxies/scene0000_00.safetensors"))}
    items = [{"scene_id": "scene0000_00", "question": "Where is the chair?", "situation": None, "options": None}]
    texts = bundle.generate(items, scenes, max_new_tokens=24)   # ["chair <OBJ003>"]

- ``items``: dicts with ``scene_id``, ``question`` and optional ``situation`` (str) and ``options`` (list of str),
  as in the SpaceSpan schema; other keys are ignored.
- ``scene_inputs``: either a mapping ``scene_id -> SceneInput`` or a sequence with one ``SceneInput`` per item.
  ``SceneInput.from_proxies(proxies)`` for real scenes, ``SceneInput.empty()`` for the blind baseline,
  ``SceneInput.from_objects(ids, categories, centers)`` for a simplified scene (stages 1-3).
- returns one answer string per item, greedy decoded, ``<OBJ###>`` tokens kept, whitespace normalised;
  ``generate_with_ids`` also returns the identifier numbers read directly from the generated token ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proxy3d.model import text_tokenizer as tt
from proxy3d.model.build import load_model_dir
from proxy3d.model.inputs import SceneInput, TextCodec, prompt_text
from proxy3d.model.proxy_vlm import Proxy3DModel

__all__ = ["Bundle", "SceneInput", "load_bundle"]


@dataclass
class Bundle:
    """A loaded checkpoint: model (eval mode), tokenizer, codec and the checkpoint's ``bundle.json``."""

    model: Proxy3DModel
    tokenizer: Any
    codec: TextCodec
    meta: dict[str, Any]
    batch_size: int = 16

    def _scenes(self, items: Sequence[Mapping[str, Any]],
                scene_inputs: Mapping[str, SceneInput] | Sequence[SceneInput]) -> list[SceneInput]:
        if isinstance(scene_inputs, Mapping):
            out = []
            for it in items:
                sid = str(it.get("scene_id", ""))
                if sid not in scene_inputs:
                    raise KeyError(f"item {it.get('id', '?')!r}: no SceneInput for scene {sid!r}; add it to scene_inputs "
                                   "(SceneInput.empty() for the blind baseline)")
                out.append(scene_inputs[sid])
        else:
            if len(scene_inputs) != len(items):
                raise ValueError(f"{len(scene_inputs)} scene inputs for {len(items)} items; pass one per item or a "
                                 "mapping")
            out = list(scene_inputs)
        for it, scene in zip(items, out, strict=True):  # a swapped list would answer about the wrong room
            sid = str(it.get("scene_id", ""))
            if scene.scene_id and sid and scene.scene_id != sid:
                raise ValueError(f"item {it.get('id', '?')!r} asks about scene {sid!r} but its SceneInput is of scene "
                                 f"{scene.scene_id!r}; pass the inputs in item order or as {{scene_id: SceneInput}}")
        return out

    def generate_with_ids(self, items: Sequence[Mapping[str, Any]],
                          scene_inputs: Mapping[str, SceneInput] | Sequence[SceneInput],
                          max_new_tokens: int = 24) -> list[tuple[str, list[int]]]:
        scenes = self._scenes(items, scene_inputs)
        prompts = [prompt_text(str(it["question"]), it.get("situation"), it.get("options")) for it in items]
        out: list[tuple[str, list[int]]] = []
        dev = self.model.device
        for i in range(0, len(items), self.batch_size):
            b = self.codec.prompts(scenes[i : i + self.batch_size], prompts[i : i + self.batch_size])
            rows = self.model.generate_ids(b.input_ids.to(dev), b.attention_mask.to(dev), b.scenes, max_new_tokens,
                                           self.codec.eos_id, self.codec.pad_id)
            for r in rows:
                text = " ".join(tt.decode(self.tokenizer, r).split())
                out.append((text, tt.object_ids_from_token_ids(r, self.tokenizer)))
        return out

    def generate(self, items: Sequence[Mapping[str, Any]],
                 scene_inputs: Mapping[str, SceneInput] | Sequence[SceneInput], max_new_tokens: int = 24) -> list[str]:
        return [t for t, _ in self.generate_with_ids(items, scene_inputs, max_new_tokens)]


def load_bundle(ckpt_dir: str | Path, device: str | torch.device = "cpu", batch_size: int = 16) -> Bundle:
    """Load ``artifacts/checkpoints/stage<N>/`` (any stage) for inference; ``device`` 'auto' picks cuda if present."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if str(device).startswith("cuda") else None
    model, tok, meta = load_model_dir(Path(ckpt_dir), device, dtype=dtype)
    model.eval()
    return Bundle(model, tok, TextCodec(tok, tt.proxy_token_id(tok)), meta, batch_size)
