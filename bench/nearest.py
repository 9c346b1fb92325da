"""Nearest-object learnability: can a checkpoint learn "Which object is closest to <OBJa>?" and how fast?

    .venv/bin/python bench/nearest.py                        # stage-1 checkpoint, 3-object layouts, 400 steps
    .venv/bin/python bench/nearest.py --objects 2-12 --steps 1000 --fourier-init 2
    .venv/bin/python bench/nearest.py --answer "closest {a} {b}" --direct 1

Stage 2 has never beaten its nearest-object baseline (issue 8). A stage-2 run costs minutes and mixes five
question kinds on nine train layouts; this trains the model on nearest-object questions alone, about *fresh*
random layouts every step (``--objects`` objects anywhere in a 6 x 6 m room, random identifiers and categories;
no layout repeats, so a rise is not memorisation), with plain AdamW and no DeepSpeed (about 10 s per 100 steps
at 3 objects on 2 cores). Every ``--eval-every`` steps it prints the teacher-forced accuracy on fixed held-out
layouts: the share where the highest-scoring identifier at the position that must name the nearest object is
that object, next to chance (1 / (n - 1)) and their ratio, and the share that named any object of the scene.

Knobs for the hypotheses tried so far: ``--objects lo-hi`` grows the layouts from lo to hi objects over the
first 60% of the steps (a scene-size warm-up); ``--answer`` the answer template (``{a}`` the asked identifier,
``{b}`` the nearest; default the curriculum's ``closest_to``); ``--fourier-sigma S`` rescales F's random
frequencies to std S cycles/m (the init's 0.5 gives a kernel that has decayed within ~1 m); ``--fourier-init N``
sets F(x, y)'s zero-initialised output layer to random weights scaled so F varies by norm N across the room (the stage-1 identifier and category
rows have norm ~2.2); ``--direct S`` adds S x F(x, y) of object m's centre to every ``<OBJm>`` text token, so the
asked identifier carries its position without a lookup hop; ``--attn-aux W`` adds W x an attention-supervision
loss (training only): -log of the attention that head ``--attn-head`` of layer ``--attn-layer`` pays, at the
position predicting the nearest object, to that object's proxy (eager attention, read with a forward hook).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy3d.io import write_json  # noqa: E402
from proxy3d.model import text_tokenizer as tt  # noqa: E402
from proxy3d.model.build import load_model_dir  # noqa: E402
from proxy3d.model.inputs import Example, SceneInput, TextCodec  # noqa: E402
from proxy3d.train.data import closest_to, nearest_other  # noqa: E402
from proxy3d.vocab import NUM_IDENTIFIERS  # noqa: E402
from proxy3d.vocab import identifier_token as obj  # noqa: E402

ROOM = 6.0  # metres, square floor
CATEGORIES = 60  # categories drawn from the vocabulary's first ones
WARMUP = 0.6  # share of the steps over which --objects lo-hi grows


def object_range(spec: str) -> tuple[int, int]:
    """"3" -> (3, 3); "2-12" -> (2, 12); at least 2 objects (a nearest *other* one)."""
    try:
        lo, hi = (int(v) for v in spec.split("-")) if "-" in spec else (int(spec), int(spec))
    except ValueError:
        raise SystemExit(f"--objects {spec!r}: give a count (3) or a range lo-hi (2-12)") from None
    if not 2 <= lo <= hi <= NUM_IDENTIFIERS:
        raise SystemExit(f"--objects {spec!r}: need 2 <= lo <= hi <= {NUM_IDENTIFIERS}")
    return lo, hi


def objects_at(step: int, steps: int, lo: int, hi: int) -> int:
    return min(hi, lo + int((hi - lo) * step / max(1.0, WARMUP * steps)))


def layout(rng: np.random.Generator, n: int, answer: str | None) -> tuple[Example, int, int]:
    """One random scene of ``n`` one-token objects and its nearest-object question: (example, asked id, nearest id)."""
    ids = rng.choice(NUM_IDENTIFIERS, n, replace=False)
    cats = rng.integers(0, CATEGORIES, n)
    centers = np.concatenate([rng.uniform(0, ROOM, (n, 2)), rng.uniform(0, 2, (n, 1))], 1)
    k = int(rng.integers(n))
    a, b = int(ids[k]), int(ids[nearest_other(centers, k)])
    prompt, default = closest_to(a, b)
    text = default if answer is None else answer.format(a=obj(a), b=obj(b))
    return Example(SceneInput.from_objects(ids, cats, centers), [(prompt, text)]), a, b


def init_fourier(model, norm: float, seed: int) -> None:
    """F(x, y)'s output layer to random weights scaled so F(p) - mean F varies by ``norm`` over the room."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.pe.fourier.mlp[2].weight
        w.copy_(torch.randn(w.shape, generator=g))
        f = model.pe.fourier(torch.rand(256, 2, generator=g) * ROOM)
        w.mul_(norm / (f - f.mean(0)).norm(dim=1).mean().clamp_min(1e-9))


