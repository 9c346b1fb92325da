"""Stage-1/2 probes on val scenes (simplified inputs): does the model read identifiers and coordinates?

Stage 1: "What is <OBJm>?" (the answer must name the object's label) and identifier grounding "Which
object is the chair?" (labels unique in the scene; the answer's last ``<OBJ###>`` must be that object).
Stage 2: nearest object (chance = 1/(n-1)) and distance MRA (mean over θ ∈ {0.50, …, 0.95} of
|pred - gt| / gt < 1 - θ) next to the trivial baseline of always answering the median train distance; and the
read-out under both, "Where is <OBJm>?" (x and y of the answer within ``WHERE_TOL`` of the object's centre) next
to always answering the median train centre.
Stage 4: the stage-1 questions on each val scene's real proxies (``real_what_is_acc``, ``real_grounding_acc``):
the answer must be found among hundreds of proxies, most of them floor and walls.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from proxy3d.model import text_tokenizer as tt
from proxy3d.model.inputs import SceneInput, TextCodec
from proxy3d.model.proxy_vlm import Proxy3DModel
from proxy3d.train.data import SceneObjects, closest_to, how_far, nearest_other, what_is, where_is, which_is

log = logging.getLogger(__name__)
THETAS = np.arange(0.50, 0.96, 0.05)
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
_OBJ = re.compile(r"<OBJ\d{3}>")
WHERE_TOL = 0.5  # metres, per floor-plane axis


@dataclass
class Probe:
    kind: str  # what | which | closest | far | where
    scene: SceneInput
    prompt: str
    label: str = ""
    targets: tuple[int, ...] = ()
    value: float = 0.0
    chance: float = 0.0
    xy: tuple[float, float] = (0.0, 0.0)  # where: the object's floor-plane centre


def stage1_probes(val: dict[str, SceneObjects], seed: int = 0, limit: int = 200) -> list[Probe]:
    rng = np.random.default_rng(seed)
    out: list[Probe] = []
    for sid in sorted(val):
        o = val[sid]
        scene = o.scene_input(rng.permutation(len(o.ids)))
        for k, (m, label) in enumerate(zip(o.ids, o.labels, strict=True)):
            if o.categories[k] < 0:  # no symbol: the label cannot be read from the scene
                continue
            out.append(Probe("what", scene, what_is(int(m), label)[0], label=label))
            if o.labels.count(label) == 1:
                out.append(Probe("which", scene, which_is(int(m), label)[0], targets=(int(o.ids[k]),)))
    return _limit(out, limit, rng)


def stage2_probes(val: dict[str, SceneObjects], seed: int = 0, limit: int = 200) -> list[Probe]:
    rng = np.random.default_rng(seed)
    out: list[Probe] = []
    for sid in sorted(val):
        o = val[sid]
        n = len(o.ids)
        if n < 2:
            continue
        scene = o.scene_input(rng.permutation(n))
        for k in range(n):
            out.append(Probe("where", scene, where_is(int(o.ids[k]), o.centers[k])[0],
                             xy=(float(o.centers[k][0]), float(o.centers[k][1]))))
            j = nearest_other(o.centers, k)
            out.append(Probe("closest", scene, closest_to(int(o.ids[k]), int(o.ids[j]))[0],
                             targets=(int(o.ids[j]),), chance=1.0 / (n - 1)))
            b = int((k + 1 + rng.integers(n - 1)) % n)
            d = float(np.linalg.norm(o.centers[k] - o.centers[b]))
            out.append(Probe("far", scene, how_far(int(o.ids[k]), int(o.ids[b]), d)[0], value=d))
    return _limit(out, limit, rng)


def real_proxy_probes(val: dict[str, SceneObjects], scene_input: Callable[[str], SceneInput | None], seed: int = 0,
                      limit: int = 200) -> list[Probe]:
    """:func:`stage1_probes` with each simplified scene replaced by the scene's real proxies (``scene_input(id)``);
    scenes without proxies are left out."""
    out = []
    for p in stage1_probes(val, seed, limit):
        real = scene_input(p.scene.scene_id)
        if real is not None:
            out.append(Probe(p.kind, real, p.prompt, p.label, p.targets))
    return out


def _limit(probes: list[Probe], limit: int, rng: np.random.Generator) -> list[Probe]:
    out = []
    for kind in sorted({p.kind for p in probes}):
        same = [p for p in probes if p.kind == kind]
        keep = sorted(rng.choice(len(same), size=min(limit, len(same)), replace=False)) if same else []
        out += [same[i] for i in keep]
    return out


def mra(pred: float, gt: float) -> float:
    if gt <= 0:
        return float(abs(pred - gt) < 1e-6)
    return float(np.mean(np.abs(pred - gt) / gt < 1 - THETAS))


@torch.no_grad()
def generate(model: Proxy3DModel, codec: TextCodec, scenes: Sequence[SceneInput], prompts: Sequence[str],
             max_new_tokens: int = 16, batch_size: int = 32) -> list[tuple[str, list[int]]]:
    """Greedy answers: (text with special tokens, identifier numbers) per prompt."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        b = codec.prompts(scenes[i : i + batch_size], prompts[i : i + batch_size])
        dev = model.device
        ids = model.generate_ids(b.input_ids.to(dev), b.attention_mask.to(dev), b.scenes, max_new_tokens,
                                 codec.eos_id, codec.pad_id)
        out += [(tt.decode(codec.tok, r), tt.object_ids_from_token_ids(r, codec.tok)) for r in ids]
    model.train(was)
    return out


