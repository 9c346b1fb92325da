"""Stable Diffusion pipelines for symbol maps: a tiny random-init one (offline default) or a local checkpoint.

The tiny pipeline is the real ``diffusers.StableDiffusionPipeline`` with every part built from a
config (UNet, VAE, CLIP text encoder, DDIM scheduler) and a CLIP tokenizer whose vocabulary is built
here from the prompt words, so nothing is downloaded. Weights are initialised under a fixed seed, so
two builds are bit-identical. A random-init pipeline carries no semantics: its images are structured
noise (see :mod:`proxy3d.symbols.render` for how tiny icons are kept distinct per category).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
# Characters the CLIP tokenizer can always spell (anything else maps to <|endoftext|>, CLIP's unk).
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789,.-'/&()!?:;"


def build_clip_tokenizer(words: Iterable[str], folder: Path):  # -> CLIPTokenizer
    """A CLIP tokenizer that spells any lowercase text and keeps each of ``words`` as one token.

    Writes ``vocab.json`` (start/end tokens, characters, characters + ``</w>``, merged pieces) and
    ``merges.txt`` (``#version: 0.2`` then one merge per line) into ``folder``. Each word gets a chain of
    left-to-right merges, so prompts stay far below CLIP's 77-token limit.
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for tok in [_BOS, _EOS, *_ALPHABET, *(c + "</w>" for c in _ALPHABET)]:
        vocab.setdefault(tok, len(vocab))
    merges: list[str] = []
    for word in sorted({w for w in words if w and all(c in _ALPHABET for c in w)}):
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append(f"{left} {right}")
            left = merged
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_tiny_pipeline(prompts: Iterable[str], seed: int, work_dir: Path):  # -> StableDiffusionPipeline
    """Random-init ``StableDiffusionPipeline`` (~77k parameters; 2 DDIM steps at 64x64 in ~30 ms on CPU).

    ``work_dir`` receives the CLIP tokenizer files; weights are initialised under ``seed`` without
    touching the caller's RNG state.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    words = {w.strip(",.").lower() for p in prompts for w in p.split()}
    tokenizer = build_clip_tokenizer(words, work_dir / "clip_tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, text_encoder = _tiny_parts(len(tokenizer))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_parts(vocab_size: int) -> tuple[Any, Any, Any]:
    """UNet (~18k params), VAE (~12k) and CLIP text encoder (~47k), initialised from the global RNG."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        cross_attention_dim=32, norm_num_groups=2, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    return unet, vae, text_encoder


def load_pretrained_pipeline(path: str, device: str):  # -> StableDiffusionPipeline
    """A real Stable Diffusion checkpoint folder (diffusers layout with ``model_index.json``); never downloads."""
    from diffusers import StableDiffusionPipeline

    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        why = "does not exist" if not folder.exists() else "has no model_index.json"
        raise FileNotFoundError(
            f"symbols.pipeline: Stable Diffusion checkpoint folder '{path}' {why}; set symbols.pipeline in "
            "params.yaml to 'tiny' (offline random-init pipeline) or to a local diffusers checkpoint folder "
            "(e.g. a saved stable-diffusion-v1-5 with model_index.json)"
        )
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded Stable Diffusion checkpoint %s (%s)", folder, dtype)
    return pipe
