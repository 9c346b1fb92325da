"""Score (SpaceSpan item, generated text) pairs per benchmark, independent of any model.

Items are SpaceSpan rows (DESIGN §6: id, source, task, scene_id, question, answers, target_object_ids,
question_type, ...). Predictions are the generated texts; an ``<OBJxxx>`` identifier in them is a predicted box:
``pred_boxes[scene][xxx]`` when the caller gives ``pred_boxes`` (the evaluate stage's default: the box of the
points of the proxies carrying that identifier, ``evaluate.box_source: proxies``), else the GT box of object xxx.
GT boxes (``boxes``) are always the targets. Tasks map to benchmarks by the metric they are scored with:

grounding -> scanrefer, multi_grounding -> multi3drefer, qa -> scanqa, situated_qa -> sqa3d,
caption -> scan2cap, spatial_mc / spatial_num -> vsibench, attribute -> mmscan, id_align / coord_align -> alignment.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from proxy3d.eval import captions, metrics
from proxy3d.eval.records import Boxes, gt_box, gt_box_or_no_box
from proxy3d.model.inputs import text_or_none

log = logging.getLogger(__name__)

OBJ_RE = re.compile(r"<OBJ(\d{3})>")
BENCHMARK_OF_TASK = {
    "grounding": "scanrefer", "multi_grounding": "multi3drefer", "qa": "scanqa", "situated_qa": "sqa3d",
    "caption": "scan2cap", "spatial_mc": "vsibench", "spatial_num": "vsibench", "attribute": "mmscan",
    "id_align": "alignment", "coord_align": "alignment",
}
GROUNDING_TASKS = ("grounding", "multi_grounding")


def parse_objects(text: str) -> list[int]:
    """Object ids named by ``<OBJxxx>`` tokens, in order, without repeats."""
    return list(dict.fromkeys(int(m) for m in OBJ_RE.findall(text)))


def strip_objects(text: str) -> str:
    return re.sub(r"\s+", " ", OBJ_RE.sub(" ", text)).strip()


def _ids(item: dict[str, Any]) -> list[int]:
    v = item.get("target_object_ids")
    return [] if v is None else [int(i) for i in v]


def question_type(item: dict[str, Any]) -> str:
    """The item's question type, "" when missing (None, or the NaN of a null Parquet cell)."""
    return text_or_none(item.get("question_type")) or ""


def answers_of(item: dict[str, Any]) -> list[str]:
    v = item.get("answers")
    return [] if v is None else [str(a) for a in v]


def _has_distractors(boxes: Boxes, scene_id: str, object_id: int) -> bool:
    """Multi3DRefer's "with distractors": another object of the scene has the target's label (True for a target
    the scene lacks)."""
    objs = boxes.get(scene_id, {})
    if object_id not in objs:
        return True
    label = objs[object_id][0]
    return sum(1 for lab, _ in objs.values() if lab == label) > 1


def _eval_type(item: dict[str, Any], boxes: Boxes) -> str:
    """Multi3DRefer eval_type: the item's own when SpaceSpan kept it, else derived from targets and labels."""
    qt = item.get("question_type")
    if qt in metrics.MULTI3DREFER_TYPES:
        return str(qt)
    ids = _ids(item)
    if len(ids) > 1:
        return "mt"
    if not ids:
        return "zt_wo_d"
    return "st_w_d" if _has_distractors(boxes, item["scene_id"], ids[0]) else "st_wo_d"