def add_direct_position(model, scale: float) -> None:
    """Wrap ``model.embed`` so each ``<OBJm>`` text token also carries ``scale`` x F(x, y) of object m's centre."""
    plain = model.embed

    def embed(input_ids: torch.Tensor, scenes):
        emb = plain(input_ids, scenes)
        if len(scenes) != input_ids.shape[0]:  # generation steps feed one token without its scene
            return emb
        idx = model.obj_lookup.to(input_ids.device)[input_ids]
        add = torch.zeros_like(emb)
        for row, scene in enumerate(scenes):
            inst, centers = np.asarray(scene.instance), np.asarray(scene.centers)
            tokens = [t for t in (idx[row] >= 0).nonzero().flatten().tolist() if (inst == int(idx[row, t])).any()]
            if tokens:  # one F(x, y) call per row: the mean centre of each token's object
                xy = np.stack([centers[inst == int(idx[row, t]), :2].mean(0) for t in tokens])
                f = model.pe.fourier(torch.as_tensor(xy, dtype=torch.float32, device=emb.device))
                add[row, tokens] = scale * f.to(emb.dtype)
        return emb + add

    model.embed = embed


def answer_position(batch, row: int, obj_ids: torch.Tensor, b: int) -> int:
    """Index of the token of ``batch`` row ``row`` whose next-token prediction is the nearest object ``<OBJb>``."""
    return int((batch.labels[row] == obj_ids[b]).nonzero().flatten()[-1]) - 1


@torch.no_grad()
def accuracy(model, codec: TextCodec, items: list[tuple[Example, int, int]],
             obj_ids: torch.Tensor) -> tuple[float, float]:
    """(share naming the nearest object, share naming any object of the scene) at the position predicting it;
    obj_ids: the token ids of ``<OBJ000>`` ... in identifier order."""
    batch = codec.collate([e for e, _, _ in items], 96)
    logits = model.logits(batch.input_ids, batch.attention_mask, batch.scenes)
    hit = present = 0
    for row, (ex, _, b) in enumerate(items):
        t = answer_position(batch, row, obj_ids, b)
        pred = int(logits[row, t, obj_ids].argmax())
        hit += pred == b
        present += pred in set(np.asarray(ex.scene.instance).tolist())
    return hit / len(items), present / len(items)


