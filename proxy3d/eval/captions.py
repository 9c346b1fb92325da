"""Caption metrics with pycocoevalcap (the code ScanQA, Scan2Cap and LEO use): BLEU-1..4, METEOR, ROUGE-L,
CIDEr. ScanQA's text is PTB-tokenized first (ATR-DBI/ScanQA scripts/score.py), Scan2Cap's is not. METEOR and
the PTB tokenizer run Java (``java`` must be on PATH).

Scan2Cap@0.5 follows daveredrum/Scan2Cap benchmark/eval.py: a reference is ``"sos " + " ".join(token) + " eos"``
(``organize_gt``), a candidate is the submitted caption (Scan2Cap's ``decode_caption`` emits "sos ... eos"; one
without them is wrapped the same way), and both reach the scorers as whitespace-split strings (its ``capeval``
has no PTB tokenizer), so "." is a token. Every GT object is one caption item; its candidate is the caption of
the prediction assigned to it one-to-one in its scene (:func:`proxy3d.eval.metrics.assign_boxes`), and the item's
score is multiplied by ``IoU >= 0.5`` (``filter_candidates``; the training-time ``lib/eval_helper.py`` uses
``>``, we follow the benchmark), then averaged over all GT objects (the benchmark's recall, per-caption BLEU
included). A missed object scores 0, as the benchmark's masked "sos eos" placeholder does; GT objects of a scene
without predictions count as missed (the benchmark leaves them out of its denominator).
"""

from __future__ import annotations

import atexit
import logging
import math
import shutil
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MISSED_CAPTION = "sos eos"  # Scan2Cap's candidate for an object without a matching prediction


_METEOR: list[Any] = []


def _meteor() -> Any:
    """One METEOR Java process per Python process (loading its paraphrase tables takes seconds), closed at exit."""
    if not _METEOR:
        if shutil.which("java") is None:
            raise RuntimeError("METEOR needs Java: install a JRE (e.g. apt-get install openjdk-17-jre-headless) "
                               "or turn METEOR off (evaluate.meteor=false, proxy3d score --no-meteor)")
        from pycocoevalcap.meteor.meteor import Meteor

        m = Meteor()
        _METEOR.append(m)

        def close() -> None:
            m.meteor_p.stdin.close()
            m.meteor_p.kill()
            m.meteor_p.wait()

        atexit.register(close)
    return _METEOR[0]


def scan2cap_tokens(text: str) -> list[str]:
    """Tokens of a description without ScanRefer's ``token`` list: lower-cased, split on whitespace, and leading
    and trailing punctuation split off one character per token ("chair." -> "chair", "."), the form of
    ScanRefer's released token lists (Scan2Cap itself has no tokenizer: it reads ``token``). Punctuation inside a
    word stays ("l-shaped", "it's")."""
    out: list[str] = []
    for word in text.lower().split():
        core = word.strip(string.punctuation)
        start = word.find(core) if core else len(word)
        out += [*word[:start], *([core] if core else []), *word[start + len(core):]]
    return out


def scan2cap_caption(text: str) -> str:
    """``text`` as Scan2Cap scores it: already "sos ... eos" as is, else its whitespace-separated tokens wrapped
    in "sos"/"eos" (an empty caption becomes :data:`MISSED_CAPTION`)."""
    words = str(text).split()
    if len(words) >= 2 and words[0] == "sos" and words[-1] == "eos":
        return str(text)
    return " ".join(["sos", *words, "eos"])


def _tokenize(gts: Mapping[str, Sequence[str]], res: Mapping[str, str]) -> tuple[dict, dict]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    g = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    r = tok.tokenize({k: [{"caption": res[k]}] for k in gts})
    # PTB tokenization can empty a caption (punctuation only); pycocoevalcap's Bleu needs a string anyway
    return g, {k: v if v else [""] for k, v in r.items()}


def caption_scores(
    gts: Mapping[str, Sequence[str]], res: Mapping[str, str], meteor: bool = True, ptb: bool = True
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Corpus scores and per-item scores for candidates ``res[id]`` against references ``gts[id]``.

    Returns ``({"bleu1".."bleu4", "meteor", "rouge_l", "cider"}, {same keys: (N,) per item in sorted id order})``.
    A missing candidate is an empty caption. CIDEr's IDF comes from all references, so one item alone scores 0.
    ``ptb``: PTB-tokenize both sides first (ScanQA); else the strings are scored as they are (Scan2Cap).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not gts:
        return {}, {}
    empty = [k for k, v in gts.items() if not v]
    if empty:
        raise ValueError(f"caption items without references: {empty[:5]}; every item needs >= 1 reference caption")
    keys = sorted(gts)
    g: dict = {k: list(gts[k]) for k in keys}
    r: dict = {k: [str(res.get(k, ""))] for k in keys}
    if ptb:
        g, r = _tokenize(g, {k: v[0] for k, v in r.items()})
    corpus: dict[str, float] = {}
    items: dict[str, np.ndarray] = {}
    bleu, bleu_items = Bleu(4).compute_score(g, r, verbose=0)
    for n in range(4):
        corpus[f"bleu{n + 1}"] = float(bleu[n])
        items[f"bleu{n + 1}"] = np.asarray(bleu_items[n], dtype=np.float64)
    for name, scorer in (("rouge_l", Rouge()), ("cider", Cider())):
        score, per = scorer.compute_score(g, r)
        corpus[name], items[name] = float(score), np.asarray(per, dtype=np.float64)
    if meteor:
        score, per = _meteor().compute_score(g, r)
        corpus["meteor"], items["meteor"] = float(score), np.asarray(per, dtype=np.float64)
    return corpus, items


def matched(iou: float, min_iou: float = 0.5) -> bool:
    """A predicted box captions its GT object at ``min_iou`` when its IoU is at least that (Scan2Cap
    benchmark/eval.py ``filter_candidates``: ``iou >= min_iou``)."""
    return float(iou) >= min_iou


def scan2cap_scores(
    gts: Mapping[str, Sequence[str]],
    candidates: Mapping[str, str],
    ious: Mapping[str, float],
    min_iou: float = 0.5,
    meteor: bool = True,
) -> dict[str, float]:
    """Scan2Cap metrics @``min_iou``: mean over GT objects of item score × [IoU >= min_iou] (:func:`matched`);
    the one definition both ``proxy3d score`` and the evaluate stage use.

    gts: ``"scene|object_id" -> reference captions`` as tokens joined by spaces, with or without "sos"/"eos";
    candidates: the assigned prediction's caption (absent = missed); ious: its IoU (absent = 0). Both sides go
    through :func:`scan2cap_caption` and are scored without PTB tokenization (see the module docstring)."""
    if not gts:
        return {}
    refs = {k: [scan2cap_caption(c) for c in v] for k, v in gts.items()}
    res = {k: scan2cap_caption(candidates.get(k, MISSED_CAPTION)) for k in gts}
    _, items = caption_scores(refs, res, meteor=meteor, ptb=False)
    mask = np.array([matched(ious.get(k, 0.0), min_iou) for k in sorted(gts)], dtype=np.float64)
    tag = f"@{min_iou}"
    out = {f"{name}{tag}": float(np.mean(v * mask)) for name, v in items.items()}
    out[f"recall{tag}"] = float(mask.mean()) if len(mask) else math.nan
    return out