def scanrefer_ious(items: Sequence[dict], preds: Sequence[str], boxes: Boxes, pred_boxes: Boxes | None = None
                   ) -> tuple[list[float], list[int]]:
    """Per item: IoU of the first named object's box (``pred_boxes``, default ``boxes``) with the target's (0 when
    none or unknown), and
    unique (0) / multiple (1) by :func:`metrics.unique_multiple_lookup` over the targets of ``items`` (the
    evaluated split's annotated objects, as ScanRefer's ``_get_unique_multiple_lookup`` in lib/dataset.py; not
    every object of the scene), each named by the objects table's label. A target without a box is multiple.
    ScanRefer's 18-class split needs ScanNet's label table, which ``proxy3d score --label-map`` applies."""
    annotated = [(str(it["scene_id"]), t[0], boxes[str(it["scene_id"])][t[0]][0]) for it in items
                 if (t := _ids(it)) and gt_box(boxes, str(it["scene_id"]), t[0]) is not None]
    lookup = metrics.unique_multiple_lookup(annotated)
    named_boxes = boxes if pred_boxes is None else pred_boxes
    ious, um = [], []
    for it, pred in zip(items, preds, strict=True):
        sid, targets, named = it["scene_id"], _ids(it), parse_objects(pred)
        gt = gt_box(boxes, sid, targets[0]) if targets else None
        p = gt_box(named_boxes, sid, named[0]) if named else None  # empty prediction / unknown id: IoU 0
        ious.append(0.0 if gt is None or p is None else metrics.box3d_iou(p, gt, metrics.SCANREFER_IOU_EPS))
        um.append(lookup.get((str(sid), targets[0]), 1) if targets else 1)
    return ious, um


def score_scanrefer(items: Sequence[dict], preds: Sequence[str], boxes: Boxes,
                    pred_boxes: Boxes | None = None) -> dict[str, float]:
    return metrics.scanrefer_scores(*scanrefer_ious(items, preds, boxes, pred_boxes))


def multi3drefer_f1s(items: Sequence[dict], preds: Sequence[str], boxes: Boxes, pred_boxes: Boxes | None = None
                     ) -> tuple[list[tuple[float, float]], list[str]]:
    """Per item: (F1@0.25, F1@0.5) of the named boxes against the targets', and the evaluation type. Every named
    object is a predicted box, as in M3DRef-CLIP's evaluator: one the scene does not have matches nothing (it
    counts against precision, and a zero-target item answered with it scores 0), and a target missing from the
    boxes stays a target nothing matches (the item does not turn zero-target)."""
    f1s, types = [], []
    named_boxes = boxes if pred_boxes is None else pred_boxes
    for it, pred in zip(items, preds, strict=True):
        sid = it["scene_id"]
        named = [gt_box_or_no_box(named_boxes, sid, i) for i in parse_objects(pred)]
        gt_boxes = [gt_box_or_no_box(boxes, sid, i) for i in _ids(it)]
        f1s.append(metrics.multi3drefer_f1(named, gt_boxes))
        types.append(_eval_type(it, boxes))
    return f1s, types


def score_multi3drefer(items: Sequence[dict], preds: Sequence[str], boxes: Boxes,
                       pred_boxes: Boxes | None = None) -> dict[str, float]:
    return metrics.multi3drefer_scores(*multi3drefer_f1s(items, preds, boxes, pred_boxes))


def score_qa(items: Sequence[dict], preds: Sequence[str], meteor: bool) -> dict[str, float]:
    answers = [answers_of(it) for it in items]
    texts = [strip_objects(p) for p in preds]
    out = metrics.qa_em_scores(texts, answers)
    gts = {str(i): [metrics.clean_answer(a) for a in a_list] or [""] for i, a_list in enumerate(answers)}
    res = {str(i): metrics.clean_answer(t) for i, t in enumerate(texts)}
    corpus, _ = captions.caption_scores(gts, res, meteor=meteor)
    return {**out, **corpus}


def score_sqa3d(items: Sequence[dict], preds: Sequence[str]) -> dict[str, float]:
    return metrics.sqa3d_scores([strip_objects(p) for p in preds], [answers_of(it) for it in items],
                                [str(it.get("question", "")) for it in items])


