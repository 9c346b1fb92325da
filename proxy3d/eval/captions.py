"""Caption metrics with pycocoevalcap (the code ScanQA, Scan2Cap and LEO use): BLEU-1..4, METEOR, ROUGE-L,
CIDEr on PTB-tokenized text. METEOR and the PTB tokenizer run Java (``java`` must be on PATH).

Scan2Cap@0.5 is the paper's m@kIoU: every GT object is one caption item; its candidate is the caption of the
predicted box with the highest IoU, and the item's score is multiplied by ``IoU > 0.5`` (strictly, as
Scan2Cap's ``feed_scene_cap`` keeps ``ious > min_iou``; missed objects count as empty captions: score 0), then
averaged over all GT objects. Scan2Cap's own ``eval_cap`` script differs in two ways we do not copy: it gives
a missed object the candidate "sos eos" and scores it unmasked against "sos ... eos" references (so a miss
still earns the BLEU-1/ROUGE-L of those two tokens), and it reports corpus-level BLEU where we average the
per-caption BLEU like the other masked metrics.
"""

from __future__ import annotations

import atexit
import logging
import math
import shutil
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


def _tokenize(gts: Mapping[str, Sequence[str]], res: Mapping[str, str]) -> tuple[dict, dict]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    g = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    r = tok.tokenize({k: [{"caption": res[k]}] for k in gts})
    # PTB tokenization can empty a caption (punctuation only); pycocoevalcap's Bleu needs a string anyway
    return g, {k: v if v else [""] for k, v in r.items()}


def caption_scores(
    gts: Mapping[str, Sequence[str]], res: Mapping[str, str], meteor: bool = True
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Corpus scores and per-item scores for candidates ``res[id]`` against references ``gts[id]``.

    Returns ``({"bleu1".."bleu4", "meteor", "rouge_l", "cider"}, {same keys: (N,) per item in sorted id order})``.
    A missing candidate is an empty caption. CIDEr's IDF comes from all references, so one item alone scores 0.
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
    g, r = _tokenize({k: list(gts[k]) for k in keys}, {k: str(res.get(k, "")) for k in keys})
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
    """A predicted box captions its GT object at ``min_iou`` when its IoU is strictly above it (Scan2Cap)."""
    return float(iou) > min_iou


def scan2cap_scores(
    gts: Mapping[str, Sequence[str]],
    candidates: Mapping[str, str],
    ious: Mapping[str, float],
    min_iou: float = 0.5,
    meteor: bool = True,
) -> dict[str, float]:
    """Scan2Cap metrics @``min_iou``: mean over GT objects of item score × [IoU > min_iou] (:func:`matched`).

    gts: ``"scene|object_id" -> reference captions``; candidates: the matched prediction's caption (absent =
    missed); ious: IoU of the matched prediction (absent = 0). When the references are Scan2Cap's
    ``"sos ... eos"`` corpus, candidates are wrapped the same way, as Scan2Cap's decoder output is."""
    if not gts:
        return {}
    res = {k: candidates.get(k, MISSED_CAPTION) or MISSED_CAPTION for k in gts}
    if all(c.startswith("sos ") for refs in gts.values() for c in refs):  # Scan2Cap's corpus: "sos ... eos"
        res = {k: c if c.startswith("sos") else f"sos {c} eos" for k, c in res.items()}
    _, items = caption_scores(gts, res, meteor=meteor)
    mask = np.array([matched(ious.get(k, 0.0), min_iou) for k in sorted(gts)], dtype=np.float64)
    tag = f"@{min_iou}"
    out = {f"{name}{tag}": float(np.mean(v * mask)) for name, v in items.items()}
    out[f"recall{tag}"] = float(mask.mean()) if len(mask) else math.nan
    return out
