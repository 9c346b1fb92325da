"""Prefill time and KV-cache memory: 700 proxy tokens vs 8,000 / 3,096 patch tokens (+ 64 text tokens).

Same model config for every row (the project's Qwen2.5-VL presets, random init: timing and memory do not
depend on the weights' values). Visual tokens enter as ``inputs_embeds`` exactly as proxies do in the
model; one forward pass with ``use_cache=True`` is the prefill. KV bytes are read from the returned cache.
Ratios are computed from one run (same process, same machine, same threads). As in ``generate``'s prefill,
only the last position's logits are computed (``logits_to_keep=1``).

    .venv/bin/python bench/prefill.py                      # tiny + small on CPU (7b width on a GPU)
    .venv/bin/python bench/prefill.py --presets tiny --repeats 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from proxy3d.model.presets import preset_config  # noqa: E402

VOCAB = 2048
TEXT_TOKENS = 64
SETTINGS = (("proxy", 700), ("patch", 3096), ("patch", 8000))


def kv_bytes(cache: object) -> int:
    """Bytes held by the key/value tensors of a transformers cache (``DynamicCache`` or legacy tuples)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)
    return sum(t.numel() * t.element_size() for kv in cache for t in kv)  # type: ignore[union-attr]


def build(preset: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg = preset_config(preset, vocab_size=VOCAB, proxy_token_id=VOCAB - 1)
    with device:
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(dtype)
    return model.eval()


@torch.inference_mode()
def prefill_once(model: torch.nn.Module, n_tokens: int, device: torch.device) -> tuple[float, int]:
    """Seconds of one prefill over ``n_tokens`` embeddings (1, n, H), and the KV-cache bytes it leaves."""
    hidden = model.config.text_config.hidden_size
    g = torch.Generator(device="cpu").manual_seed(n_tokens)
    emb = torch.randn(1, n_tokens, hidden, generator=g).to(device=device, dtype=next(model.parameters()).dtype)
    mask = torch.ones(1, n_tokens, dtype=torch.long, device=device)
    pos = torch.arange(n_tokens, device=device).unsqueeze(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return sec, kv_bytes(out["cache"] if "cache" in out else out.past_key_values)


def measure(model: torch.nn.Module, lengths: list[int], repeats: int, device: torch.device) -> list[tuple[float, int]]:
    """Best-of-``repeats`` prefill time and KV bytes per length; settings are interleaved round-robin so
    background load on a shared machine hits every setting alike (the minimum is the least-disturbed run)."""
    prefill_once(model, lengths[0], device)  # warm-up (kernels, allocator)
    best = [math.inf] * len(lengths)
    nbytes = [0] * len(lengths)
    for _ in range(repeats):
        for i, n in enumerate(lengths):
            sec, nbytes[i] = prefill_once(model, n, device)
            best[i] = min(best[i], sec)
    return list(zip(best, nbytes, strict=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/prefill.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=None, help="default: tiny small (+ 7b when CUDA is available)")
    p.add_argument("--repeats", type=int, default=3, help="timed prefills per setting (best reported)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    presets = args.presets or (["tiny", "small", "7b"] if cuda else ["tiny", "small"])
    print(f"device={device} dtype={str(dtype).removeprefix('torch.')} threads={args.threads} text_tokens={TEXT_TOKENS} "
          f"repeats={args.repeats}")
    print("| preset | input | tokens | prefill ms | KV-cache MiB | time ratio vs proxy | KV ratio vs proxy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for preset in presets:
        model = build(preset, device, dtype)
        timed = measure(model, [n + TEXT_TOKENS for _, n in SETTINGS], args.repeats, device)
        rows = [(kind, n, sec, nbytes) for (kind, n), (sec, nbytes) in zip(SETTINGS, timed, strict=True)]
        base_sec, base_bytes = rows[0][2], rows[0][3]
        for kind, n, sec, nbytes in rows:
            print(f"| {preset} | {kind} {n} + {TEXT_TOKENS} text | {n + TEXT_TOKENS} | {sec * 1e3:.1f} | "
                  f"{nbytes / 2**20:.2f} | {sec / base_sec:.1f}x | {nbytes / base_bytes:.1f}x |", flush=True)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