def score_scan2cap(items: Sequence[dict], preds: Sequence[str], boxes: Boxes, meteor: bool,
                   pred_boxes: Boxes | None = None) -> dict[str, float]:
    """One caption item per GT object (its references pooled: SpaceSpan's answers are Scan2Cap's corpus captions,
    space-joined tokens without "sos"/"eos"); the model captions a given object, so the matched box is the
    object's own unless the caption names another object (then that object's box). With ``pred_boxes`` the
    object's own box is its predicted box too (IoU with its GT box; 0 when it has none), without them it is the
    GT box (IoU 1). Scored by
    :func:`captions.scan2cap_scores`, the definition ``proxy3d score --benchmark scan2cap`` uses."""
    gts: dict[str, list[str]] = defaultdict(list)
    cands: dict[str, str] = {}
    ious: dict[str, float] = {}
    named_boxes = boxes if pred_boxes is None else pred_boxes
    for it, pred in zip(items, preds, strict=True):
        targets = _ids(it)
        if not targets:
            continue
        key = f"{it['scene_id']}|{targets[0]}"
        gts[key].extend(answers_of(it))
        if key not in cands:
            named = parse_objects(pred)
            if not named and pred_boxes is None:
                ious[key] = 1.0
            else:
                gt = gt_box(boxes, it["scene_id"], targets[0])
                p = gt_box(named_boxes, it["scene_id"], (named or targets)[0])
                ious[key] = metrics.box3d_iou(p, gt) if p is not None and gt is not None else 0.0
            cands[key] = strip_objects(pred)
    return captions.scan2cap_scores(dict(gts), cands, ious, meteor=meteor)


# VSI-Bench's numeric question types plus SpaceSpan's own numeric spatial task (MRA, not exact match)
VSI_NUMERIC = (*metrics.VSI_NUM_TYPES, "spatial_num")


def vsibench_item_scores(items: Sequence[dict], preds: Sequence[str]) -> tuple[list[str], list[float]]:
    """Per item: question type (the task for items without a VSI type) and score (accuracy or MRA)."""
    types, scores = [], []
    for it, pred in zip(items, preds, strict=True):
        qt = question_type(it)
        if qt not in metrics.VSI_MC_TYPES + metrics.VSI_NUM_TYPES:
            qt = str(it["task"])
        types.append(qt)
        scores.append(metrics.vsibench_item_score(qt, strip_objects(pred), (answers_of(it) or [""])[0], VSI_NUMERIC))
    return types, scores


def score_vsibench(items: Sequence[dict], preds: Sequence[str]) -> dict[str, float]:
    """VSI-Bench scoring; items without a VSI question_type are their own task (``spatial_num``: MRA,
    ``spatial_mc``: exact match)."""
    return metrics.vsibench_scores(*vsibench_item_scores(items, preds), VSI_NUMERIC)


def score_em(items: Sequence[dict], preds: Sequence[str]) -> dict[str, float]:
    return metrics.qa_em_scores(list(preds), [answers_of(it) for it in items])


def score_pairs(items: Sequence[dict], preds: Sequence[str], boxes: Boxes, meteor: bool = True,
                tasks: Sequence[str] | None = None, pred_boxes: Boxes | None = None) -> dict[str, dict[str, float]]:
    """Metrics per benchmark for aligned ``items`` and ``preds`` (optionally only ``tasks``); identifiers name
    ``pred_boxes`` (default: the GT ``boxes``)."""
    by_bench: dict[str, tuple[list[dict], list[str]]] = defaultdict(lambda: ([], []))
    for it, pred in zip(items, preds, strict=True):
        if tasks is not None and it["task"] not in tasks:
            continue
        bench = BENCHMARK_OF_TASK.get(it["task"])
        if bench is None:
            log.warning("item %s: unknown task %r, not scored", it.get("id"), it["task"])
            continue
        by_bench[bench][0].append(it)
        by_bench[bench][1].append(pred)
    out: dict[str, dict[str, float]] = {}
    for bench, (its, ps) in sorted(by_bench.items()):
        if bench == "scanrefer":
            out[bench] = score_scanrefer(its, ps, boxes, pred_boxes)
        elif bench == "multi3drefer":
            out[bench] = score_multi3drefer(its, ps, boxes, pred_boxes)
        elif bench == "scanqa":
            out[bench] = score_qa(its, ps, meteor)
        elif bench == "sqa3d":
            out[bench] = score_sqa3d(its, ps)
        elif bench == "scan2cap":
            out[bench] = score_scan2cap(its, ps, boxes, meteor, pred_boxes)
        elif bench == "vsibench":
            out[bench] = score_vsibench(its, ps)
        else:
            out[bench] = score_em(its, ps)
        out[bench]["n_items"] = float(len(its))
    return out
