"""Object reference embeddings: identifier maps (``<OBJm>`` numerals) and symbol maps (one icon per
category) are encoded once by the frozen Qwen2.5-VL vision tower into one embedding each, then mapped
by a learnable reference projector (+ a learnable per-entry offset) into the LM width.

The identifier embedding ``id_embed[m] = ref_proj(f_id[m]) + id_offset[m]`` is *shared*: it is added to
every proxy of object m (additive fusion) and is also the text embedding of the token ``<OBJm>`` (the
paper's embedding-text pair; without it a from-scratch tiny model stays at chance on stage 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from proxy3d.vocab import NUM_IDENTIFIERS

# Qwen2-VL image processor normalisation (OpenAI CLIP statistics)
_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
OFFSET_STD = 0.1  # init of the learnable per-entry offsets


def load_images(folder: Path, count: int) -> list[Image.Image]:
    """``folder/000.png`` … ``folder/{count-1:03d}.png`` as RGB images (error names the missing file)."""
    out = []
    for i in range(count):
        path = Path(folder) / f"{i:03d}.png"
        if not path.exists():
            raise FileNotFoundError(f"{path}: reference image missing; run `proxy3d symbols` (dvc stage symbols)")
        out.append(Image.open(path).convert("RGB"))
    return out


def load_identifiers(folder: Path, count: int = NUM_IDENTIFIERS) -> list[Image.Image]:
    """The identifier maps ``folder/000.png`` … (one per ``<OBJm>`` token) as RGB images. A folder that the
    symbols stage filled with fewer (``symbols.num_identifiers`` below ``count``) is reported as that setting:
    rerunning the stage alone would draw the same too-few images."""
    have = {i for i in range(count) if (Path(folder) / f"{i:03d}.png").exists()}
    if have and len(have) < count:
        missing = min(set(range(count)) - have)
        raise FileNotFoundError(f"{Path(folder) / f'{missing:03d}.png'}: identifier image missing: {folder} has "
                                f"{len(have)} of the {count} identifier images the model needs (one per token "
                                f"<OBJ000>..<OBJ{count - 1:03d}>); set symbols.num_identifiers: {count} in "
                                "params.yaml and rerun `proxy3d symbols` (dvc stage symbols)")
    return load_images(folder, count)


def images_to_patches(images: list[Image.Image], patch: int = 14, merge: int = 2, temporal: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Images -> Qwen2.5-VL ``pixel_values`` (N·4, 3·temporal·patch²) and ``grid_thw`` (N, 3).

    Each image is resized to (patch·merge)² pixels so it becomes exactly one merged vision token; the
    patch order follows transformers' Qwen2VLImageProcessor.
    """
    side = patch * merge
    rows = []
    for img in images:
        a = (np.asarray(img.resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0 - _MEAN) / _STD
        a = np.repeat(a.transpose(2, 0, 1)[None], temporal, axis=0)  # (T, C, H, W)
        a = a.reshape(1, temporal, 3, 1, merge, patch, 1, merge, patch).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        rows.append(a.reshape(merge * merge, 3 * temporal * patch * patch))
    pixels = torch.from_numpy(np.concatenate(rows, axis=0))
    grid = torch.tensor([[1, merge, merge]] * len(images), dtype=torch.long)
    return pixels, grid


@torch.no_grad()
def encode_references(visual: nn.Module, images: list[Image.Image], batch: int = 64) -> torch.Tensor:
    """Frozen vision tower -> (N, D) one embedding per image, centred over the set, mean row norm 1.

    Centering removes what all icons share (white background), so the entries differ where it matters.
    """
    p = visual.patch_embed.patch_size if hasattr(visual, "patch_embed") else 14
    dtype = next(visual.parameters()).dtype
    feats = []
    for i in range(0, len(images), batch):
        pixels, grid = images_to_patches(images[i : i + batch], patch=p)
        out = visual(pixels.to(dtype), grid_thw=grid)
        feats.append(out.pooler_output.float())
    f = torch.cat(feats, 0)
    f = f - f.mean(0, keepdim=True)
    # unit row norm on average: the projected references then start at the scale of text embeddings
    return f / f.norm(dim=1).mean().clamp_min(1e-6)


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` (index of any shape, values in range) with a run-to-run deterministic backward: the
    backward of an indexed gather accumulates repeated rows in a varying order with 2+ CPU threads (two runs of
    one stage trained other weights); ``F.embedding``'s does not."""
    return F.embedding(index, table)


class ReferenceEmbedding(nn.Module):
    """Identifier (M, D) and semantic (S, D) reference embeddings and their additive fusion.

    Buffers ``id_bank`` (M, D) and ``sem_bank`` (S, D) hold the frozen vision-tower embeddings (saved
    with the checkpoint, so a reload gives the same references without the images).
    """

    def __init__(self, dim: int, num_ids: int = 100, num_categories: int = 213) -> None:
        super().__init__()
        self.register_buffer("id_bank", torch.zeros(num_ids, dim))
        self.register_buffer("sem_bank", torch.zeros(num_categories, dim))
        self.proj = nn.Linear(dim, dim)
        # offsets start as near-orthogonal rows of norm ~1.6 and the projector without a bias: a shared bias
        # (and a random-init tower's low-rank features) made all identifiers look alike (mean cosine 0.43), and a
        # from-scratch tiny model never learned to tell them apart; with a real checkpoint's tower the projected
        # features add on top
        nn.init.zeros_(self.proj.bias)
        self.id_offset = nn.Parameter(torch.randn(num_ids, dim) * OFFSET_STD)
        self.sem_offset = nn.Parameter(torch.randn(num_categories, dim) * OFFSET_STD)

    def set_banks(self, id_bank: torch.Tensor, sem_bank: torch.Tensor) -> None:
        if id_bank.shape != self.id_bank.shape or sem_bank.shape != self.sem_bank.shape:
            raise ValueError(f"reference banks {tuple(id_bank.shape)}, {tuple(sem_bank.shape)} do not match "
                             f"{tuple(self.id_bank.shape)}, {tuple(self.sem_bank.shape)}")
        self.id_bank.copy_(id_bank)
        self.sem_bank.copy_(sem_bank)

    def id_embed(self) -> torch.Tensor:
        """(M, D): identifier embeddings, shared with the ``<OBJm>`` text tokens."""
        return self.proj(self.id_bank.to(self.proj.weight.dtype)) + self.id_offset

    def sem_embed(self) -> torch.Tensor:
        """(S, D): category (symbol) embeddings."""
        return self.proj(self.sem_bank.to(self.proj.weight.dtype)) + self.sem_offset

    def fuse(self, z: torch.Tensor, instance: torch.Tensor, category: torch.Tensor,
             sem_table: torch.Tensor | None = None) -> torch.Tensor:
        """z: (N, D); instance, category: (N,) long, -1 = none -> z + id_embed[instance] + sem[category], where
        sem is ``sem_table`` (S, D) when given (the model adds the label-text tie) else :meth:`sem_embed`.

        An object id past the identifiers (``<OBJ000>``..``<OBJ099>``; a ScanNet scene can have more objects)
        gets no identifier embedding, like -1: its proxies keep their category and position, and no question
        names it (SpaceSpan quarantines such targets, the curriculum leaves such objects out)."""
        m, s = self.id_bank.shape[0], self.sem_bank.shape[0]
        real = instance.device.type != "meta"  # meta tensors (shape checks) have no values
        if real and category.numel() and int(category.max()) >= s:
            raise ValueError(f"category id {int(category.max())} is outside the {s}-category vocabulary")
        named = (instance >= 0) & (instance < m)
        ids = gather_rows(self.id_embed(), instance.clamp(min=0, max=m - 1)) * named.unsqueeze(-1).to(z.dtype)
        table = self.sem_embed() if sem_table is None else sem_table
        sem = gather_rows(table, category.clamp(min=0)) * (category >= 0).unsqueeze(-1).to(z.dtype)
        return z + ids.to(z.dtype) + sem.to(z.dtype)
