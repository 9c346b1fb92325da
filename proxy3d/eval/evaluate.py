"""The evaluate stage's logic: run the stage-4 model and its baselines on the val split, score every task.

The model is reached through one narrow function, :data:`GenerateFn` (``items, scenes, max_new_tokens ->
texts``), built by :func:`model_generate_fn` from ``proxy3d.model.api``; everything else (scene inputs per
variant, batching, scoring) is independent of the model, so tests drive it with any function.

Variants (one row each in the report): the model on ``semantic`` proxies at each budget, the model on other
tokenizer methods at the default budget (``global_kmeans`` = the paper's ablation), ``blind`` (a model trained and
run with no visual tokens: stage 4 of the same curriculum on empty scenes, ``blind_generate``), ``random_object``
(a uniformly random object of the scene; grounding only) and ``frequency`` (VSI-Bench's "chance level
(frequency)": per question type the train split's most frequent answer, its median for numeric VSI-Bench
questions; question answering and VSI-Bench only).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from proxy3d.config import BOX_SOURCES
from proxy3d.eval.metrics import to_float
from proxy3d.eval.records import Boxes
from proxy3d.eval.tasks import GROUNDING_TASKS, question_type, score_pairs

log = logging.getLogger(__name__)

GenerateFn = Callable[[list[dict], list[Any], int], list[str]]
HEADLINE = {"scanrefer": "acc@0.25", "multi3drefer": "f1@0.25", "scan2cap": "cider@0.5", "scanqa": "cider",
            "sqa3d": "em", "vsibench": "overall", "mmscan": "em", "alignment": "em"}


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str = "model"  # model | random_object | frequency
    method: str = "semantic"
    budget: int = 700
    blind: bool = False


def build_variants(budgets: Sequence[int], baselines: Sequence[str], method: str, budget: int) -> list[Variant]:
    """Model at every budget with ``method``, then the baselines (blind, random_object, other tokenizer methods)."""
    from proxy3d.tokenizer.tokenizer import METHODS

    out = [Variant(f"{method}@{b}", method=method, budget=int(b)) for b in sorted({int(budget), *map(int, budgets)})]
    for name in baselines:
        if name == "blind":
            out.append(Variant("blind", blind=True, budget=0))
        elif name in ("random_object", "frequency"):
            out.append(Variant(name, kind=name, budget=0))
        elif name in METHODS:
            out.append(Variant(f"{name}@{budget}", method=name, budget=int(budget)))
        else:
            raise ValueError(f"evaluate.baselines: unknown baseline {name!r}; choose blind, random_object, frequency "
                             f"or a tokenizer method ({', '.join(METHODS)})")
    return list({v.name: v for v in out}.values())


class SceneInputs:
    """Visual tokens per (variant, scene): the proxies stage's output for the default method/budget, else the
    proxy tokenizer run on the scene's triplets with the variant's method and budget; and the boxes the
    identifiers of those proxies name (:meth:`pred_boxes`)."""

    def __init__(self, proxies_dir: Path, triplets_dir: Path, proxies_params: Any) -> None:
        self.proxies_dir, self.triplets_dir, self.pp = Path(proxies_dir), Path(triplets_dir), proxies_params
        self._members: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._boxes: dict[tuple[str, int, str], dict[int, tuple[str, np.ndarray]]] = {}

    def get(self, v: Variant, scene_id: str) -> Any:
        from proxy3d.model.inputs import SceneInput

        if v.blind:
            return SceneInput.empty(scene_id)
        p = self._proxies(v, scene_id)
        self._members[(v.method, v.budget, scene_id)] = (p.members, p.instance)
        return SceneInput.from_proxies(p)

    def pred_boxes(self, v: Variant, scene_ids: Sequence[str]) -> Boxes:
        """The boxes ``v``'s identifiers name (:func:`proxy3d.tokenizer.pooling.object_boxes` of the proxies'
        ``members`` and ``instance``), per scene: from ``v``'s own proxies for a model variant, from the default
        method/budget's proxies for the blind, random-object and frequency baselines (they see no proxies; the
        identifier they name is the scene's object as the default tokenizer cut it). Computed once per proxies."""
        from proxy3d.tokenizer.pooling import object_boxes
        from proxy3d.types import load_triplet_points

        if v.blind or v.kind != "model":
            v = Variant(f"{self.pp.method}@{self.pp.budget}", method=self.pp.method, budget=int(self.pp.budget))
        out: Boxes = {}
        for sid in scene_ids:
            key = (v.method, v.budget, sid)
            if key not in self._boxes:
                if key not in self._members:
                    self.get(v, sid)
                members, instance = self._members[key]
                if members is None:
                    raise ValueError(f"proxies of scene {sid!r} ({v.name}) have no 'members' tensor (written by an "
                                     "old version), so their identifiers have no boxes: re-run `dvc repro proxies`, "
                                     "or set evaluate.box_source: gt")
                points = load_triplet_points(self.triplets_dir / f"{sid}.safetensors")
                if points.shape[0] != members.shape[0]:
                    raise ValueError(f"scene {sid!r}: {self.triplets_dir / f'{sid}.safetensors'} has "
                                     f"{points.shape[0]} patches but its {v.name} proxies map {members.shape[0]}: "
                                     "the proxies are from other triplets; re-run `dvc repro proxies`")
                self._boxes[key] = {m: ("", box) for m, box in object_boxes(members, instance, points).items()}
            out[sid] = self._boxes[key]
        return out

    def _proxies(self, v: Variant, scene_id: str) -> Any:
        from proxy3d.types import load_proxies, load_triplets

        cached = self.proxies_dir / f"{scene_id}.safetensors"
        if v.method == self.pp.method and v.budget == self.pp.budget and cached.exists():
            p = load_proxies(cached)
            # the proxies stage's file is only this variant if it was made with this method and budget: evaluated
            # alone with another proxies.budget, a "semantic@450" row had read the 700-token file (a file that does
            # not say how it was made is taken as it is)
            if p.meta.get("method", v.method) == v.method and p.meta.get("budget", v.budget) == v.budget:
                return p
            log.info("%s: %s was made with %s@%s, not %s: tokenizing the triplets", scene_id, cached,
                     p.meta.get("method"), p.meta.get("budget"), v.name)
        from proxy3d.tokenizer.tokenizer import ProxyTokenizer

        tok = ProxyTokenizer.from_params(self.pp, method=v.method, budget=v.budget)
        return tok.tokenize(load_triplets(self.triplets_dir / f"{scene_id}.safetensors"))


