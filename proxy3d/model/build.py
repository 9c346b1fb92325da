"""Build a :class:`Proxy3DModel` from params, and save/load checkpoint folders.

A checkpoint folder (``artifacts/checkpoints/stage<N>/``) holds::

    vlm/              Qwen2.5-VL weights + config (``save_pretrained``; reloaded with ``local_files_only``)
    proxy3d.safetensors   projector, hybrid PE, reference projector/offsets, the frozen reference banks and the
                          pointer head (from stage 2 on)
    tokenizer/        the text tokenizer (``text_tokenizer.save``)
    bundle.json       preset, feature width, PE settings, token ids, stage, whether it has a pointer head
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from proxy3d.config import ModelParams
from proxy3d.io import atomic_write_bytes, write_json
from proxy3d.model import text_tokenizer as tt
from proxy3d.model.presets import build_vlm
from proxy3d.model.proxy_vlm import Proxy3DModel
from proxy3d.model.reference import encode_references, load_identifiers, load_images
from proxy3d.vocab import NUM_IDENTIFIERS, categories

log = logging.getLogger(__name__)


def create_model(mp: ModelParams, tok: Any, symbols_dir: Path | None, feature_dim: int = 0,
                 dtype: torch.dtype | None = None) -> Proxy3DModel:
    """A fresh model: preset (or ``mp.checkpoint``) VLM + new projector/PE/reference modules.

    ``symbols_dir`` holds ``identifiers/<id:03d>.png`` and ``symbols/<cid:03d>.png``; they are encoded once
    by the frozen vision tower into the reference banks. ``None`` keeps zero banks (tests; offsets only).
    """
    vlm = build_vlm(mp.preset, len(tok), tt.proxy_token_id(tok), tok.eos_token_id, tok.pad_token_id,
                    mp.checkpoint, dtype=dtype, qk_identity_init=mp.qk_identity_init,
                    ov_identity_init=mp.ov_identity_init, tie_embeddings=mp.tie_embeddings,
                    embed_init_std=mp.embed_init_std)
    model = Proxy3DModel(vlm, tt.proxy_token_id(tok), tt.object_token_ids(tok), feature_dim,
                         mp.pe_fourier_features, mp.pe_height_scale, len(categories()),
                         tt.category_token_ids(tok, categories()), mp.label_text_tie, mp.direct_position)
    if mp.scene_query_bias and not mp.checkpoint:
        model.init_scene_query_bias(mp.scene_query_bias)
    if symbols_dir is not None:
        visual = vlm.model.visual.eval()
        ids = encode_references(visual, load_identifiers(Path(symbols_dir) / "identifiers", NUM_IDENTIFIERS))
        sem = encode_references(visual, load_images(Path(symbols_dir) / "symbols", len(categories())))
        model.refs.set_banks(ids.to(model.refs.id_bank.dtype), sem.to(model.refs.sem_bank.dtype))
    return model


def _extra_state(model: Proxy3DModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("vlm.")}


def save_model_dir(model: Proxy3DModel, tok: Any, out_dir: Path, meta: dict[str, Any]) -> Path:
    """Write the checkpoint folder (each file atomically; ``bundle.json`` last marks it complete)."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bundle.json").unlink(missing_ok=True)  # a save cut short must not read as a finished older one
    model.vlm.save_pretrained(str(out_dir / "vlm"), safe_serialization=True)
    # the serialized bytes through atomic_write_bytes: save_file recreates its target with mode 0600
    atomic_write_bytes(out_dir / "proxy3d.safetensors", save(_extra_state(model)))
    tt.save(tok, out_dir / "tokenizer")
    write_json(out_dir / "bundle.json", {**meta, "feature_dim": model.feature_dim,
                                         "proxy_token_id": model.proxy_token_id,
                                         "obj_token_ids": model.obj_token_ids,
                                         "pointer": model.pointer is not None})
    return out_dir


def model_params(meta: dict[str, Any]) -> ModelParams:
    """The ``ModelParams`` a checkpoint's ``bundle.json`` was trained with (keys this version lacks are dropped)."""
    return ModelParams(**{k: v for k, v in meta["model"].items() if k in ModelParams.__dataclass_fields__})


def load_model_dir(ckpt_dir: Path, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> tuple[Proxy3DModel, Any, dict[str, Any]]:
    """(model, tokenizer, bundle meta) from a folder written by :func:`save_model_dir`."""
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "bundle.json").exists():
        raise FileNotFoundError(f"{ckpt_dir}: no bundle.json, not a finished checkpoint; run the training stage "
                                "that writes it (proxy3d train --stage N)")
    meta = json.loads((ckpt_dir / "bundle.json").read_text())
    tok = tt.load(ckpt_dir / "tokenizer")
    mp = model_params(meta)
    vlm = build_vlm(mp.preset, len(tok), meta["proxy_token_id"], tok.eos_token_id, tok.pad_token_id,
                    checkpoint=str(ckpt_dir / "vlm"), dtype=dtype)
    model = Proxy3DModel(vlm, meta["proxy_token_id"], meta["obj_token_ids"], int(meta["feature_dim"]),
                         mp.pe_fourier_features, mp.pe_height_scale, len(categories()),
                         tt.category_token_ids(tok, categories()), mp.label_text_tie, mp.direct_position)
    if meta.get("pointer"):
        model.ensure_pointer()
    missing, unexpected = model.load_state_dict(load_file(str(ckpt_dir / "proxy3d.safetensors")), strict=False)
    missing = [k for k in missing if not k.startswith("vlm.")]
    if missing or unexpected:
        raise ValueError(f"{ckpt_dir}/proxy3d.safetensors does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device), tok, meta
