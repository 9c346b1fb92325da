"""Benchmark metrics, each following the public evaluation code of its benchmark.

- ScanRefer (``lib/eval_helper.py``): ``get_3d_box`` corners, 3D IoU, Acc@0.25/0.5 and the
  unique/multiple split (unique = the target's class occurs once among the scene's annotated objects; the
  18-class label via ScanNet's label table when one is given).
- Multi3DRefer (``m3drefclip/evaluation/multi3drefer_evaluator.py``): Hungarian matching of predicted and
  GT boxes on IoU (``scipy.optimize.linear_sum_assignment``; the IoU in float32 with machine epsilon in the
  union, as ``m3drefclip/util/utils.py``), F1 = 2·TP / (|pred| + |gt|) per query, zero-target queries score 1
  iff nothing is predicted; mean per ``eval_type`` and overall.
- Scan2Cap (``benchmark/eval.py``): one-to-one assignment of predicted to GT boxes per scene on GIoU
  (:func:`assign_boxes`); the caption metrics are in :mod:`proxy3d.eval.captions`.
- ScanQA / SQA3D (LEO ``data_utils.clean_answer`` and ``scanqa_eval.answer_match``): answer cleaning,
  EM and refined EM; SQA3D question type by the first word (what/is/how/can/which/others).
- VSI-Bench (lmms-eval ``tasks/vsibench/utils.py``): MRA over θ ∈ linspace(0.5, 0.95, 10) of
  ``|pred − gt| / gt ≤ 1 − θ``, multiple choice by exact match of the first word with a trailing '.'
  stripped, the three ``object_rel_direction_*`` accuracies merged, overall = mean of the task scores.

Boxes are ``(6,)`` centre + size (x, y, z), ``(8, 3)`` corners or ``(2, 3)`` [min, max] bounds; all IoUs are
axis-aligned, as in the public code for heading 0 (``get_3d_box`` permutes axes identically for both boxes, so
IoU is unchanged).
Caption metrics (pycocoevalcap) live in :mod:`proxy3d.eval.captions`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

IOU_THRESHOLDS = (0.25, 0.5)
MULTI3DREFER_TYPES = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")
ZERO_TARGET_TYPES = ("zt_w_d", "zt_wo_d")
SQA3D_TYPES = ("what", "is", "how", "can", "which", "others")
VSI_MC_TYPES = (
    "object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard",
    "object_rel_distance", "route_planning", "obj_appearance_order",
)
VSI_NUM_TYPES = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")
MRA_THRESHOLDS = np.linspace(0.5, 0.95, 10)


# ----------------------------------------------------------------------------- boxes
def get_3d_box(center: Sequence[float], size: Sequence[float]) -> np.ndarray:
    """Corners ``(8, 3)`` of the axis-aligned box with ``center (3,)`` and ``size (3,)`` (heading 0)."""
    c, s = np.asarray(center, dtype=np.float64), np.asarray(size, dtype=np.float64) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=np.float64)
    return c + signs * s


def box_bounds(box: Sequence[float] | np.ndarray) -> np.ndarray:
    """``(2, 3)`` min/max corners of a box given as ``(6,)`` centre+size, ``(8, 3)`` corners or ``(2, 3)``
    ``[min, max]`` bounds (M3DRef-CLIP's ``aabb_bound``).

    A ``(2, 3)`` box is taken as bounds only when min <= max in every column: ``[[cx, cy, cz], [dx, dy, dz]]``
    (centre and size as two rows) has the same shape, and reading it as corners would score a wrong box silently.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape == (6,):
        return np.stack([b[:3] - b[3:] / 2.0, b[:3] + b[3:] / 2.0])
    if b.shape == (8, 3):
        return np.stack([b.min(0), b.max(0)])
    if b.shape == (2, 3):
        if not (b[0] <= b[1]).all():
            raise ValueError(f"box {b.tolist()} of shape (2, 3) is not [min, max] bounds (needs min <= max in every "
                             "column); give [[xmin, ymin, zmin], [xmax, ymax, zmax]], 8 corners or "
                             "[cx, cy, cz, dx, dy, dz]")
        return b.copy()
    raise ValueError(f"box {str(b.tolist())[:80]} of shape {b.shape}: give (6,) centre+size [cx, cy, cz, dx, dy, "
                     "dz], (2, 3) bounds [[xmin, ymin, zmin], [xmax, ymax, zmax]] or (8, 3) corners")


# ScanRefer's box3d_iou (utils/box_util.py) divides by union + 1e-8: an IoU of exactly 0.25 or 0.5 falls just
# short of the threshold there
SCANREFER_IOU_EPS = 1e-8
# M3DRef-CLIP's get_batch_aabb_pair_ious (m3drefclip/util/utils.py) works in float32 and adds float32's machine
# epsilon to the union: an IoU of exactly 0.25 or 0.5 on a small box falls just short of the threshold there
MULTI3DREFER_IOU_EPS = np.finfo(np.float32).eps
# the box of a named object that has none (unknown id, object missing from the scene): a point far away, IoU 0
# with every box, so it still counts as a prediction (Multi3DRefer's F1 denominator) that matches nothing
NO_BOX = np.array([1e9, 1e9, 1e9, 0.0, 0.0, 0.0])


def box3d_iou(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, eps: float = 0.0) -> float:
    """Axis-aligned 3D IoU of two boxes (any format accepted by :func:`box_bounds`); ``eps`` is added to the
    union (:data:`SCANREFER_IOU_EPS` for ScanRefer)."""
    ba, bb = box_bounds(a), box_bounds(b)
    inter = np.prod(np.clip(np.minimum(ba[1], bb[1]) - np.maximum(ba[0], bb[0]), 0.0, None))
    vol_a, vol_b = np.prod(ba[1] - ba[0]), np.prod(bb[1] - bb[0])
    union = vol_a + vol_b - inter
    return float(inter / (union + eps)) if union > 0 else 0.0


def box3d_giou(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Axis-aligned generalized IoU: IoU - (enclosing - union) / enclosing. Scan2Cap's ``box_assignment``
    (daveredrum/Scan2Cap benchmark/box_util.py ``generalized_box3d_iou``) ranks predictions by it, so boxes that
    do not overlap still compete by how far apart they are."""
    ba, bb = box_bounds(a), box_bounds(b)
    inter = np.prod(np.clip(np.minimum(ba[1], bb[1]) - np.maximum(ba[0], bb[0]), 0.0, None))
    union = np.prod(ba[1] - ba[0]) + np.prod(bb[1] - bb[0]) - inter
    enclosing = np.prod(np.maximum(ba[1], bb[1]) - np.minimum(ba[0], bb[0]))
    if enclosing <= 0:
        return 0.0
    return float((inter / union if union > 0 else 0.0) - (enclosing - union) / enclosing)


def multi3drefer_iou(gt: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> np.float32:
    """IoU as M3DRef-CLIP computes it (``get_batch_aabb_pair_ious``): float32 bounds, ``inter / (v_gt + v_pred -
    inter + eps)`` with :data:`MULTI3DREFER_IOU_EPS`."""
    g, p = box_bounds(gt).astype(np.float32), box_bounds(pred).astype(np.float32)
    zero = np.float32(0.0)
    d = np.maximum(np.minimum(g[1], p[1]) - np.maximum(g[0], p[0]), zero)
    inter = d[0] * d[1] * d[2]
    vg, vp = (g[1] - g[0]), (p[1] - p[0])
    return inter / (vg[0] * vg[1] * vg[2] + vp[0] * vp[1] * vp[2] - inter + np.float32(MULTI3DREFER_IOU_EPS))


def assign_boxes(pred_boxes: Sequence, gt_boxes: Sequence) -> list[tuple[int | None, float]]:
    """Per GT box: ``(index of its prediction, IoU)`` from a one-to-one assignment maximising the total GIoU
    (``scipy.optimize.linear_sum_assignment``), as Scan2Cap's ``box_assignment`` (benchmark/eval.py) does per
    scene; a GT box left without a prediction (fewer predictions than GT boxes) gets ``(None, 0.0)``. (Scan2Cap
    gives such a box prediction 0 through a zero-initialised index array; we count it as missed.)"""
    out: list[tuple[int | None, float]] = [(None, 0.0)] * len(gt_boxes)
    if not len(pred_boxes) or not len(gt_boxes):
        return out
    giou = np.array([[box3d_giou(p, g) for g in gt_boxes] for p in pred_boxes], dtype=np.float64)
    for i, j in zip(*linear_sum_assignment(-giou), strict=True):
        out[j] = (int(i), box3d_iou(pred_boxes[i], gt_boxes[j]))
    return out


# ----------------------------------------------------------------------------- ScanRefer
# ScanRefer's 18 classes (``DC.type2class``): these NYU40 class names, every other one (and every raw name the
# label table lacks) is "others"
SCANREFER_CLASSES = ("cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
                     "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub")


def load_scannet_label_map(path: str | Path) -> dict[str, str]:
    """``raw_category -> nyu40class`` from ScanNet's ``scannetv2-labels.combined.tsv`` (columns 2 and 8, as
    ScanRefer's ``_get_raw2label`` reads them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label table; give ScanNet's scannetv2-labels.combined.tsv "
                                "(it ships with the ScanNet release, next to scans/)")
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows or len(rows[0]) < 8 or (rows[0][1], rows[0][7]) != ("raw_category", "nyu40class"):
        got = rows[0][:8] if rows else []
        raise ValueError(f"{path}:1: expected ScanNet's label table header with raw_category in column 2 and "
                         f"nyu40class in column 8, got {got}")
    out = {}
    for line, r in enumerate(rows[1:], start=2):
        if len(r) < 8:
            raise ValueError(f"{path}:{line}: {len(r)} tab-separated columns, need at least 8")
        out[r[1]] = r[7]
    return out


def scanrefer_class(name: str, label_map: Mapping[str, str] | None = None) -> str:
    """The class an object name counts as in the unique/multiple split: the name with '_' read as ' ', or with
    ScanNet's label table (:func:`load_scannet_label_map`) ScanRefer's 18-class label of it."""
    name = " ".join(str(name).split("_"))
    if label_map is None:
        return name
    nyu = label_map.get(name)
    return nyu if nyu in SCANREFER_CLASSES else "others"


def unique_multiple_lookup(records: Iterable[tuple[str, int, str]], label_map: Mapping[str, str] | None = None
                           ) -> dict[tuple[str, int], int]:
    """``(scene_id, object_id, object_name)`` of the annotation set -> 0 unique / 1 multiple.

    As ScanRefer's ``_get_unique_multiple_lookup``: the classes of a scene are those of its annotated objects
    (each object counted once); an object is unique when no other annotated object shares its class. The class
    is :func:`scanrefer_class`: ScanRefer's 18 classes when ScanNet's ``label_map`` is given (real data; an
    office chair is then a chair, a lamp and a backpack are both "others"), else the object name (the synthetic
    world has no ScanNet label table).
    """
    classes: dict[str, dict[int, str]] = defaultdict(dict)
    for scene_id, object_id, name in records:
        classes[scene_id].setdefault(int(object_id), scanrefer_class(name, label_map))
    out: dict[tuple[str, int], int] = {}
    for scene_id, objs in classes.items():
        counts: dict[str, int] = defaultdict(int)
        for name in objs.values():
            counts[name] += 1
        for object_id, name in objs.items():
            out[(scene_id, object_id)] = 0 if counts[name] == 1 else 1
    return out


def scanrefer_scores(ious: Sequence[float], unique_multiple: Sequence[int]) -> dict[str, float]:
    """Acc@0.25/0.5 overall and for the unique (0) / multiple (1) subsets; NaN for an empty subset."""
    iou = np.asarray(ious, dtype=np.float64)
    um = np.asarray(unique_multiple, dtype=np.int64)
    out: dict[str, float] = {}
    for t in IOU_THRESHOLDS:
        hit = iou >= t
        out[f"acc@{t}"] = float(hit.mean()) if hit.size else math.nan
        for name, flag in (("unique", 0), ("multiple", 1)):
            sel = um == flag
            out[f"{name}_acc@{t}"] = float(hit[sel].mean()) if sel.any() else math.nan
    return out


# ----------------------------------------------------------------------------- Multi3DRefer
def multi3drefer_f1(pred_boxes: Sequence, gt_boxes: Sequence) -> tuple[float, float]:
    """F1@0.25 and F1@0.5 of one query (Hungarian matching on :func:`multi3drefer_iou`); zero-target: 1 iff no
    prediction."""
    n_pred, n_gt = len(pred_boxes), len(gt_boxes)
    if n_gt == 0:
        v = 1.0 if n_pred == 0 else 0.0
        return v, v
    size = max(n_pred, n_gt)
    iou = np.zeros((size, size), dtype=np.float32)
    for i, p in enumerate(pred_boxes):
        for j, g in enumerate(gt_boxes):
            iou[i, j] = multi3drefer_iou(g, p)
    rows, cols = linear_sum_assignment(-iou)
    matched = iou[rows[:n_pred], cols[:n_pred]] if n_pred else np.zeros(0)
    return tuple(2.0 * float(np.count_nonzero(matched >= t)) / (n_pred + n_gt) for t in IOU_THRESHOLDS)  # type: ignore[return-value]


def multi3drefer_scores(f1s: Sequence[tuple[float, float]], eval_types: Sequence[str]) -> dict[str, float]:
    """Mean F1@0.25/0.5 per ``eval_type`` (NaN when absent) and overall."""
    arr = np.asarray(f1s, dtype=np.float64).reshape(-1, 2)
    types = np.asarray(list(eval_types))
    out: dict[str, float] = {}
    for k, t in enumerate(IOU_THRESHOLDS):
        for et in MULTI3DREFER_TYPES:
            sel = types == et
            out[f"{et}_f1@{t}"] = float(arr[sel, k].mean()) if sel.any() else math.nan
        out[f"f1@{t}"] = float(arr[:, k].mean()) if len(arr) else math.nan
    return out


# ----------------------------------------------------------------------------- ScanQA / SQA3D answers
_FIXES = [(r"\bletf\b", "left"), (r"\blet\b", "left"), (r"\btehre\b", "there"), (r"\brigth\b", "right"),
          (r"\brght\b", "right"), (r"\bbehine\b", "behind"), (r"\btv\b", "TV"), (r"\bchai\b", "chair"),
          (r"\bwasing\b", "washing"), (r"\bwaslked\b", "walked"), (r"\boclock\b", "o'clock"),
          (r"\bo'[ ]+clock\b", "o'clock")]
_NUMBERS = [(r"\b0\b", "zero"), (r"\bnone\b", "zero"), (r"\b1\b", "one"), (r"\b2\b", "two"), (r"\b3\b", "three"),
            (r"\b4\b", "four"), (r"\b5\b", "five"), (r"\b6\b", "six"), (r"\b7\b", "seven"), (r"\b8\b", "eight"),
            (r"\b9\b", "nine"), (r"\b10\b", "ten"), (r"\b11\b", "eleven"), (r"\b12\b", "twelve"),
            (r"\b13\b", "thirteen"), (r"\b14\b", "fourteen"), (r"\b15\b", "fifteen"), (r"\b16\b", "sixteen"),
            (r"\b17\b", "seventeen"), (r"\b18\b", "eighteen"), (r"\b19\b", "nineteen"), (r"\b20\b", "twenty"),
            (r"\b23\b", "twenty-three")]
_MISC = [(r"\b([a-zA-Z]+)([0-9])\b", r"\g<1>"), (r"\ba\b ([a-zA-Z]+)", r"\g<1>"), (r"\ban\b ([a-zA-Z]+)", r"\g<1>"),
         (r"\bthe\b ([a-zA-Z]+)", r"\g<1>"), (r"\bbackwards\b", "backward")]


def clean_answer(text: str) -> str:
    """LEO's ScanQA/SQA3D answer cleaning: lower-case, squeeze spaces, drop punctuation, typo fixes,
    numbers 0-20 (and 23) to words, drop articles and trailing digits of words (``mat2`` -> ``mat``)."""
    s = text.lower()
    s = re.sub(r"[ ]+$", "", s)
    s = re.sub(r"^[ ]+", "", s)
    s = re.sub(r" {2,}", " ", s)
    s = re.sub(r"\.[ ]{2,}", ". ", s)
    s = re.sub(r"[^a-zA-Z0-9,'\s\-:]+", "", s)
    s = re.sub("ç", "c", s)
    s = re.sub("\u2019", "'", s)
    for pattern, repl in (*_FIXES, *_NUMBERS, *_MISC):
        s = re.sub(pattern, repl, s)
    return s


def answer_match(pred: str, gts: Sequence[str]) -> tuple[int, int]:
    """(EM, refined EM) of a cleaned prediction against cleaned answers (LEO ``answer_match``).

    Refined EM also accepts a prediction contained in an answer or containing one (spaces ignored).

    Deliberate deviation: an empty prediction (also one that :func:`clean_answer` empties, such as "..." or "?!")
    scores (0, 0). LEO (embodied-generalist evaluator/scanqa_eval.py ``answer_match``) has no such guard, and
    since the empty string is contained in every answer it would give a model that says nothing full refined EM.
    """
    if len(pred) == 0:
        return 0, 0
    if pred in gts:
        return 1, 1
    p = "".join(pred.split())
    for gt in gts:
        g = "".join(gt.split())
        if p in g or g in p:
            return 0, 1
    return 0, 0


def qa_em_items(preds: Sequence[str], answers: Sequence[Sequence[str]]) -> np.ndarray:
    """(n, 2) per question: EM and refined EM after :func:`clean_answer` on both sides."""
    pairs = [answer_match(clean_answer(p), [clean_answer(a) for a in gts]) for p, gts in zip(preds, answers, strict=True)]
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 2)