def model_generate_fn(ckpt_dir: Path, device: str, batch_size: int = 16) -> GenerateFn:
    """The one place the model is called: ``proxy3d.model.api.load_bundle(...).generate`` (batched greedy);
    ``scenes`` holds one ``SceneInput`` per item."""
    from proxy3d.model.api import load_bundle

    bundle = load_bundle(ckpt_dir, device, batch_size=batch_size)

    def generate(items: list[dict], scenes: list[Any], max_new_tokens: int) -> list[str]:
        return list(bundle.generate(items, scenes, max_new_tokens))

    return generate


def select_items(items: Sequence[dict], max_per_task: int, seed: int) -> list[dict]:
    """At most ``max_per_task`` items of each task (a seeded sample; 0 = all), in input order."""
    if max_per_task <= 0:
        return list(items)
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_task.setdefault(str(it["task"]), []).append(i)
    keep: set[int] = set()
    for idx in by_task.values():
        keep.update(idx if len(idx) <= max_per_task else rng.choice(idx, max_per_task, replace=False).tolist())
    return [it for i, it in enumerate(items) if i in keep]


def generate_all(generate: GenerateFn, items: Sequence[dict], scenes: dict[str, Any], batch_size: int,
                 max_new_tokens: int, desc: str = "generate") -> list[str]:
    """Texts for ``items`` in their order, generated in batches of items sorted by scene."""
    order = sorted(range(len(items)), key=lambda i: (str(items[i]["scene_id"]), i))
    out = [""] * len(items)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        idx = order[start : start + batch_size]
        texts = generate([items[i] for i in idx], [scenes[items[i]["scene_id"]] for i in idx], max_new_tokens)
        if len(texts) != len(idx):
            raise RuntimeError(f"generate returned {len(texts)} texts for a batch of {len(idx)} items")
        for i, t in zip(idx, texts, strict=True):
            out[i] = str(t)
    return out


def random_object_predictions(items: Sequence[dict], boxes: Boxes, seed: int) -> list[str]:
    """One uniformly random object of the item's scene, as ``<OBJxxx>``."""
    rng = np.random.default_rng(seed)
    out = []
    for it in items:
        ids = sorted(boxes.get(str(it["scene_id"]), {}))
        out.append(f"<OBJ{int(rng.choice(ids)):03d}>" if ids else "")
    return out


# tasks the frequency baseline answers: one short answer per question (grounding needs an object, captions a scene)
FREQUENCY_TASKS = ("qa", "situated_qa", "spatial_mc", "spatial_num", "attribute")


def frequency_predictions(items: Sequence[dict], train: Sequence[dict]) -> list[str]:
    """Per item, the answer ``train`` gives most often to its (task, question_type) — the median for numeric
    VSI-Bench questions (``spatial_num``) — falling back to the task's; ties go to the smallest answer."""
    answers: dict[tuple[str, str], list[str]] = {}
    for it in train:
        a = it.get("answers")
        if a is not None and len(a):
            for key in ((str(it["task"]), question_type(it)), (str(it["task"]), "")):
                answers.setdefault(key, []).append(str(a[0]))

    def prior(key: tuple[str, str]) -> str:
        vals = answers.get(key) or answers.get((key[0], "")) or []
        if key[0] == "spatial_num":
            nums = [x for x in map(to_float, vals) if x is not None and math.isfinite(x)]
            return f"{float(np.median(nums)):g}" if nums else ""
        counts = Counter(vals)
        return min(counts, key=lambda v: (-counts[v], v)) if counts else ""

    return [prior((str(it["task"]), question_type(it))) if it["task"] in FREQUENCY_TASKS else ""
            for it in items]


