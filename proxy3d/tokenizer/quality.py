"""Tokenizer quality without an LLM: tokens, purity, object coverage and oracle grounding.

For one scene and one tokenizer (method, budget), on the valid patches with finite points:

* **tokens**: K', proxies produced.
* **purity**: share of member patches whose ground-truth label equals their proxy's majority
  ground-truth label (unassigned patches excluded).
* **targets**: the ground-truth objects of the scene (``meta["objects"]``) except room structure
  (``wall``, ``floor``, ``ceiling`` by default, ``eval_exclude_labels``), as in ScanRefer; when the
  triplets carry no objects, the labels present in the patches. **visible**: share of targets with
  >= 1 valid patch carrying their ground-truth label (a property of the frames and the patch grid,
  the same for every tokenizer).
* **coverage**: share of visible targets that own >= 1 proxy, i.e. a proxy whose majority label,
  among the labels the tokenizer reports (``info["labels"]``: ``semantic``'s after its voxel vote and
  outlier detachment, the baselines' as given), is that object.
* **oracle grounding** Acc@0.25 / Acc@0.5 (and mean IoU): for each target, the box of all member points
  of the proxies it owns, axis-aligned IoU against its ground-truth box (``meta["objects"][i]["aabb"]``;
  when the triplets carry no objects, the box of its ground-truth-labelled patches). A target owning no
  proxy — including one no frame shows — scores IoU 0: every target stays in the denominator, as a
  grounding benchmark asks about every annotated object. ``acc25_visible``/``acc50_visible`` divide the
  same hits by the visible targets only (what the tokenizer alone is responsible for).

``noisy=True`` feeds the tokenizer labels corrupted by :mod:`proxy3d.tokenizer.noise` (every method
sees the same noisy labels; only ``semantic`` uses them for grouping) while purity and the boxes stay
ground truth. Scenes are pooled by summing counts, so every object weighs the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from proxy3d.tokenizer import pooling
from proxy3d.tokenizer.noise import noisy_labels
from proxy3d.tokenizer.tokenizer import ProxyTokenizer
from proxy3d.types import Triplets


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two axis-aligned boxes given as (cx, cy, cz, dx, dy, dz)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    lo = np.maximum(a[:3] - a[3:] / 2, b[:3] - b[3:] / 2)
    hi = np.minimum(a[:3] + a[3:] / 2, b[:3] + b[3:] / 2)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[3:]) + np.prod(b[3:])) - inter
    return inter / union if union > 0 else 0.0


def has_gt_labels(t: Triplets) -> bool:
    """Whether ``t.labels`` are ground-truth object ids (``gt`` masks, or triplets that name no mask backend):
    ``sam2`` labels are association ids numbered by first sighting, unrelated to ``meta["objects"]``."""
    return t.meta.get("masks", "gt") in ("gt", "")


def gt_boxes(t: Triplets, points: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Object id -> (6,) ground-truth box from ``meta["objects"]``, else from the labelled patches."""
    objs = t.meta.get("objects") or []
    if objs:
        return {int(o["object_id"]): np.asarray(o["aabb"], dtype=np.float64) for o in objs}
    out = {}
    for o in np.unique(labels[labels >= 0]):
        p = points[labels == o]
        lo, hi = p.min(0), p.max(0)
        out[int(o)] = np.concatenate([(lo + hi) / 2, hi - lo])
    return out


def scene_counts(t: Triplets, tok: ProxyTokenizer, noise: Any | None = None,
                 exclude_labels: Sequence[str] = ()) -> dict[str, float]:
    """Additive counts for one scene (see module docstring); ``noise`` = LabelNoiseParams or None (clean);
    objects whose ``label`` is in ``exclude_labels`` (room structure) are not grounding targets."""
    keep = np.flatnonzero(t.valid.astype(bool) & np.isfinite(t.points).all(1))
    pts = t.points[keep].astype(np.float64)
    gt = t.labels[keep].astype(np.int64)
    boxes = gt_boxes(t, pts, gt)
    seen = gt if noise is None else noisy_labels(pts, gt, t.meta.get("objects") or [], noise, t.scene_id)
    assign, K, info = tok.assign(pts, seen)
    owner, _ = pooling.majority_label(assign, K, info["labels"])
    _, pure = pooling.majority_label(assign, K, gt)
    owned = pooling.object_boxes(assign, owner, pts)
    skip = {int(o["object_id"]) for o in t.meta.get("objects") or [] if o.get("label") in set(exclude_labels)}
    targets = [o for o in sorted(boxes) if o not in skip]
    present = set(np.unique(gt[gt >= 0]).tolist())
    visible = [o for o in targets if o in present]
    hits25 = hits50 = covered = 0
    iou_sum = 0.0
    for o in visible:  # an invisible target owns no proxy: IoU 0
        if o not in owned:
            continue
        covered += 1
        iou = box_iou(owned[o], boxes[o])
        iou_sum += iou
        hits25 += iou >= 0.25
        hits50 += iou >= 0.5
    return {"scenes": 1, "tokens": K, "members": int((assign >= 0).sum()), "pure": int(pure.sum()),
            "objects": len(targets), "visible": len(visible), "covered": covered, "hits25": int(hits25), "hits50": int(hits50),
            "iou_sum": iou_sum}


def summarize(counts: list[dict[str, float]]) -> dict[str, float]:
    """Pool scene counts into ratios (percentages for accuracy/coverage/purity)."""
    s = {k: float(sum(c[k] for c in counts)) for k in counts[0]} if counts else {}
    if not s:
        return {}
    objs, vis = max(s["objects"], 1.0), max(s["visible"], 1.0)
    return {"tokens_per_scene": s["tokens"] / s["scenes"], "purity": 100 * s["pure"] / max(s["members"], 1.0),
            "visible": 100 * s["visible"] / objs, "coverage": 100 * s["covered"] / vis,
            "acc25": 100 * s["hits25"] / objs, "acc50": 100 * s["hits50"] / objs, "mean_iou": s["iou_sum"] / objs,
            "acc25_visible": 100 * s["hits25"] / vis, "acc50_visible": 100 * s["hits50"] / vis,
            "objects": s["objects"], "scenes": s["scenes"]}


def evaluate_grid(scenes: list[Triplets], p: Any) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Metrics for every method × budget in ``p`` (ProxiesParams), clean and noisy:
    ``{"clean"|"noisy": {method: {str(budget): summarize(...)}}}``."""
    for t in scenes:
        if not has_gt_labels(t):
            raise ValueError(f"scene {t.scene_id!r}: its patch labels come from perception.masks="
                             f"{t.meta.get('masks')!r}, not ground truth, so purity, coverage and oracle grounding "
                             "would compare association ids with object ids; build the triplets with "
                             "perception.masks=gt to measure the tokenizer")
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for cond, noise in (("clean", None), ("noisy", p.label_noise)):
        out[cond] = {}
        for method in p.eval_methods:
            out[cond][method] = {}
            for budget in p.eval_budgets:
                tok = ProxyTokenizer.from_params(p, method=method, budget=budget)
                counts = [scene_counts(t, tok, noise, p.eval_exclude_labels) for t in scenes]
                out[cond][method][str(budget)] = summarize(counts)
    return out
