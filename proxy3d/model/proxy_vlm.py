"""Proxy3D VLM: Qwen2.5-VL plus projector, hybrid 3D PE and reference embeddings.

Visual token rows: z = projector(features) (a learnable ``null_feature`` for simplified scenes), position
encoded z' = R(height)·z + F(x, y), then the reference embeddings are added: z' + id_embed[instance] +
sem_embed[category] (the paper injects them into the serialized, position-encoded proxies). The rows
replace the proxy placeholder tokens of ``input_ids`` through ``inputs_embeds`` (as transformers does for
image tokens). ``<OBJm>`` text tokens take the shared identifier embedding, so a scene token's identifier
component is exactly the text embedding of its ``<OBJm>``: rotating it by height first kept a
from-scratch tiny model from ever matching the two. Likewise a category's reference carries the mean text
embedding of its name (``model.label_text_tie``), and every visual row carries a learned proxy marker.
Loss: next-token NLL on answer tokens (+eos) only.

Random-init presets start as copy machines (``model.*`` params, measured in issue 8's notes): query/key and
value/output projections near identity, LM head tied to the token embeddings, token embeddings at the scale of
the reference embeddings, and each query bias pointing at the proxy marker. A head then looks up the proxy that
carries the asked identifier or word and copies what it carries into the answer; training refines that instead
of having to discover it (without these, identifier grounding stayed at chance).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from proxy3d.model.inputs import IGNORE, SceneInput
from proxy3d.model.pe import HybridPE3D
from proxy3d.model.pointer import PointerHead
from proxy3d.model.reference import OFFSET_STD, ReferenceEmbedding, gather_rows

log = logging.getLogger(__name__)


class Proxy3DModel(nn.Module):
    """vlm: ``Qwen2_5_VLForConditionalGeneration``; obj_token_ids: the 100 ``<OBJ###>`` token ids;
    feature_dim: proxy feature width C (0 = no projector yet, see :meth:`ensure_projector`)."""

    def __init__(self, vlm: nn.Module, proxy_token_id: int, obj_token_ids: Sequence[int], feature_dim: int = 0,
                 pe_fourier_features: int = 16, pe_height_scale: float = 1.0, num_categories: int = 213,
                 category_tokens: Sequence[Sequence[int]] | None = None, label_text_tie: float = 0.0,
                 direct_position: float = 0.0) -> None:
        super().__init__()
        self.vlm = vlm
        self.proxy_token_id = int(proxy_token_id)
        emb = vlm.get_input_embeddings()
        dim, vocab = emb.weight.shape[1], emb.weight.shape[0]
        self.dim = dim
        self.refs = ReferenceEmbedding(dim, len(obj_token_ids), num_categories)
        self.pe = HybridPE3D(dim, pe_fourier_features, pe_height_scale)
        # content of a simplified scene's token (stages 1-3: no proxy features): R(height) turns it into height
        self.null_feature = nn.Parameter(torch.zeros(dim))
        # proxy-type embedding added to every visual token (what a text query can key on to look at the scene)
        self.proxy_marker = nn.Parameter(torch.randn(dim) * OFFSET_STD)
        self.projector: nn.Module | None = None
        self.feature_dim = 0
        self.ensure_projector(feature_dim)
        lookup = torch.full((vocab,), -1, dtype=torch.long)
        lookup[torch.tensor(list(obj_token_ids), dtype=torch.long)] = torch.arange(len(obj_token_ids))
        self.register_buffer("obj_lookup", lookup, persistent=False)
        self.obj_token_ids = [int(i) for i in obj_token_ids]
        # semantic embedding-text pair: category c's reference also carries the mean text embedding of its name's
        # tokens (rebuilt from the tokenizer on load, so not saved)
        self.label_text_tie = float(label_text_tie) if category_tokens is not None else 0.0
        width = max((len(t) for t in category_tokens or []), default=1)
        table = torch.full((num_categories, max(width, 1)), -1, dtype=torch.long)
        for c, toks in enumerate(category_tokens or []):
            table[c, : len(toks)] = torch.as_tensor(list(toks), dtype=torch.long)
        self.register_buffer("category_tokens", table, persistent=False)
        # each <OBJm> text token also carries direct_position x F(x, y) of object m's centre in the row's scene, so
        # a question's identifier holds its object's position without a lookup hop (0 while F is: all of stage 1)
        self.direct_position = float(direct_position)
        self.pointer: PointerHead | None = None  # created by ensure_pointer (stage 2 with pointer_steps)
        # "on": pointer scores join the identifier logits; "off": the LM head alone; "only": the body runs without
        # gradient and only the pointer trains (stage 2's pointer phase)
        self.pointer_mode = "on"
        for p in vlm.model.visual.parameters():  # the vision tower only encodes the reference images
            p.requires_grad_(False)

    def ensure_pointer(self) -> PointerHead:
        """The pointer head (:mod:`proxy3d.model.pointer`), created at the identity if missing."""
        if self.pointer is None:
            w = self.vlm.get_input_embeddings().weight
            self.pointer = PointerHead(self.dim, len(self.obj_token_ids)).to(device=w.device, dtype=w.dtype)
        return self.pointer

    def ensure_projector(self, feature_dim: int) -> None:
        """Create the C -> D projector (2-layer MLP) if missing or of another width (stage 4 on new features)."""
        if feature_dim <= 0 or feature_dim == self.feature_dim:
            return
        if self.projector is not None:
            log.warning("proxy features are %d-d, projector was %d-d: new projector", feature_dim, self.feature_dim)
        w = self.vlm.get_input_embeddings().weight
        self.projector = nn.Sequential(nn.Linear(feature_dim, self.dim), nn.GELU(), nn.Linear(self.dim, self.dim)).to(
            device=w.device, dtype=w.dtype)
        # a new projector starts as the simplified-scene content (output = null_feature for any input): real proxies
        # then enter stage 4 as exactly the tokens stages 1-3 were trained on, and the features grow in where they
        # help. With a random projector the feature term swamped the identifier/category components and the
        # stage-4 model answered every grounding description with one constant identifier.
        with torch.no_grad():
            self.projector[2].weight.zero_()
            self.projector[2].bias.copy_(self.null_feature.detach().to(w.dtype))
        self.feature_dim = feature_dim

    @property
    def device(self) -> torch.device:
        return self.vlm.get_input_embeddings().weight.device

    def scene_rows(self, scenes: Sequence[SceneInput]) -> torch.Tensor:
        """Visual token rows of all scenes, concatenated in order: (ΣK, D)."""
        dev, dtype = self.device, self.vlm.get_input_embeddings().weight.dtype
        rows = []
        sem = self.semantic_embed() if any(len(s) for s in scenes) else None
        for s in scenes:
            if not len(s):
                continue
            centers = torch.as_tensor(s.centers, dtype=torch.float32).to(dev)
            if s.features is not None:
                if self.projector is None or s.features.shape[1] != self.feature_dim:
                    raise ValueError(f"scene {s.scene_id!r}: proxy features are {s.features.shape[1]}-d but the "
                                     f"projector takes {self.feature_dim}-d; call ensure_projector or retrain stage 4")
                z = self.projector(torch.as_tensor(s.features).to(dev, dtype))
            else:
                z = self.null_feature.to(dtype).expand(len(s), -1)
            z = self.pe(z, centers.to(dtype))
            rows.append(self.refs.fuse(z, torch.as_tensor(s.instance).to(dev), torch.as_tensor(s.category).to(dev),
                                       sem) + self.proxy_marker.to(dtype))
        return torch.cat(rows, 0) if rows else torch.zeros((0, self.dim), device=dev, dtype=dtype)

    def init_scene_query_bias(self, strength: float) -> None:
        """Point every language layer's query bias, head by head, along the proxy marker (``strength`` = the norm
        of each head's bias slice), so from step 0 every text token looks at the scene a little more than at text.

        Random-init presets only. Without it the tiny model never learned identifier grounding ("Which object is
        the chair?" stayed at or below chance in 4-object scenes after 450 steps); with it (strength 12) 67%.
        With copy-head init a text token otherwise attends mostly to itself and to earlier copies of its word,
        which carry no identifier.
        """
        cfg = self.vlm.config.text_config
        heads, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        u = self.proxy_marker.detach().float()
        with torch.no_grad():
            for layer in self.vlm.model.language_model.layers:
                b = layer.self_attn.q_proj.bias
                for h in range(heads):
                    seg = u[h * hd : (h + 1) * hd]
                    b[h * hd : (h + 1) * hd] = (strength * seg / seg.norm().clamp_min(1e-6)).to(b.dtype)

    def semantic_embed(self) -> torch.Tensor:
        """(S, D) semantic reference embeddings: symbol embedding + ``label_text_tie`` x the mean text embedding
        of the category name's tokens. The tie is to categories what the shared ``<OBJm>`` row is to identifiers:
        "Which object is the chair?" then finds the proxy that carries the word's own vector, and naming a proxy's
        category is copying that vector to the (tied) LM head."""
        sem = self.refs.sem_embed()
        if not self.label_text_tie:
            return sem
        tab = self.category_tokens.to(sem.device)
        mask = (tab >= 0).to(sem.dtype)
        words = self.vlm.get_input_embeddings()(tab.clamp(min=0)).to(sem.dtype) * mask.unsqueeze(-1)
        return sem + self.label_text_tie * words.sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)

    def object_positions(self, scenes: Sequence[SceneInput], dtype: torch.dtype) -> torch.Tensor:
        """(B, M, D): ``direct_position`` x F(x, y) of each identifier's object centre (the mean centre of its
        proxies) in each row's scene, 0 for identifiers the scene does not hold."""
        m = len(self.obj_token_ids)
        out = []
        for s in scenes:
            inst = torch.as_tensor(np.asarray(s.instance), dtype=torch.long)
            named = (inst >= 0) & (inst < m)
            xy = torch.as_tensor(np.asarray(s.centers, np.float32)[:, :2])[named]
            tot = torch.zeros(m, 2).index_add_(0, inst[named], xy)
            cnt = torch.zeros(m).index_add_(0, inst[named], torch.ones(len(xy)))
            f = self.pe.fourier((tot / cnt.clamp_min(1).unsqueeze(1)).to(self.device))
            out.append(self.direct_position * f * (cnt > 0).to(f.device, f.dtype).unsqueeze(1))
        return torch.stack(out).to(dtype)

    def embed(self, input_ids: torch.Tensor, scenes: Sequence[SceneInput], splice: bool = True,
              positions: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: (B, L) -> inputs_embeds (B, L, D) with proxies spliced and ``<OBJm>`` rows shared (plus
        their object's position, ``direct_position``). ``splice=False``: ``input_ids`` hold no placeholders (decode
        steps) and ``scenes`` only place the identifiers. ``positions``: :meth:`object_positions` of ``scenes``
        when the caller has them (decoding reuses one for every step)."""
        emb = self.vlm.get_input_embeddings()(input_ids)
        idx = self.obj_lookup.to(input_ids.device)[input_ids]
        ids = gather_rows(self.refs.id_embed().to(emb.dtype), idx.clamp(min=0))
        if self.direct_position and len(scenes) == input_ids.shape[0] and input_ids.device.type != "meta":
            pos = self.object_positions(scenes, emb.dtype) if positions is None else positions  # (B, M, D)
            ids = ids + torch.gather(pos, 1, idx.clamp(min=0).unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        emb = torch.where((idx >= 0).unsqueeze(-1), ids, emb)
        if not splice:
            return emb
        mask = input_ids == self.proxy_token_id
        rows = self.scene_rows(scenes)
        if input_ids.device.type != "meta":  # meta tensors have no values to count
            n = int(mask.sum())
            if n != rows.shape[0]:
                raise ValueError(f"proxy placeholders and proxies do not match: {n} placeholder tokens in input_ids "
                                 f"but {rows.shape[0]} proxy rows from {len(scenes)} scenes; build input_ids with "
                                 "TextCodec so each scene gets exactly len(scene) placeholders")
        return emb.masked_scatter(mask.unsqueeze(-1).expand_as(emb), rows.to(emb.dtype))

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) LM positions: every proxy of a scene shares position 0 and the text counts on from 1.

        As Qwen2.5-VL's M-RoPE does for an image (its tokens take fewer positions than tokens), the proxies
        are one "picture" whose layout the hybrid 3D PE encodes. With consecutive positions the relative
        rotation between a question and each proxy differed per proxy, and a from-scratch tiny model learned
        to match identifiers much later (seed 1: 22% vs 78% "What is" accuracy after 350 steps).
        """
        text = attention_mask.long() * (input_ids != self.proxy_token_id).long()
        return text.cumsum(-1)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, scenes: Sequence[SceneInput]) -> torch.Tensor:
        """(B, L, D) last hidden states; ``position_ids`` always passed (no stale ``rope_deltas``)."""
        return self.vlm.model(inputs_embeds=self.embed(input_ids, scenes), attention_mask=attention_mask,
                              position_ids=self.position_ids(input_ids, attention_mask),
                              use_cache=False).last_hidden_state

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, scenes: Sequence[SceneInput]) -> torch.Tensor:
        """(B, L, V) next-token logits (with the pointer head's identifier scores unless ``pointer_mode`` is off)."""
        return self.outputs(input_ids, attention_mask, scenes)[0]

    def outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                scenes: Sequence[SceneInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, V) logits as :meth:`logits` and the (B, L, D) last hidden states they came from."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.pointer_mode != "only"):
            h = self.hidden(input_ids, attention_mask, scenes)
            logits = F.linear(h, self.output_weight())
        if self.pointer is None or self.pointer_mode == "off":
            return logits, h
        keys = self.pointer.keys(h, input_ids == self.proxy_token_id, scenes)
        return self.add_pointer(logits, h, keys), h

    def add_pointer(self, logits: torch.Tensor, hidden: torch.Tensor,
                    keys: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``logits`` (B, T, V) + the pointer's object scores from ``hidden`` (B, T, D) on the ``<OBJm>`` columns."""
        obj = torch.as_tensor(self.obj_token_ids, device=logits.device)
        return logits.index_add(2, obj, self.pointer.object_logits(hidden, keys).to(logits.dtype))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                scenes: Sequence[SceneInput]) -> torch.Tensor:
        """Mean NLL over answer tokens (labels != -100), shifted for next-token prediction."""
        return self.answer_loss(self.logits(input_ids, attention_mask, scenes), labels)

    @staticmethod
    def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token NLL of (B, L, V) ``logits`` over the answer tokens of (B, L) ``labels``."""
        logits = logits[:, :-1].float()
        target = labels[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)

    def output_weight(self) -> torch.Tensor:
        """(V, D) LM head whose ``<OBJm>`` rows are the shared identifier embeddings: emitting an identifier
        is matching the hidden state against the identifier embedding seen in the scene (copying)."""
        w = self.vlm.get_output_embeddings().weight
        idx = self.obj_lookup.to(w.device)
        return torch.where((idx >= 0).unsqueeze(-1), gather_rows(self.refs.id_embed().to(w.dtype), idx.clamp(min=0)), w)

    @torch.no_grad()
    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, scenes: Sequence[SceneInput],
                     max_new_tokens: int, eos_token_id: int, pad_token_id: int) -> list[list[int]]:
        """Greedy decoding from a left-padded batch with a KV cache; returns the new token ids per row (eos
        stripped). Positions and the ``<OBJm>`` rows (input and output) are exactly those of training."""
        w = self.output_weight()
        pos = self.position_ids(input_ids, attention_mask)
        # the objects' positions do not change while decoding: computed once for the prompt and every new token
        places = self.object_positions(scenes, w.dtype) if self.direct_position and len(scenes) else None
        out = self.vlm.model(inputs_embeds=self.embed(input_ids, scenes, positions=places),
                             attention_mask=attention_mask, position_ids=pos, use_cache=True)
        pointing = self.pointer is not None and self.pointer_mode != "off"
        keys = self.pointer.keys(out.last_hidden_state, input_ids == self.proxy_token_id, scenes) if pointing else []
        cache, att = out.cache, attention_mask
        nxt = pos[:, -1:] + 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        rows: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
        for _ in range(max_new_tokens):
            logits = F.linear(out.last_hidden_state[:, -1:], w)
            if pointing:
                logits = self.add_pointer(logits, out.last_hidden_state[:, -1:], keys)
            logits = logits[:, 0]
            # the proxy placeholder is never an answer: fed back, it would need a proxy row and stop the batch
            logits[:, self.proxy_token_id] = float("-inf")
            tok = logits.argmax(-1)
            for b in torch.nonzero(~done).flatten().tolist():
                if int(tok[b]) == eos_token_id:
                    done[b] = True
                elif int(tok[b]) != pad_token_id:
                    rows[b].append(int(tok[b]))
            if bool(done.all()):
                break
            att = torch.cat([att, torch.ones_like(att[:, :1])], dim=1)
            out = self.vlm.model(inputs_embeds=self.embed(tok[:, None], scenes, splice=False, positions=places),
                                 attention_mask=att, position_ids=nxt, cache=cache, use_cache=True)
            cache, nxt = out.cache, nxt + 1
        return rows


def count_parameters(model: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in model.parameters()))
