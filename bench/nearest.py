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
position predicting the nearest object, to that object's proxy (eager attention, read with a forward hook);
``--pointer W`` adds W x the cross-entropy of a pointer head (a bilinear score of every proxy from the last hidden
state, see :class:`Pointer`) at that position, and ``--pointer-logits`` adds the pointer's scores to the
identifier logits instead (a pointer-generator output; the column ``pointer`` is the head's own accuracy over the
scene's proxies); ``--freeze all`` trains that head alone on the fixed model, ``--freeze lm`` the head, the
position encoding and the reference modules; ``--fresh`` starts from a random-init model of the checkpoint's preset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy3d.io import write_json  # noqa: E402
from proxy3d.model import text_tokenizer as tt  # noqa: E402
from proxy3d.model.build import create_model, load_model_dir, model_params  # noqa: E402
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


def first_proxy(ex: Example, b: int) -> int:
    """Index among ``ex``'s proxies (in scene order, as they open the sequence) of object ``b``'s first one."""
    return int(np.flatnonzero(np.asarray(ex.scene.instance) == b)[0])


def answer_position(batch, row: int, obj_ids: torch.Tensor, b: int) -> int:
    """Index of the token of ``batch`` row ``row`` whose next-token prediction is the nearest object ``<OBJb>``."""
    return int((batch.labels[row] == obj_ids[b]).nonzero().flatten()[-1]) - 1


class Pointer(torch.nn.Module):
    """Scores every proxy of a row's scene from the last hidden state at each position,
    (W_q h_t) . (W_k h_p) / sqrt(D), W_q and W_k starting at the identity (a pointer network's attention).

    ``--pointer W`` trains it with W x the cross-entropy of the nearest object's proxy at the answer position
    (an auxiliary loss: the text answer still goes through the LM head); ``--pointer-logits`` adds each scene
    object's best proxy score to its ``<OBJm>`` logit at every position (a pointer-generator output), so the text
    loss itself trains it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim)
        with torch.no_grad():
            self.q.weight.copy_(torch.eye(dim))
            self.k.weight.copy_(torch.eye(dim))
            self.q.bias.zero_()
            self.k.bias.zero_()

    def scores(self, hidden: torch.Tensor, proxy_mask: torch.Tensor, row: int) -> torch.Tensor:
        """(L, K) scores of row ``row``'s K proxies (in scene order) from each of its L positions."""
        h = hidden[row]
        return self.q(h) @ self.k(h[proxy_mask[row]]).T / h.shape[-1] ** 0.5

    def object_logits(self, hidden: torch.Tensor, proxy_mask: torch.Tensor, scenes, num_ids: int) -> torch.Tensor:
        """(B, L, num_ids): each scene object's best proxy score at every position, 0 for absent identifiers."""
        out = hidden.new_zeros(hidden.shape[0], hidden.shape[1], num_ids)
        for row, scene in enumerate(scenes):
            s = self.scores(hidden, proxy_mask, row)
            inst = torch.as_tensor(np.asarray(scene.instance), device=s.device)
            best = s.new_full((s.shape[0], num_ids), float("-inf")).scatter_reduce(1, inst.expand_as(s), s, "amax")
            out[row] = torch.where(torch.isinf(best), torch.zeros_like(best), best)
        return out


def forward(model, pointer: Pointer | None, logits_mode: bool, batch, obj_ids: torch.Tensor):
    """(B, L, V) logits and (B, L, D) hidden states; with ``logits_mode`` the pointer scores join the identifier logits."""
    hidden = model.hidden(batch.input_ids, batch.attention_mask, batch.scenes)
    logits = F.linear(hidden, model.output_weight())
    if logits_mode:
        mask = batch.input_ids == model.proxy_token_id
        logits = logits.index_add(2, obj_ids, pointer.object_logits(hidden, mask, batch.scenes, len(obj_ids)))
    return logits, hidden


def pointer_loss(pointer: Pointer, hidden: torch.Tensor, batch, items, obj_ids: torch.Tensor, model):
    """Cross-entropy of the nearest object's proxy among the row's proxies at the answer position; and the hits."""
    mask = batch.input_ids == model.proxy_token_id
    terms, hits = [], 0
    for row, (ex, _, b) in enumerate(items):
        t = answer_position(batch, row, obj_ids, b)
        s = pointer.scores(hidden, mask, row)[t]
        target = first_proxy(ex, b)
        terms.append(F.cross_entropy(s[None].float(), torch.tensor([target])))
        hits += int(s.argmax()) == target
    return torch.stack(terms).mean(), hits / len(items)


@torch.no_grad()
def accuracy(model, codec: TextCodec, items: list[tuple[Example, int, int]], obj_ids: torch.Tensor,
             pointer: Pointer | None = None, logits_mode: bool = False) -> tuple[float, float, float]:
    """(share naming the nearest object, share naming any object of the scene, pointer's share) at the position
    predicting it; obj_ids: the token ids of ``<OBJ000>`` ... in identifier order."""
    batch = codec.collate([e for e, _, _ in items], 96)
    logits, hidden = forward(model, pointer, logits_mode, batch, obj_ids)
    hit = present = 0
    for row, (ex, _, b) in enumerate(items):
        t = answer_position(batch, row, obj_ids, b)
        pred = int(logits[row, t, obj_ids].argmax())
        hit += pred == b
        present += pred in set(np.asarray(ex.scene.instance).tolist())
    ptr = pointer_loss(pointer, hidden, batch, items, obj_ids, model)[1] if pointer is not None else float("nan")
    return hit / len(items), present / len(items), ptr


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
            proxy = first_proxy(ex, b)  # proxies open the sequence: its index in the keys too
            terms.append(-torch.log(self.weights[row, head, t, proxy] + 1e-9))
        return torch.stack(terms).mean()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "artifacts/checkpoints/stage1",
                    help="model folder to start from (default: the pipeline's stage-1 checkpoint)")
    ap.add_argument("--fresh", action="store_true",
                    help="start from a random-init model with the checkpoint's tokenizer and model params instead "
                         "(what stage 1 starts from)")
    ap.add_argument("--symbols", default=str(ROOT / "artifacts/symbols"),
                    help="with --fresh: the symbols stage's folder for the reference images ('none': zero banks)")
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
    ap.add_argument("--pointer", type=float, default=0.0, help="weight of the auxiliary pointer loss (0: off)")
    ap.add_argument("--pointer-logits", action="store_true",
                    help="add the pointer's proxy scores to the <OBJm> logits (a pointer-generator output)")
    ap.add_argument("--pointer-lr", type=float, default=0.0, help="the pointer head's learning rate (0: --lr)")
    ap.add_argument("--freeze", choices=["all", "lm"],
                    help="with a pointer head: 'all' trains the head alone on the fixed model (does its state carry "
                         "distance?); 'lm' also trains the position encoding and reference modules, not the LM")
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
    model, tok, meta = load_model_dir(a.checkpoint)
    if a.fresh:
        symbols = None if a.symbols == "none" else Path(a.symbols)
        if symbols is not None and not (symbols / "identifiers").is_dir():
            raise SystemExit(f"--symbols {a.symbols}: no identifiers/ folder; run `dvc repro symbols` or pass "
                             "--symbols none")
        model = create_model(model_params(meta), tok, symbols)
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
    pointer = Pointer(model.dim) if a.pointer or a.pointer_logits else None
    if a.freeze and pointer is None:
        raise SystemExit("--freeze trains the pointer head alone: add --pointer W or --pointer-logits")
    for n, p in model.named_parameters():  # frozen parts get no gradient at all (not just no update)
        if a.freeze == "all" or (a.freeze == "lm" and n.startswith("vlm.")):
            p.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": trained, "lr": a.lr}] if trained else []
    if pointer is not None:
        groups.append({"params": list(pointer.parameters()), "lr": a.pointer_lr or a.lr})
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=0.0)
    val_rng = np.random.default_rng(a.seed + 10_000)
    val = [layout(val_rng, hi, a.answer) for _ in range(a.eval_items)]
    rng, rows, losses, auxes, t0 = np.random.default_rng(a.seed), [], [], [], time.perf_counter()
    print(f"{'step':>5} {'objects':>7} {'loss':>6} {'nearest':>7} {'chance':>6} {'ratio':>5} {'in scene':>8} {'attn aux':>8} {'pointer':>7} {'s':>5}")
    model.train()
    for step in range(a.steps):
        n = objects_at(step, a.steps, lo, hi)
        items = [layout(rng, n, a.answer) for _ in range(a.batch)]
        batch = codec.collate([e for e, _, _ in items], 96)
        logits, hidden = forward(model, pointer, a.pointer_logits, batch, obj_ids)
        loss = model.answer_loss(logits, batch.labels)
        aux = probe.loss(batch, items, a.attn_head, obj_ids) if probe else torch.zeros(())
        auxes.append(float(aux.detach()))
        total = loss + a.attn_aux * aux
        if a.pointer:
            total = total + a.pointer * pointer_loss(pointer, hidden, batch, items, obj_ids, model)[0]
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            model.eval()
            acc, present, ptr = accuracy(model, codec, val, obj_ids, pointer, a.pointer_logits)
            model.train()
            chance = 1.0 / (hi - 1)
            rows.append({"step": step + 1, "objects": n, "loss": float(np.mean(losses[-a.eval_every:])),
                         "nearest": acc, "chance": chance, "ratio": acc / chance, "in_scene": present,
                         "attn_aux": float(np.mean(auxes[-a.eval_every:])), "pointer": ptr,
                         "seconds": time.perf_counter() - t0})
            r = rows[-1]
            print(f"{r['step']:>5} {n:>7} {r['loss']:>6.3f} {acc:>7.3f} {chance:>6.3f} {r['ratio']:>5.2f} "
                  f"{present:>8.2f} {r['attn_aux']:>8.3f} {ptr:>7.3f} {r['seconds']:>5.0f}", flush=True)
    out = {"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}
    if a.json:
        write_json(a.json, out, indent=1)
    return out


if __name__ == "__main__":
    main()
