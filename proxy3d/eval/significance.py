"""Paired bootstrap of a model-minus-baseline difference over val items.

The default synthetic val split is small (37 VSI-Bench items, ~5 per question type; 27 SQA3D items), so a
10-point gap between the model and the blind baseline can be noise. For the benchmarks scored item by item —
ScanRefer Acc@0.25/0.5, Multi3DRefer F1@0.25/0.5, SQA3D EM and every VSI-Bench task with its ``overall`` — the
items are resampled with replacement (within each VSI-Bench question type, since ``overall`` averages types),
both variants are scored on the same resample, and the difference gets a 95% percentile interval. ScanQA and
Scan2Cap (CIDEr, BLEU: corpus metrics) are not bootstrapped. Every point estimate is the metric of
:mod:`proxy3d.eval.tasks` itself (a test checks they agree).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from proxy3d.eval import metrics, tasks
from proxy3d.eval.records import Boxes

Aggregate = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _grounding(items: Sequence[dict], preds: Sequence[str], boxes: Boxes, pred_boxes: Boxes | None
               ) -> dict[str, np.ndarray]:
    ious, _ = tasks.scanrefer_ious(items, preds, boxes, pred_boxes)
    iou = np.asarray(ious, dtype=np.float64)
    return {"acc@0.25": (iou >= 0.25).astype(np.float64), "acc@0.5": (iou >= 0.5).astype(np.float64)}


def _multi(items: Sequence[dict], preds: Sequence[str], boxes: Boxes, pred_boxes: Boxes | None
           ) -> dict[str, np.ndarray]:
    f1 = np.asarray(tasks.multi3drefer_f1s(items, preds, boxes, pred_boxes)[0], dtype=np.float64).reshape(-1, 2)
    return {"f1@0.25": f1[:, 0], "f1@0.5": f1[:, 1]}


def _sqa(items: Sequence[dict], preds: Sequence[str], boxes: Boxes, pred_boxes: Boxes | None) -> dict[str, np.ndarray]:
    em = metrics.qa_em_items([tasks.strip_objects(p) for p in preds], [tasks.answers_of(it) for it in items])
    return {"em": em[:, 0]}


# benchmark -> per-item score columns (a stratum each is the whole benchmark)
_ITEM_SCORES: dict[str, Callable[[Sequence[dict], Sequence[str], Boxes, Boxes | None], dict[str, np.ndarray]]] = {
    "scanrefer": _grounding, "multi3drefer": _multi, "sqa3d": _sqa}


def _strata(items: Sequence[dict], preds_a: Sequence[str], preds_b: Sequence[str], boxes: Boxes,
            pred_boxes: tuple[Boxes | None, Boxes | None] = (None, None)
            ) -> dict[str, tuple[dict[str, tuple[np.ndarray, np.ndarray]], Aggregate]]:
    """benchmark -> ({stratum: (scores_a, scores_b), each (n_s, M)}, aggregate: {stratum: (R, M) means} ->
    {metric: (R,)}). VSI-Bench has one stratum per question type (M = 1); the others one stratum, M metrics."""
    by_bench: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        bench = tasks.BENCHMARK_OF_TASK.get(it["task"])
        if bench in _ITEM_SCORES or bench == "vsibench":
            by_bench[bench].append(i)
    out: dict[str, tuple[dict[str, tuple[np.ndarray, np.ndarray]], Aggregate]] = {}
    for bench, idx in sorted(by_bench.items()):
        its = [items[i] for i in idx]
        pa, pb = [preds_a[i] for i in idx], [preds_b[i] for i in idx]
        if bench == "vsibench":
            types, sa = tasks.vsibench_item_scores(its, pa)
            sb = tasks.vsibench_item_scores(its, pb)[1]
            t, sa, sb = np.asarray(types), np.asarray(sa)[:, None], np.asarray(sb)[:, None]
            strata = {str(k): (sa[t == k], sb[t == k]) for k in sorted(set(types))}
            vsi = functools.partial(metrics.vsibench_aggregate, numeric_types=tasks.VSI_NUMERIC)
            out[bench] = (strata, lambda means, vsi=vsi: vsi({k: v[:, 0] for k, v in means.items()}))
        else:
            ca, cb = _ITEM_SCORES[bench](its, pa, boxes, pred_boxes[0]), _ITEM_SCORES[bench](its, pb, boxes, pred_boxes[1])
            names = list(ca)
            both = (np.stack([ca[m] for m in names], 1), np.stack([cb[m] for m in names], 1))
            out[bench] = ({"all": both}, lambda means, names=names: {m: means["all"][:, j] for j, m in enumerate(names)})
    return out


def paired_bootstrap(items: Sequence[dict], preds_a: Sequence[str], preds_b: Sequence[str], boxes: Boxes,
                     resamples: int = 2000, seed: int = 0,
                     pred_boxes: tuple[Boxes | None, Boxes | None] = (None, None)) -> dict[str, dict[str, float]]:
    """``{"<benchmark>.<metric>": {"a", "b", "diff", "lo", "hi", "p_not_better", "n_items"}}`` for variant A
    (``preds_a``) against B on the same ``items``: the metric of each, A - B, its 95% bootstrap interval
    [lo, hi], and the share of resamples where A did not beat B. ``pred_boxes``: the boxes A's and B's
    identifiers name (None: the GT ``boxes``, see :mod:`proxy3d.eval.tasks`). ``resamples`` = 0 returns {}."""
    if len(preds_a) != len(items) or len(preds_b) != len(items):
        raise ValueError(f"paired bootstrap needs one prediction per item: {len(items)} items, "
                         f"{len(preds_a)} and {len(preds_b)} predictions")
    if resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    for bench, (strata, aggregate) in _strata(items, preds_a, preds_b, boxes, pred_boxes).items():
        point_a = aggregate({k: a.mean(0, keepdims=True) for k, (a, _) in strata.items()})
        point_b = aggregate({k: b.mean(0, keepdims=True) for k, (_, b) in strata.items()})
        boot_a, boot_b = {}, {}
        for k, (a, b) in strata.items():
            pick = rng.integers(0, len(a), size=(resamples, len(a)))  # the same items for both variants
            boot_a[k], boot_b[k] = a[pick].mean(1), b[pick].mean(1)
        agg_b = aggregate(boot_b)
        n: dict[str, float] = defaultdict(float)  # items behind each metric: the strata it is computed from
        for k, (a, _) in strata.items():
            probe = aggregate({j: np.full((1, a.shape[1]), float(j == k)) for j in strata})
            for m, v in probe.items():
                n[m] += len(a) if v[0] > 0 else 0
        for m, d in ((m, v - agg_b[m]) for m, v in aggregate(boot_a).items()):
            lo, hi = np.percentile(d, [2.5, 97.5])
            a_m, b_m = float(point_a[m][0]), float(point_b[m][0])
            out[f"{bench}.{m}"] = {"a": a_m, "b": b_m, "diff": a_m - b_m, "lo": float(lo), "hi": float(hi),
                                   "p_not_better": float((d <= 0).mean()), "n_items": n[m]}
    return out


def compare(items: Sequence[dict], texts: dict[str, list[str]], model: str, baselines: Sequence[str], boxes: Boxes,
            resamples: int, seed: int, only_tasks: dict[str, Sequence[str]] | None = None,
            pred_boxes: dict[str, Boxes | None] | None = None) -> dict[str, Any]:
    """``{"<model> vs <baseline>": paired_bootstrap(...)}`` for each baseline present in ``texts``; a baseline in
    ``only_tasks`` is compared on those tasks' items only (``frequency`` answers no grounding question);
    ``pred_boxes``: variant name -> the boxes its identifiers name (missing or None: the GT ``boxes``)."""
    named = pred_boxes or {}
    out: dict[str, Any] = {}
    if model not in texts:
        return out
    for base in baselines:
        if base not in texts:
            continue
        keep = [i for i, it in enumerate(items) if only_tasks is None or base not in only_tasks
                or it["task"] in only_tasks[base]]
        res = paired_bootstrap([items[i] for i in keep], [texts[model][i] for i in keep],
                               [texts[base][i] for i in keep], boxes, resamples, seed,
                               (named.get(model), named.get(base)))
        if res:
            out[f"{model} vs {base}"] = res
    return out


def comparison_metrics(comparisons: dict[str, Any]) -> dict[str, float]:
    """``cmp.<model>_vs_<baseline>.<benchmark>.<metric>.{diff,lo,hi}`` -> value, for MLflow."""
    out: dict[str, float] = {}
    for name, rows in comparisons.items():
        key = name.replace(" vs ", "_vs_")
        for metric, r in rows.items():
            for part in ("diff", "lo", "hi"):
                out[f"cmp.{key}.{metric}.{part}".replace("@", "_at_")] = float(r[part])
    return out