def numbers(text: str) -> list[float]:
    """The numbers of an answer, identifiers left out ("<OBJ012> x 1.2 y 3.4" -> [1.2, 3.4])."""
    return [float(v) for v in _NUM.findall(_OBJ.sub(" ", text))]


def near_xy(pred: Sequence[float], xy: tuple[float, float]) -> bool:
    """The first two of ``pred`` (a "Where is" answer's x and y) within WHERE_TOL of ``xy`` on both axes."""
    return len(pred) >= 2 and abs(pred[0] - xy[0]) < WHERE_TOL and abs(pred[1] - xy[1]) < WHERE_TOL


def score(probes: Sequence[Probe], answers: Sequence[tuple[str, list[int]]], median_distance: float = 0.0,
          median_xy: tuple[float, float] = (0.0, 0.0), majority_label: str = "") -> dict[str, float]:
    """Accuracy per kind, each next to its trivial baseline: always ``majority_label`` (the most frequent train
    label) for ``what``, a random object of the scene for ``which`` and ``closest``, always the median distance
    (MRA) for ``far``, always the median centre for ``where``."""
    hits: dict[str, list[float]] = {}
    base: list[float] = []
    where_base: list[float] = []
    chance: list[float] = []
    which_chance: list[float] = []
    what_base: list[float] = []
    for p, (text, ids) in zip(probes, answers, strict=True):
        if p.kind == "what":
            ok = " ".join(_OBJ.sub(" ", text).split()).lower() == p.label.lower()
            what_base.append(float(p.label.lower() == majority_label.lower()))
        elif p.kind in ("which", "closest"):
            ok = bool(ids) and ids[-1] in p.targets
            if p.kind == "closest":
                chance.append(p.chance)
            else:
                objects = len({int(i) for i in np.asarray(p.scene.instance) if int(i) >= 0})
                which_chance.append(len(p.targets) / max(objects, 1))
        elif p.kind == "where":
            ok = near_xy(numbers(text), p.xy)
            where_base.append(float(near_xy(median_xy, p.xy)))
        else:
            nums = numbers(text)
            ok = mra(nums[-1], p.value) if nums else 0.0
            base.append(mra(median_distance, p.value))
        hits.setdefault(p.kind, []).append(float(ok))
    names = {"what": "what_is_acc", "which": "grounding_acc", "closest": "closest_acc", "far": "distance_mra",
             "where": "where_acc"}
    out = {names[k]: float(np.mean(v)) for k, v in hits.items()}
    if chance:
        out["closest_chance"] = float(np.mean(chance))
    if which_chance:
        out["grounding_chance"] = float(np.mean(which_chance))
    if what_base and majority_label:
        out["what_is_majority_baseline"] = float(np.mean(what_base))
    if base:
        out["distance_mra_median_baseline"] = float(np.mean(base))
    if where_base:
        out["where_median_baseline"] = float(np.mean(where_base))
    return out


def run_probes(model: Proxy3DModel, codec: TextCodec, stage: int, val: dict[str, SceneObjects],
               train: dict[str, SceneObjects], seed: int = 0, limit: int = 200,
               scene_input: Callable[[str], SceneInput | None] | None = None) -> dict[str, float]:
    """Probe metrics of ``stage`` (1, 2, or 4 with ``scene_input``, the real-proxy loader); {} for other stages."""
    if stage == 1:
        probes = stage1_probes(val, seed, limit)
    elif stage == 2:
        probes = stage2_probes(val, seed, limit)
    elif stage == 4 and scene_input is not None:
        probes = real_proxy_probes(val, scene_input, seed, limit)
    else:
        probes = []
    if not probes:
        return {}
    answers = generate(model, codec, [p.scene for p in probes], [p.prompt for p in probes])
    for kind in sorted({p.kind for p in probes}):
        shown = [(p.prompt, a[0]) for p, a in zip(probes, answers, strict=True) if p.kind == kind][:2]
        log.info("probe %s: %s", kind, shown)
    dists = [float(np.linalg.norm(o.centers[i] - o.centers[j])) for o in train.values()
             for i in range(len(o.ids)) for j in range(i + 1, len(o.ids))]
    centres = [o.centers[i, :2] for o in train.values() for i in range(len(o.ids))]
    mxy = tuple(float(v) for v in np.median(centres, axis=0)) if centres else (0.0, 0.0)
    labels = Counter(lab for o in train.values() for lab in o.labels)
    out = score(probes, answers, float(np.median(dists)) if dists else 0.0, mxy,
                min(labels, key=lambda lab: (-labels[lab], lab)) if labels else "")
    return {f"real_{k}": v for k, v in out.items()} if stage == 4 else out
