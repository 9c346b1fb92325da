"""Score a predictions file in a benchmark's submission format against its ground-truth annotation files.

Every GT item counts: a GT item without a prediction scores as wrong (empty answer / no box), and a
prediction whose id is not in the GT is scored as a wrong extra item (counted in ``n_unknown``), never
skipped. A second prediction for the same id replaces the first (as the official dict-based evaluators do);
such repeats are counted in ``n_duplicate`` and logged. Formats (ids may be strings or integers):

- scanrefer: ``[{scene_id, object_id, ann_id, bbox}]`` (ScanRefer benchmark ``pred.json``; bbox = 8 corners)
- multi3drefer: ``[{scene_id, ann_id, aabb: [[8 corners] ...]}]`` (M3DRef-CLIP per-scene files, scene inlined;
  ``aabb: []`` predicts no target, a query left out scores 0 whatever its type)
- scanqa: ``[{scene_id, question_id, answer_top10, bbox}]`` (ScanQA test submission)
- sqa3d: ``[{question_id, answer}]``
- scan2cap: ``{scene_id: [{caption, box}]}`` (Scan2Cap benchmark submission; captions scored as Scan2Cap's
  benchmark/eval.py does, see :mod:`proxy3d.eval.captions`)
- vsibench: JSON Lines ``{id, prediction}``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np

from proxy3d.eval import captions, metrics
from proxy3d.eval.records import (
    PredictionFormatError,
    as_int,
    check_kind,
    field,
    gt_box,
    gt_box_or_no_box,
    iter_keyed_arrays,
    iter_records,
    load_gt_boxes,
    load_json,
    load_table,
    parse_box,
)

log = logging.getLogger(__name__)

BENCHMARKS = ("scanrefer", "multi3drefer", "scanqa", "sqa3d", "scan2cap", "vsibench")


def _iou(pred: np.ndarray | None, gt: np.ndarray | None, eps: float = 0.0) -> float:
    return 0.0 if pred is None or gt is None else metrics.box3d_iou(pred, gt, eps)


class _Predictions:
    """The predictions of one file keyed like the GT ``gt``: an id not in the GT is a wrong extra item
    (``unknown``); a repeated id replaces the earlier prediction and is counted (``duplicates``, first at
    ``first_duplicate``)."""

    def __init__(self, path: Path, gt: Any) -> None:
        self.path, self.gt = path, gt
        self.values: dict[Hashable, Any] = {}
        self.n = self.unknown = self.duplicates = 0
        self.first_duplicate = ""

    def add(self, line: int | str, key: Hashable, value: Any) -> None:
        self.n += 1
        if key not in self.gt:
            self.unknown += 1
            return
        if key in self.values:
            self.duplicates += 1
            self.first_duplicate = self.first_duplicate or f"{self.path}:{line}"
        self.values[key] = value

    def get(self, key: Hashable, default: Any = None) -> Any:
        return self.values.get(key, default)

    def counts(self) -> dict[str, float]:
        if self.duplicates:
            log.warning("%d predictions repeat an id already predicted (first at %s); the last one of each is scored",
                        self.duplicates, self.first_duplicate)
        return {"n_items": float(len(self.gt)), "n_predictions": float(self.n), "n_unknown": float(self.unknown),
                "n_duplicate": float(self.duplicates), "n_missing": float(len(self.gt) - len(self.values))}


def _text(path: Path, line: int | str, value: Any, key: str) -> str:
    """A predicted answer: a string (a number is read as its text); null, lists and objects are format errors
    (str(None) would be "None", which answer cleaning turns into "zero" and scores right against "0")."""
    return str(check_kind(path, line, key, value, (str, int, float), "a string"))


def score_scanrefer(pred: Path, anns: list[Path], boxes_src: Path, meteor: bool = True,
                    label_map: Path | None = None) -> dict[str, float]:
    gt = {}
    for p in anns:
        for line, r in load_table(p):
            key = (str(field(p, line, r, "scene_id")), as_int(p, line, r["object_id"], "object_id"),
                   as_int(p, line, field(p, line, r, "ann_id"), "ann_id"))
            gt[key] = str(r.get("object_name", ""))
    classes = metrics.load_scannet_label_map(label_map) if label_map else None
    lookup = metrics.unique_multiple_lookup(((s, o, n) for (s, o, _), n in gt.items()), classes)
    boxes = load_gt_boxes(boxes_src, {k[0] for k in gt})
    preds = _Predictions(pred, gt)
    for line, r in iter_records(pred):
        key = (str(field(pred, line, r, "scene_id")), as_int(pred, line, field(pred, line, r, "object_id"), "object_id"),
               as_int(pred, line, field(pred, line, r, "ann_id"), "ann_id"))
        preds.add(line, key, parse_box(pred, line, field(pred, line, r, "bbox")))
    ious = [_iou(preds.get(k), gt_box(boxes, k[0], k[1]), metrics.SCANREFER_IOU_EPS) for k in gt]
    ious += [0.0] * preds.unknown
    um = [lookup[(k[0], k[1])] for k in gt] + [-1] * preds.unknown
    return {**metrics.scanrefer_scores(ious, um), **preds.counts()}


def score_multi3drefer(pred: Path, anns: list[Path], boxes_src: Path, meteor: bool = True) -> dict[str, float]:
    gt: dict[tuple[str, int], tuple[list[int], str]] = {}
    for p in anns:
        for line, r in load_table(p):
            ids = [as_int(p, line, i, "object_ids") for i in field(p, line, r, "object_ids", (list, np.ndarray))]
            et = str(field(p, line, r, "eval_type"))
            if et not in metrics.MULTI3DREFER_TYPES:
                raise PredictionFormatError(f"{p}:{line}: eval_type {et!r} not in {metrics.MULTI3DREFER_TYPES}")
            gt[(str(field(p, line, r, "scene_id")), as_int(p, line, field(p, line, r, "ann_id"), "ann_id"))] = (ids, et)
    boxes = load_gt_boxes(boxes_src, {k[0] for k in gt})
    preds = _Predictions(pred, gt)
    for line, r in iter_records(pred):
        key = (str(field(pred, line, r, "scene_id")), as_int(pred, line, field(pred, line, r, "ann_id"), "ann_id"))
        preds.add(line, key, [parse_box(pred, line, b, "aabb") for b in field(pred, line, r, "aabb", list)])
    f1s, types = [], []
    for key, (ids, et) in gt.items():
        # a GT object missing from the scene stays a target nothing matches
        gt_boxes = [gt_box_or_no_box(boxes, key[0], i) for i in ids]
        # a query without a prediction scores 0 even when zero-target: M3DRef-CLIP's evaluator
        # (m3drefclip/evaluation/multi3drefer_evaluator.py) fills zero-initialised F1 arrays for predicted
        # queries only; "predicted nothing" is an explicit empty ``aabb`` list
        pred_boxes = preds.get(key)
        f1s.append((0.0, 0.0) if pred_boxes is None else metrics.multi3drefer_f1(pred_boxes, gt_boxes))
        types.append(et)
    f1s += [(0.0, 0.0)] * preds.unknown
    types += ["unknown"] * preds.unknown
    return {**metrics.multi3drefer_scores(f1s, types), **preds.counts()}


def _qa_gt(anns: list[Path]) -> dict[str, tuple[list[str], str]]:
    gt = {}
    for p in anns:
        for line, r in load_table(p):
            answers = field(p, line, r, "answers", (list, np.ndarray))
            gt[str(field(p, line, r, "question_id"))] = ([str(a) for a in answers], str(r.get("question", "")))
    return gt


def _qa_metrics(preds: list[str], answers: list[list[str]], unknown: int, meteor: bool) -> dict[str, float]:
    """EM, refined EM and caption metrics; ``unknown`` extra predictions each score 0 on every metric."""
    out = metrics.qa_em_scores(preds, answers)
    gts = {str(i): [metrics.clean_answer(a) for a in a_list] or [""] for i, a_list in enumerate(answers)}
    res = {str(i): metrics.clean_answer(p) for i, p in enumerate(preds)}
    corpus, _ = captions.caption_scores(gts, res, meteor=meteor)
    scale = len(preds) / (len(preds) + unknown) if preds else 0.0
    return {k: v * scale for k, v in {**out, **corpus}.items()}


def score_scanqa(pred: Path, anns: list[Path], boxes_src: Path, meteor: bool = True) -> dict[str, float]:
    gt = _qa_gt(anns)
    preds = _Predictions(pred, gt)
    for line, r in iter_records(pred):
        top = field(pred, line, r, "answer_top10", list)
        preds.add(line, str(field(pred, line, r, "question_id")), _text(pred, line, top[0], "answer_top10") if top else "")
    keys = list(gt)
    out = _qa_metrics([preds.get(k, "") for k in keys], [gt[k][0] for k in keys], preds.unknown, meteor)
    return {**out, **preds.counts()}


def score_sqa3d(pred: Path, anns: list[Path], boxes_src: Path, meteor: bool = True) -> dict[str, float]:
    questions: dict[str, str] = {}
    answers: dict[str, list[str]] = {}
    for p in anns:
        doc = load_json(p)
        if isinstance(doc, dict) and "questions" in doc:
            questions.update({str(q["question_id"]): str(q["question"]) for q in doc["questions"]})
        elif isinstance(doc, dict) and "annotations" in doc:
            answers.update({str(a["question_id"]): [str(x["answer"]) for x in a["answers"]] for a in doc["annotations"]})
        else:
            raise PredictionFormatError(f"{p}:1: expected an SQA3D questions file ({{'questions': [...]}}) or "
                                        "annotations file ({'annotations': [...]})")
    if not answers or not questions:
        raise ValueError("sqa3d needs both the questions and the annotations file: --annotations Q.json A.json")
    preds = _Predictions(pred, answers)
    for line, r in iter_records(pred):
        preds.add(line, str(field(pred, line, r, "question_id")), _text(pred, line, field(pred, line, r, "answer"), "answer"))
    keys = list(answers)
    out = metrics.sqa3d_scores([preds.get(k, "") for k in keys], [answers[k] for k in keys],
                               [questions.get(k, "") for k in keys])
    scale = len(keys) / (len(keys) + preds.unknown) if keys else 0.0
    out["em"], out["refined_em"] = out["em"] * scale, out["refined_em"] * scale  # unknown ids: wrong answers
    return {**out, **preds.counts()}


def _scan2cap_gt(anns: list[Path]) -> dict[str, list[str]]:
    """``"scene|object_id" -> reference captions`` as space-joined tokens: a Scan2Cap corpus file
    (``{"scene|object_id|name": ["sos ... eos"]}``) as it is, ScanRefer-format records by their ``token`` list as
    Scan2Cap's ``organize_gt`` (benchmark/eval.py) reads them, or, for a record without one, by its description
    split with :func:`captions.scan2cap_tokens`."""
    gt: dict[str, list[str]] = {}
    for p in anns:
        doc = load_json(p)
        if isinstance(doc, dict):
            for key, caps in doc.items():
                scene, obj = key.split("|")[:2]
                gt.setdefault(f"{scene}|{int(obj)}", []).extend(str(c) for c in caps)
        else:
            for line, r in iter_records(p):
                key = f"{field(p, line, r, 'scene_id')}|{as_int(p, line, field(p, line, r, 'object_id'), 'object_id')}"
                if "token" in r:
                    tokens = [str(t) for t in field(p, line, r, "token", (list, np.ndarray))]
                else:
                    tokens = captions.scan2cap_tokens(str(field(p, line, r, "description")))
                gt.setdefault(key, []).append(" ".join(tokens))
    return gt


def score_scan2cap(pred: Path, anns: list[Path], boxes_src: Path, meteor: bool = True) -> dict[str, float]:
    """Each scene's predictions are assigned one-to-one to its annotated GT objects (``metrics.assign_boxes``,
    Scan2Cap's ``box_assignment``); a prediction assigned to no object it overlaps is a false positive (counted
    in ``n_unknown``; Scan2Cap ignores these)."""
    gt = _scan2cap_gt(anns)
    boxes = load_gt_boxes(boxes_src, {k.split("|")[0] for k in gt})
    objects: dict[str, list[int]] = {}
    for k in gt:
        objects.setdefault(k.split("|")[0], []).append(int(k.split("|")[1]))
    preds: dict[str, list[tuple[str, np.ndarray]]] = {}
    for scene_id, items in iter_keyed_arrays(pred, "{caption, box}"):  # a repeated scene key adds to the scene
        for line, r in items:
            caption = _text(pred, line, field(pred, line, r, "caption"), "caption")
            preds.setdefault(scene_id, []).append((caption, parse_box(pred, line, field(pred, line, r, "box"), "box")))
    cands: dict[str, str] = {}
    ious: dict[str, float] = {}
    unknown = 0
    for scene_id, scene_preds in preds.items():
        ids = objects.get(scene_id, [])
        gt_boxes = [gt_box_or_no_box(boxes, scene_id, o) for o in ids]
        assigned = metrics.assign_boxes([b for _, b in scene_preds], gt_boxes)
        hits = {i for i, iou in assigned if i is not None and iou > 0.0}
        unknown += len(scene_preds) - len(hits)
        for o, (i, iou) in zip(ids, assigned, strict=True):
            if i is not None:
                cands[f"{scene_id}|{o}"], ious[f"{scene_id}|{o}"] = scene_preds[i][0], iou
    out = captions.scan2cap_scores(gt, cands, ious, meteor=meteor)
    return {**out, "n_items": float(len(gt)), "n_predictions": float(sum(map(len, preds.values()))),
            "n_unknown": float(unknown), "n_missing": float(sum(not captions.matched(ious.get(k, 0.0)) for k in gt))}


def score_vsibench(pred: Path, anns: list[Path], boxes_src: Path, meteor: bool = True) -> dict[str, float]:
    gt: dict[str, tuple[str, str]] = {}
    for p in anns:
        for line, r in load_table(p):
            gt[str(field(p, line, r, "id"))] = (str(field(p, line, r, "question_type")), str(field(p, line, r, "ground_truth")))
    preds = _Predictions(pred, gt)
    for line, r in iter_records(pred):
        preds.add(line, str(field(pred, line, r, "id")), _text(pred, line, field(pred, line, r, "prediction"), "prediction"))
    out = metrics.vsibench_scores([t for t, _ in gt.values()],
                                  [metrics.vsibench_item_score(t, preds.get(k, ""), g) for k, (t, g) in gt.items()])
    # lmms-eval's overall is the mean over its tasks; an unknown id belongs to none, so it is a wrong extra item
    # that scales overall by n / (n + unknown) (as the QA scorers do), not a task of its own scored 0
    out["overall"] *= len(gt) / (len(gt) + preds.unknown) if gt else 0.0
    return {**out, **preds.counts()}


SCORERS: dict[str, Callable[..., dict[str, float]]] = {
    "scanrefer": score_scanrefer, "multi3drefer": score_multi3drefer, "scanqa": score_scanqa,
    "sqa3d": score_sqa3d, "scan2cap": score_scan2cap, "vsibench": score_vsibench,
}


def score_file(benchmark: str, predictions: str | Path, annotations: list[str | Path],
               boxes: str | Path = "data", meteor: bool = True, label_map: str | Path | None = None) -> dict[str, Any]:
    """Metrics of ``predictions`` for ``benchmark`` (one of :data:`BENCHMARKS`); ``label_map``: ScanNet's
    ``scannetv2-labels.combined.tsv`` for ScanRefer's 18-class unique/multiple split (scanrefer only)."""
    if benchmark not in SCORERS:
        raise ValueError(f"benchmark {benchmark!r} is not one of {BENCHMARKS}")
    kw: dict[str, Any] = {"meteor": meteor}
    if label_map:
        if benchmark != "scanrefer":
            raise ValueError(f"--label-map only changes ScanRefer's unique/multiple split; drop it for {benchmark}")
        kw["label_map"] = Path(label_map)
    return SCORERS[benchmark](Path(predictions), [Path(a) for a in annotations], Path(boxes), **kw)