class AttentionProbe:
    """The attention probabilities (B, H, L, L) of one language layer at the last forward (eager attention)."""

    def __init__(self, model, layer: int) -> None:
        layers = model.vlm.model.language_model.layers
        if not 0 <= layer < len(layers):
            raise SystemExit(f"--attn-layer {layer}: the model has layers 0..{len(layers) - 1}")
        for cfg in (model.vlm.config, model.vlm.config.text_config):
            cfg._attn_implementation = "eager"  # sdpa returns no probabilities
        self.weights: torch.Tensor | None = None
        layers[layer].self_attn.register_forward_hook(self._keep)

    def _keep(self, module, args, out) -> None:
        self.weights = out[1]

    def loss(self, batch, items: list[tuple[Example, int, int]], head: int, obj_ids: torch.Tensor) -> torch.Tensor:
        """Mean -log attention from each row's nearest-predicting position to the nearest object's proxy."""
        terms = []
        for row, (ex, _, b) in enumerate(items):
            t = answer_position(batch, row, obj_ids, b)
            proxy = int(np.flatnonzero(np.asarray(ex.scene.instance) == b)[0])  # proxies open the sequence
            terms.append(-torch.log(self.weights[row, head, t, proxy] + 1e-9))
        return torch.stack(terms).mean()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "artifacts/checkpoints/stage1",
                    help="model folder to start from (default: the pipeline's stage-1 checkpoint)")
    ap.add_argument("--objects", default="3", help="objects per layout: N, or lo-hi for a warm-up (default 3)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16, help="layouts (one question each) per step")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--answer", default=None, help="answer template with {a} and {b} (default: the curriculum's)")
    ap.add_argument("--fourier-init", type=float, default=0.0, help="norm of a random F(x, y) at the start (0: keep)")
    ap.add_argument("--fourier-sigma", type=float, default=0.0,
                    help="rescale F's frequencies B to this std in cycles/m (0: keep; the default init is 0.5)")
    ap.add_argument("--direct", type=float, default=0.0, help="add this x F(x, y) of object m to <OBJm> text tokens")
    ap.add_argument("--attn-aux", type=float, default=0.0, help="weight of the attention-supervision loss (0: off)")
    ap.add_argument("--attn-layer", type=int, default=1, help="layer whose head --attn-aux supervises")
    ap.add_argument("--attn-head", type=int, default=0, help="head --attn-aux supervises")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-items", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args(argv)
    lo, hi = object_range(a.objects)
    if a.answer is not None and ("{a}" not in a.answer or "{b}" not in a.answer):
        raise SystemExit(f"--answer {a.answer!r}: the template needs both {{a}} and {{b}}")
    if not (a.checkpoint / "bundle.json").exists():
        raise SystemExit(f"{a.checkpoint}: no model folder (bundle.json missing); run `dvc repro train_stage1` or "
                         "`make demo` first, or pass --checkpoint")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model, tok, _ = load_model_dir(a.checkpoint)
    codec = TextCodec(tok, tt.proxy_token_id(tok))
    for p in model.pe.fourier.parameters():
        p.requires_grad_(True)
    if a.fourier_sigma:
        with torch.no_grad():
            model.pe.fourier.B.mul_(a.fourier_sigma / model.pe.fourier.B.std())
    if a.fourier_init:
        init_fourier(model, a.fourier_init, a.seed + 1)
    if a.direct:
        add_direct_position(model, a.direct)
    probe = AttentionProbe(model, a.attn_layer) if a.attn_aux else None
    obj_ids = torch.tensor(model.obj_token_ids)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    val_rng = np.random.default_rng(a.seed + 10_000)
    val = [layout(val_rng, hi, a.answer) for _ in range(a.eval_items)]
    rng, rows, losses, auxes, t0 = np.random.default_rng(a.seed), [], [], [], time.perf_counter()
    print(f"{'step':>5} {'objects':>7} {'loss':>6} {'nearest':>7} {'chance':>6} {'ratio':>5} {'in scene':>8} {'attn aux':>8} {'s':>5}")
    model.train()
    for step in range(a.steps):
        n = objects_at(step, a.steps, lo, hi)
        items = [layout(rng, n, a.answer) for _ in range(a.batch)]
        batch = codec.collate([e for e, _, _ in items], 96)
        loss = model(batch.input_ids, batch.attention_mask, batch.labels, batch.scenes)
        aux = probe.loss(batch, items, a.attn_head, obj_ids) if probe else torch.zeros(())
        auxes.append(float(aux.detach()))
        total = loss + a.attn_aux * aux
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            model.eval()
            acc, present = accuracy(model, codec, val, obj_ids)
            model.train()
            chance = 1.0 / (hi - 1)
            rows.append({"step": step + 1, "objects": n, "loss": float(np.mean(losses[-a.eval_every:])),
                         "nearest": acc, "chance": chance, "ratio": acc / chance, "in_scene": present,
                         "attn_aux": float(np.mean(auxes[-a.eval_every:])),
                         "seconds": time.perf_counter() - t0})
            r = rows[-1]
            print(f"{r['step']:>5} {n:>7} {r['loss']:>6.3f} {acc:>7.3f} {chance:>6.3f} {r['ratio']:>5.2f} "
                  f"{present:>8.2f} {r['attn_aux']:>8.3f} {r['seconds']:>5.0f}", flush=True)
    out = {"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}
    if a.json:
        write_json(a.json, out, indent=1)
    return out


if __name__ == "__main__":
    main()