def qa_em_scores(preds: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """EM and refined EM (means over questions) after :func:`clean_answer` on both sides."""
    arr = qa_em_items(preds, answers)
    return {"em": float(arr[:, 0].mean()) if len(arr) else math.nan,
            "refined_em": float(arr[:, 1].mean()) if len(arr) else math.nan}


def sqa3d_question_type(question: str) -> str:
    """SQA3D question type by its first characters, as LEO's ``get_sqa_question_type``."""
    q = question.lstrip().lower()
    for name in ("what", "is", "how", "can", "which"):
        if q[: len(name)] == name:
            return name
    return "others"


def sqa3d_scores(preds: Sequence[str], answers: Sequence[Sequence[str]], questions: Sequence[str]) -> dict[str, float]:
    """EM (and refined EM) overall and per question type (NaN for an absent type)."""
    types = [sqa3d_question_type(q) for q in questions]
    out = qa_em_scores(preds, answers)
    for t in SQA3D_TYPES:
        idx = [i for i, ty in enumerate(types) if ty == t]
        sub = qa_em_scores([preds[i] for i in idx], [answers[i] for i in idx]) if idx else {"em": math.nan}
        out[f"em_{t}"] = sub["em"]
    return out


# ----------------------------------------------------------------------------- VSI-Bench
def fuzzy_matching(pred: str) -> str:
    """First word of the answer with a trailing '.' stripped (lmms-eval ``fuzzy_matching``)."""
    return pred.split(" ")[0].rstrip(".").strip()


def to_float(text: object) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def mean_relative_accuracy(pred: float, gt: float) -> float:
    """Mean over θ ∈ linspace(0.5, 0.95, 10) of ``|pred − gt| / gt ≤ 1 − θ`` (inclusive).

    gt = 0 guard (lmms-eval would divide by zero): relative error 0 when pred == 0, else infinite."""
    if gt == 0:
        rel = 0.0 if pred == 0 else math.inf
    else:
        rel = abs(pred - gt) / abs(gt)
    return float((rel <= 1.0 - MRA_THRESHOLDS).mean())


def vsibench_item_score(question_type: str, prediction: str, ground_truth: str,
                        numeric_types: Collection[str] = VSI_NUM_TYPES) -> float:
    """Score of one VSI-Bench item: exact-match accuracy (multiple choice) or MRA (numeric); unparsable = 0."""
    answer = fuzzy_matching(prediction)
    if question_type in numeric_types:
        p, g = to_float(answer), to_float(ground_truth)
        return 0.0 if p is None or g is None else mean_relative_accuracy(p, g)
    return 1.0 if answer.lower() == str(ground_truth).lower() else 0.0


def vsibench_scores(question_types: Sequence[str], scores: Sequence[float],
                    numeric_types: Collection[str] = VSI_NUM_TYPES) -> dict[str, float]:
    """Per task mean (``<type>_accuracy`` or ``<type>_MRA``), rel-direction merged, ``overall`` = mean of tasks."""
    by_type: dict[str, list[float]] = defaultdict(list)
    for t, s in zip(question_types, scores, strict=True):
        by_type[t].append(float(s))
    means = {t: np.array([np.mean(v)]) for t, v in by_type.items()}
    return {k: float(v[0]) for k, v in vsibench_aggregate(means, numeric_types).items()} if means else {"overall": math.nan}


def vsibench_aggregate(means: Mapping[str, np.ndarray], numeric_types: Collection[str] = VSI_NUM_TYPES
                       ) -> dict[str, np.ndarray]:
    """Per-type mean scores (type -> (R,) array, e.g. R bootstrap resamples) -> ``<type>_accuracy`` /
    ``<type>_MRA``, the three rel-direction difficulties merged into one, ``overall`` = mean of the tasks."""
    out: dict[str, np.ndarray] = {}
    for t in sorted(means):
        suffix = "MRA" if t in numeric_types else "accuracy"
        out[f"{t}_{suffix}"] = np.asarray(means[t], dtype=np.float64)
    rel = [out.pop(f"object_rel_direction_{d}_accuracy") for d in ("easy", "medium", "hard")
           if f"object_rel_direction_{d}_accuracy" in out]
    if rel:
        out["object_rel_direction_accuracy"] = np.mean(rel, axis=0)
    if out:
        out["overall"] = np.mean(list(out.values()), axis=0)
    return out
