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

Knobs for the hypotheses tried so far: ``--objects lo-hi`` grows the layouts from lo to hi objects over the first
60% of the steps (a scene-size warm-up); ``--answer`` the answer template (``{a}`` the asked identifier, ``{b}`` the
nearest; default the curriculum's ``closest_to``); ``--fourier-sigma S`` rescales F's random frequencies to std S
cycles/m (the init's 0.5 gives a kernel that has decayed within ~1 m); ``--fourier-init N`` sets F(x, y)'s
zero-initialised output layer to random weights scaled so F varies by norm N across the room (the stage-1 identifier
and category rows have norm ~2.2); ``--direct S`` adds S x F(x, y) of object m's centre to every ``<OBJm>`` text
token, so the asked identifier carries its position without a lookup hop (the model's ``direct_position``; 0 unless
given); ``--attn-aux W`` adds W x an attention-supervision loss (training only): -log of the attention that head
``--attn-head`` of layer ``--attn-layer`` pays, at the position predicting the nearest object, to that object's
proxy (eager attention, read with a forward hook); ``--pointer W`` adds W x the cross-entropy of the model's pointer
head (``proxy3d.model.pointer``, a bilinear score of every proxy from the last hidden state, created at the
identity) at that position, and ``--pointer-logits`` adds the pointer's scores to the identifier logits instead (the
model's pointer-generator output, what stage 2's pointer phase trains; the column ``pointer`` is the head's own
accuracy over the scene's proxies); ``--freeze all`` trains that head alone on the fixed model, ``--freeze lm`` the
head, the position encoding and the reference modules; ``--fresh`` starts from a random-init model of the
checkpoint's preset.
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


def first_proxy(ex: Example, b: int) -> int:
    """Index among ``ex``'s proxies (in scene order, as they open the sequence) of object ``b``'s first one."""
    return int(np.flatnonzero(np.asarray(ex.scene.instance) == b)[0])


def answer_position(batch, row: int, obj_ids: torch.Tensor, b: int) -> int:
    """Index of the token of ``batch`` row ``row`` whose next-token prediction is the nearest object ``<OBJb>``."""
    return int((batch.labels[row] == obj_ids[b]).nonzero().flatten()[-1]) - 1


def pointer_loss(model, hidden: torch.Tensor, batch, items, obj_ids: torch.Tensor):
    """Cross-entropy of the nearest object's proxy among the row's proxies at the answer position (scored by
    ``model.pointer``, :mod:`proxy3d.model.pointer`); and the hits."""
    keys = model.pointer.keys(hidden, batch.input_ids == model.proxy_token_id, batch.scenes)
    terms, hits = [], 0
    for row, (ex, _, b) in enumerate(items):
        t = answer_position(batch, row, obj_ids, b)
        s = model.pointer.q(hidden[row, t]) @ keys[row][0].T / hidden.shape[-1] ** 0.5
        target = first_proxy(ex, b)
        terms.append(F.cross_entropy(s[None].float(), torch.tensor([target])))
        hits += int(s.argmax()) == target
    return torch.stack(terms).mean(), hits / len(items)


@torch.no_grad()
def accuracy(model, codec: TextCodec, items: list[tuple[Example, int, int]],
             obj_ids: torch.Tensor) -> tuple[float, float, float]:
    """(share naming the nearest object, share naming any object of the scene, pointer's share) at the position
    predicting it; obj_ids: the token ids of ``<OBJ000>`` ... in identifier order."""
    batch = codec.collate([e for e, _, _ in items], 96)
    logits, hidden = model.outputs(batch.input_ids, batch.attention_mask, batch.scenes)
    hit = present = 0
    for row, (ex, _, b) in enumerate(items):
        t = answer_position(batch, row, obj_ids, b)
        pred = int(logits[row, t, obj_ids].argmax())
        hit += pred == b
        present += pred in set(np.asarray(ex.scene.instance).tolist())
    ptr = pointer_loss(model, hidden, batch, items, obj_ids)[1] if model.pointer is not None else float("nan")
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
    if a.fourier_sigma:  # the checkpoint's frequencies rescaled (so the README's runs reproduce), not new ones
        with torch.no_grad():
            model.pe.fourier.B.mul_(a.fourier_sigma / model.pe.fourier.B.std())
    if a.fourier_init:
        model.pe.fourier.reinit(0.0, a.fourier_init, torch.Generator().manual_seed(a.seed + 1), ROOM,
                                new_frequencies=False)
    model.direct_position = a.direct
    probe = AttentionProbe(model, a.attn_layer) if a.attn_aux else None
    obj_ids = torch.tensor(model.obj_token_ids)
    if a.freeze and not (a.pointer or a.pointer_logits):
        raise SystemExit("--freeze trains the pointer head alone: add --pointer W or --pointer-logits")
    model.pointer = None  # a stage-2+ checkpoint's head: start from the identity like a stage-1 one
    pointer = model.ensure_pointer() if a.pointer or a.pointer_logits else None
    model.pointer_mode = "on" if a.pointer_logits else "off"
    for n, p in model.named_parameters():  # frozen parts get no gradient at all (not just no update)
        if n.startswith("pointer."):
            continue
        if a.freeze == "all" or (a.freeze == "lm" and n.startswith("vlm.")):
            p.requires_grad_(False)
    trained = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("pointer.")]
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
        logits, hidden = model.outputs(batch.input_ids, batch.attention_mask, batch.scenes)
        loss = model.answer_loss(logits, batch.labels)
        aux = probe.loss(batch, items, a.attn_head, obj_ids) if probe else torch.zeros(())
        auxes.append(float(aux.detach()))
        total = loss + a.attn_aux * aux
        if a.pointer:
            total = total + a.pointer * pointer_loss(model, hidden, batch, items, obj_ids)[0]
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            model.eval()
            acc, present, ptr = accuracy(model, codec, val, obj_ids)
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