def evaluate(items: Sequence[dict], boxes: Boxes, variants: Sequence[Variant], generate: GenerateFn | None,
             scenes: SceneInputs | None, batch_size: int, max_new_tokens: int, seed: int = 0,
             meteor: bool = True, train_items: Sequence[dict] = (),
             blind_generate: GenerateFn | None = None, box_source: str = "gt"
             ) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Scores per variant ``{name: {tokens, method, budget, benchmarks: {bench: metrics}}}`` and the texts;
    ``train_items`` (the train split's rows) feed the ``frequency`` baseline; ``blind_generate`` (the blind-trained
    model) answers the ``blind`` variant, else ``generate`` does with no visual tokens. ``box_source``: what a
    generated ``<OBJxxx>`` is scored as — ``gt``, object xxx's GT box; ``proxies``, the box of the proxies carrying
    identifier xxx (:meth:`SceneInputs.pred_boxes`; needs ``scenes``)."""
    if box_source not in BOX_SOURCES:
        raise ValueError(f"evaluate.box_source: {box_source!r} is not one of {BOX_SOURCES}")
    if box_source == "proxies" and scenes is None:
        raise ValueError("evaluate.box_source 'proxies' needs the scene inputs (proxies and triplets) to box identifiers")
    results: dict[str, Any] = {}
    texts: dict[str, list[str]] = {}
    scene_ids = sorted({str(it["scene_id"]) for it in items})

    def named(v: Variant) -> Boxes | None:  # after scenes.get(v, ...): its proxies are cached then
        return scenes.pred_boxes(v, scene_ids) if box_source == "proxies" and scenes is not None else None

    for v in variants:
        if v.kind == "random_object":
            preds, tokens = random_object_predictions(items, boxes, seed), 0.0
            bench = score_pairs(items, preds, boxes, meteor=meteor, tasks=GROUNDING_TASKS, pred_boxes=named(v))
        elif v.kind == "frequency":
            if not train_items:
                raise ValueError("the frequency baseline needs the train split's rows (train_items)")
            preds, tokens = frequency_predictions(items, train_items), 0.0
            bench = score_pairs(items, preds, boxes, meteor=meteor, tasks=FREQUENCY_TASKS)
        else:
            if generate is None or scenes is None:
                raise ValueError(f"variant {v.name!r} needs the model (generate) and scene inputs")
            inputs = {sid: scenes.get(v, sid) for sid in tqdm(scene_ids, desc=f"{v.name} scenes", leave=False)}
            tokens = float(np.mean([len(x) for x in inputs.values()])) if inputs else 0.0
            gen = blind_generate if v.blind and blind_generate is not None else generate
            preds = generate_all(gen, items, inputs, batch_size, max_new_tokens, desc=v.name)
            bench = score_pairs(items, preds, boxes, meteor=meteor, pred_boxes=named(v))
        log.info("%s: %s", v.name, {b: round(m.get(HEADLINE.get(b, ""), math.nan), 4) for b, m in bench.items()})
        results[v.name] = {"tokens": tokens, "method": v.method if v.kind == "model" and not v.blind else v.name,
                           "budget": v.budget, "benchmarks": bench}
        texts[v.name] = preds
    return results, texts


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``<variant>.<benchmark>.<metric>`` -> value (finite values only), for MLflow."""
    out: dict[str, float] = {}
    for name, r in results.items():
        out[f"{name}.tokens"] = float(r["tokens"])
        for bench, ms in r["benchmarks"].items():
            for k, val in ms.items():
                if isinstance(val, (int, float)) and math.isfinite(val):
                    out[f"{name}.{bench}.{k}".replace("@", "_at_")] = float(val)
    return out


# the numeric kinds of ``train.data.spatial_pool`` -> VSI-Bench question types (scored with MRA)
PROBE_TYPES = {"counting": "object_counting", "abs_distance": "object_abs_distance", "size": "object_size_estimation",
               "room_size": "room_size_estimation"}


def spatial_probe_items(objects: dict[str, Any], per_kind: int, seed: int) -> list[dict]:
    """Templated VSI-Bench numeric questions about the val scenes' objects (``objects``: scene id ->
    ``train.data.SceneObjects``): up to ``per_kind`` of each kind per scene (a seeded sample), as SpaceSpan-shaped
    rows (task ``spatial_num``, the VSI-Bench ``question_type``, one answer). The question texts and answers come
    from the annotation writer's own templates and geometry (``train.data.spatial_pool``), so they are the
    synthetic VSI-Bench items over every object instead of a few per scene."""
    from proxy3d.train.data import spatial_pool

    out: list[dict] = []
    for i, sid in enumerate(sorted(objects)):
        rng = np.random.default_rng([seed, i])
        pool = spatial_pool(objects[sid], 0, rng)
        for kind, qtype in PROBE_TYPES.items():
            qs = pool[kind]
            pick = sorted(rng.choice(len(qs), size=min(per_kind, len(qs)), replace=False)) if qs else []
            out += [{"id": f"probe/{sid}/{kind}/{j}", "task": "spatial_num", "question_type": qtype, "scene_id": sid,
                     "question": qs[j][0], "situation": None, "options": None, "answers": [qs[j][2]]} for j in pick]
    return out
