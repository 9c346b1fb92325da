"""Training data of the four curriculum stages.

Inputs: SpaceSpan Parquet ``<spacespan>/records/curriculum_stage=<n>/split=<s>/*.parquet`` (DESIGN §6) and the
object table ``<spacespan>/objects.parquet``; stage 4 also reads ``<proxies>/<scene>.safetensors``.
Stages 1-3 use *simplified scenes* built from the object table (one fused identifier+symbol token per
object at its centre); stage 4 uses real proxies.

Stages 1 and 2 also generate templated questions from the object table, with answers that restate the
query (``"chair <OBJ036>"``), many questions per scene and, in stage 1, a scene-size warm-up (1 -> 40
objects) with random identifiers — what made a from-scratch tiny model learn (RECIPES.md).

Batches are a pure function of (seed, stage, step, rank): resuming at step s needs no sampler state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from proxy3d.io import spacespan_partition
from proxy3d.model.inputs import Example, SceneInput, prompt_text
from proxy3d.model.text_tokenizer import parse_object_ids
from proxy3d.scenes.annotations.geometry import aabb_distance, side, size_cm
from proxy3d.scenes.annotations.vsibench import (
    ROOM_SIZE_QUESTION,
    abs_distance_question,
    counting_question,
    mc_options,
    rel_direction_question,
    rel_distance_question,
    size_question,
)
from proxy3d.tokenizer.allocation import allocate
from proxy3d.vocab import NUM_IDENTIFIERS, categories
from proxy3d.vocab import identifier_token as obj

log = logging.getLogger(__name__)
# stage-1 scene-size warm-up, as fractions of the stage's steps: one object until ONE_OBJECT_UNTIL (the model
# learns to read a token's category, ~300 steps at batch 16), 2..6 objects until SMALL_UNTIL (it learns to match
# the asked identifier; started at 3+ objects it stayed at chance), then growing to max_objects by GROWN_AT.
# SpaceSpan's whole-scene rows join at SMALL_UNTIL.
ONE_OBJECT_UNTIL, SMALL_UNTIL, GROWN_AT = 0.3, 0.6, 0.85
POINTER_NEAREST = 0.5  # stage 2's pointer phase: share of turns that are nearest-object ones before the usual mix
OBJECT_COLUMNS = ["scene_id", "object_id", "label", "category", "center_x", "center_y", "center_z",
                  "size_x", "size_y", "size_z", "split"]


@dataclass
class SceneObjects:
    """Objects of one scene: ids (n,), labels, categories (n,), centers (n, 3), sizes (n, 3)."""

    scene_id: str
    ids: np.ndarray
    labels: list[str]
    categories: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray

    def scene_input(self, order: np.ndarray | None = None, ids: np.ndarray | None = None) -> SceneInput:
        o = np.arange(len(self.ids)) if order is None else order
        return SceneInput.from_objects((self.ids if ids is None else ids)[o], self.categories[o], self.centers[o],
                                       self.scene_id)


def spread_scene(scene: SceneInput, sizes: np.ndarray, tokens: int, rng: np.random.Generator) -> SceneInput:
    """A simplified scene with ``tokens`` visual tokens: each object's fused token repeated in proportion to its
    box's surface area (at least once, ``allocation.allocate``), at points drawn uniformly on that surface.

    Real proxies come in these proportions (a 700-proxy val scene: floor 261, each wall 40-85, a couch 40, a
    clock or a cup 1). Trained only on one token per object, a model that found "the clock" among 40 tokens 95%
    of the time found it among real proxies 55% of the time: the many floor and wall tokens outweigh one match.
    ``tokens`` <= the object count returns ``scene`` unchanged. sizes: (n, 3) metres, in ``scene``'s order.
    """
    n = len(scene)
    if tokens <= n:
        return scene
    sizes = np.maximum(np.asarray(sizes, dtype=np.float64).reshape(n, 3), 1e-3)
    faces = np.stack([sizes[:, 1] * sizes[:, 2], sizes[:, 0] * sizes[:, 2], sizes[:, 0] * sizes[:, 1]], 1)  # per axis
    area = 2 * faces.sum(1)
    k = allocate(np.maximum(np.round(area * 1e4), 1).astype(np.int64), tokens, 1)  # cm^2, so sizes are ints
    obj = np.repeat(np.arange(n), k)
    centre, half = scene.centers[obj].astype(np.float64), sizes[obj] / 2
    pts = centre + rng.uniform(-1.0, 1.0, size=(obj.size, 3)) * half
    p_axis = faces[obj] / faces[obj].sum(1, keepdims=True)  # the face a point lies on: chosen by face area
    axis = (rng.random(obj.size)[:, None] > np.cumsum(p_axis, 1)).sum(1).clip(max=2)
    side = np.where(rng.random(obj.size) < 0.5, -1.0, 1.0)
    rows = np.arange(obj.size)
    pts[rows, axis] = centre[rows, axis] + side * half[rows, axis]
    order = rng.permutation(obj.size)
    return SceneInput(pts[order].astype(np.float32), scene.instance[obj][order], scene.category[obj][order], None,
                      scene.scene_id)


def load_objects(path: Path) -> dict[str, dict[str, SceneObjects]]:
    """``objects.parquet`` -> {split: {scene_id: SceneObjects}}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: object table missing; run `proxy3d spacespan` (dvc stage spacespan)")
    df = pd.read_parquet(path)
    missing = [c for c in OBJECT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing (have {list(df.columns)}); the spacespan stage writes them")
    unnamed = df["object_id"] >= NUM_IDENTIFIERS
    if unnamed.any():  # no <OBJm> token to ask or answer with: out of the templated curriculum and the probes
        log.warning("%s: %d objects in %d scenes have ids past <OBJ%03d> and are left out of the templated questions "
                    "(their proxies still carry their category)", path, int(unnamed.sum()),
                    df.loc[unnamed, "scene_id"].nunique(), NUM_IDENTIFIERS - 1)
        df = df[~unnamed]
    out: dict[str, dict[str, SceneObjects]] = {}
    for (split, sid), g in df.sort_values(["scene_id", "object_id"]).groupby(["split", "scene_id"], sort=True):
        out.setdefault(str(split), {})[str(sid)] = SceneObjects(
            str(sid), g["object_id"].to_numpy(np.int64), [str(x) for x in g["label"]],
            g["category"].to_numpy(np.int64), g[["center_x", "center_y", "center_z"]].to_numpy(np.float64),
            g[["size_x", "size_y", "size_z"]].to_numpy(np.float64))
    return out


def load_rows(spacespan_dir: Path, stage: int, split: str, required: bool | None = None) -> pd.DataFrame:
    """SpaceSpan rows of one curriculum stage and split, sorted by id.

    A missing partition folder raises FileNotFoundError (naming it and the fix) when ``required``; by default
    the train split of stages 3 and 4 is required (they learn only from SpaceSpan rows), while stage 1/2 rows
    and val splits are optional (stages 1/2 also generate templated questions): a warning, an empty frame.
    """
    folder = spacespan_partition(spacespan_dir, stage, split)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        if required if required is not None else (split == "train" and stage >= 3):
            raise FileNotFoundError(
                f"{folder}: no SpaceSpan rows for curriculum stage {stage}, split {split!r}; run `proxy3d spacespan` "
                f"(or `dvc repro spacespan`) to rebuild {spacespan_dir}, or pass the right --spacespan folder")
        log.warning("no SpaceSpan rows in %s (curriculum stage %d, split %s): none used", folder, stage, split)
        return pd.DataFrame()
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return df.sort_values("id", kind="stable").reset_index(drop=True) if "id" in df.columns else df


GROUNDING_TASKS = ("grounding", "multi_grounding")


def row_turn(row: pd.Series, objects: SceneObjects | None = None) -> tuple[str, str]:
    """(prompt, first answer) of a SpaceSpan row.

    With the row's scene ``objects``, a grounding answer restates the target's label before its identifiers
    (``"<OBJ010>"`` -> ``"couch <OBJ010>"``), the form stage 1 teaches: the lookup by name happens at the label
    token. Trained on bare identifiers, the stage-4 model answered every description with one constant
    identifier. Evaluation reads the identifiers wherever they are in the answer.
    """
    answers = row.get("answers")
    answer = str(answers[0]) if answers is not None and len(answers) else ""
    targets = row.get("target_object_ids")
    if (objects is not None and row.get("task") in GROUNDING_TASKS and targets is not None and len(targets)
            and parse_object_ids(answer)):
        where = np.flatnonzero(objects.ids == int(targets[0]))
        if len(where):
            answer = f"{objects.labels[int(where[0])]} {answer}"
    return prompt_text(str(row["question"]), row.get("situation"), row.get("options")), answer


def _fmt(v: float) -> str:
    return f"{v:.1f}"


# ---- templated questions -------------------------------------------------------------------------------------
def what_is(m: int, label: str) -> tuple[str, str]:
    return prompt_text(f"What is {obj(m)}?"), f"{obj(m)} {label}"


def which_is(m: int, label: str) -> tuple[str, str]:
    return prompt_text(f"Which object is the {label}?"), f"{label} {obj(m)}"


def where_is(m: int, c: np.ndarray) -> tuple[str, str]:
    # SpaceSpan's own stage-2 rows answer the same question as "<OBJ012> (1.23, 0.45, 0.80)" (spacespan.
    # coord_precision = 2); with a second format ("x 1.2 y 0.5 z 0.8") the model mixed the two and carried
    # coordinate lists into its distance answers ("<OBJ000> <OBJ019> 4.46, 0.48)")
    return prompt_text(f"Where is {obj(m)}?"), f"{obj(m)} ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f})"


def closest_to(a: int, b: int) -> tuple[str, str]:
    # "<OBJa> <OBJb>": the token that predicts the answer is the asked identifier, which carries its object's
    # position (model.direct_position). Through "<OBJa> closest <OBJb>" the stage-2 pointer stayed at chance
    # (bench/nearest.py: 8.6% vs 9.1%, against 20.7% with this answer)
    return prompt_text(f"Which object is closest to {obj(a)}?"), f"{obj(a)} {obj(b)}"


def how_far(a: int, b: int, d: float) -> tuple[str, str]:
    return prompt_text(f"How far is {obj(a)} from {obj(b)}?"), f"{obj(a)} {obj(b)} {_fmt(d)}"


def size_of(m: int, s: np.ndarray) -> tuple[str, str]:
    return prompt_text(f"How big is {obj(m)}?"), f"{obj(m)} {_fmt(s[0])} {_fmt(s[1])} {_fmt(s[2])}"


# referring expressions: the target first, an anchor after it (as in ScanRefer, where the described object opens
# the description); stage 1 only asks "Which object is the chair?", whose one noun comes last, and the stage-4
# model then named the last noun of every description, i.e. the anchor
REFER_TEMPLATES = ("this is a {t}. it is next to the {a}.", "the {t} is next to the {a}.",
                   "find the {t} near the {a}.", "there is a {t} close to the {a}.")


def refer(m: int, label: str, anchor: str, template: int) -> tuple[str, str]:
    return prompt_text(REFER_TEMPLATES[template % len(REFER_TEMPLATES)].format(t=label, a=anchor)), f"{label} {obj(m)}"


# VSI-Bench's questions, answered from the object table the way the benchmark's annotations are
# (proxy3d.scenes.annotations.vsibench): with 86 numeric VSI rows among ~1,300 stage-4 rows the model answered
# every numeric question like a distance in metres ("1.2" to a room size of 26.6 m^2 or a 177 cm bed), and every
# multiple-choice one with an object instead of a letter. Appearance order needs the video, not the table.
SPATIAL_KINDS = ("counting", "abs_distance", "size", "room_size", "rel_distance", "rel_direction")
NOT_ASKED = ("wall", "floor", "ceiling")
Question = tuple[str, list[str] | None, str]  # question, options (multiple choice) or None, answer


def rel_distance_item(o: SceneObjects, target: int, candidates: list[int]) -> Question | None:
    """Which of ``candidates`` (object indices) is closest to ``target`` (closest points); None on a tie."""
    dists = [round(aabb_distance(_aabb(o, target), _aabb(o, c)), 6) for c in candidates]
    if dists.count(min(dists)) != 1:
        return None
    labels = [o.labels[c] for c in candidates]
    opts, gt = mc_options(labels, dists.index(min(dists)))
    return rel_distance_question(o.labels[target], labels), opts, gt


def rel_direction_item(o: SceneObjects, standing: int, facing: int, target: int) -> Question:
    """Is ``target`` left or right of someone at ``standing`` facing ``facing`` (object indices)."""
    answer = side(o.centers[standing], o.centers[facing], o.centers[target])
    opts, gt = mc_options(["left", "right"], 0 if answer == "left" else 1)
    return rel_direction_question(o.labels[standing], o.labels[facing], o.labels[target]), opts, gt


def _aabb(o: SceneObjects, k: int) -> np.ndarray:
    return np.concatenate([o.centers[k], o.sizes[k]])


def spatial_turns(o: SceneObjects, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Up to ``n`` templated VSI-Bench questions about ``o`` (each kind equally likely, none repeated) from
    :func:`spatial_pool`."""
    pool = spatial_pool(o, n, rng)
    turns: list[tuple[str, str]] = []
    for _ in range(n):
        kinds = [k for k in SPATIAL_KINDS if pool[k]]
        if not kinds:
            break
        items = pool[kinds[int(rng.integers(len(kinds)))]]
        q, opts, a = items.pop(int(rng.integers(len(items))))
        turns.append((prompt_text(q, None, opts), a))
    return turns


def spatial_pool(o: SceneObjects, n: int, rng: np.random.Generator) -> dict[str, list[Question]]:
    """Every templated VSI-Bench question about ``o`` by kind (``SPATIAL_KINDS``): object counting (labels with >= 2
    objects), absolute distance between the closest points of two uniquely labelled objects, the longest side of a
    uniquely labelled object in cm, the room's floor area, and ``n`` random multiple-choice relative distance
    (which of 4 is closest) and relative direction (left or right) items."""
    asked = [k for k, lab in enumerate(o.labels) if lab not in NOT_ASKED]
    counts = pd.Series([o.labels[k] for k in asked], dtype=object).value_counts()
    unique = [k for k in asked if counts[o.labels[k]] == 1]
    pool: dict[str, list[Question]] = {
        "counting": [(counting_question(lab), None, str(int(c))) for lab, c in sorted(counts.items()) if c >= 2],
        "size": [(size_question(o.labels[k]), None, str(size_cm(o.sizes[k]))) for k in unique],
        "abs_distance": [(abs_distance_question(o.labels[a], o.labels[b]), None,
                          f"{aabb_distance(_aabb(o, a), _aabb(o, b)):.1f}") for i, a in enumerate(unique)
                         for b in unique[i + 1:]],
        "room_size": [(ROOM_SIZE_QUESTION, None, f"{float(o.sizes[k][0] * o.sizes[k][1]):.1f}")
                      for k in range(len(o.labels)) if o.labels[k] == "floor"][:1],
        "rel_distance": [],
        "rel_direction": [],
    }
    # up to n random multiple-choice items of each kind (a target and 4 candidates; standing, facing, target)
    for _ in range(n if len(unique) >= 5 else 0):
        pick = [unique[i] for i in rng.permutation(len(unique))[:5]]
        q = rel_distance_item(o, pick[0], pick[1:])
        if q is not None:
            pool["rel_distance"].append(q)
    for _ in range(n if len(unique) >= 3 else 0):
        pool["rel_direction"].append(rel_direction_item(o, *(unique[i] for i in rng.permutation(len(unique))[:3])))
    return pool


def augment_scene(o: SceneObjects, rng: np.random.Generator) -> SceneObjects:
    """``o`` moved rigidly in the floor plane — rotated about z by a random angle around its objects' mean (x, y),
    mirrored in x half the time — with a random subset of half to all of its objects (at least 2): object
    positions, and so the answers to "Where is"/"How far"/"closest", never repeat across steps. Heights, sizes,
    labels and ids are kept; pairwise distances are preserved. Stage 2 with ``augment`` (issue 8 note)."""
    n = len(o.ids)
    keep = np.sort(rng.choice(n, size=int(rng.integers(max(2, n // 2), n + 1)), replace=False)) if n > 2 else np.arange(n)
    c = o.centers[keep].astype(np.float64)
    mid = c[:, :2].mean(0)
    th = rng.uniform(0.0, 2.0 * np.pi)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    xy = (c[:, :2] - mid) @ rot.T + mid
    if rng.random() < 0.5:
        xy[:, 0] = 2.0 * mid[0] - xy[:, 0]
    centers = np.concatenate([xy, c[:, 2:]], 1).astype(o.centers.dtype)
    return SceneObjects(o.scene_id, o.ids[keep], [o.labels[i] for i in keep], o.categories[keep], centers, o.sizes[keep])


def stage2_turn(o: SceneObjects, ids: np.ndarray, k: int, kind: float, rng: np.random.Generator) -> tuple[str, str]:
    """One stage-2 question about object ``k`` of ``o`` (identifiers ``ids``), by ``kind`` in [0, 1): below 0.3
    "Where is", 0.3-0.6 the nearest object, 0.6-0.8 a distance, from 0.8 a VSI-Bench count of its label."""
    n = len(o.ids)
    if kind < 0.3 or (kind >= 0.8 and o.labels[k] in NOT_ASKED):
        return where_is(ids[k], o.centers[k])
    if kind >= 0.8:  # VSI-Bench counting on one token per object, any count (the scene may be a subset)
        return prompt_text(counting_question(o.labels[k])), str(o.labels.count(o.labels[k]))
    if kind < 0.6 and n > 1:
        return closest_to(ids[k], ids[nearest_other(o.centers, k)])
    if n > 1:
        j = int((k + 1 + rng.integers(n - 1)) % n)
        return how_far(ids[k], ids[j], float(np.linalg.norm(o.centers[k] - o.centers[j])))
    return what_is(ids[k], o.labels[k])


def nearest_other(centers: np.ndarray, i: int) -> int:
    d = np.linalg.norm(centers - centers[i], axis=1)
    d[i] = np.inf
    return int(np.argmin(d))


class CurriculumData:
    """Deterministic batches for stage ``stage``: ``batch(step) -> list[Example]``."""

    def __init__(self, stage: int, objects: dict[str, SceneObjects], rows: dict[int, pd.DataFrame],
                 scene_inputs: Callable[[str], SceneInput | None] | None, steps: int, seed: int,
                 mix_previous: float = 0.3, turns: int = 8, max_objects: int = 40, rank: int = 0,
                 vocab_share: float = 0.0, simplified_share: float = 0.0,
                 simplified_tokens: tuple[int, int] = (0, 0), real_turns: int = 1, refer_share: float = 0.0,
                 spatial_share: float = 0.0, augment: bool = False) -> None:
        if not objects:
            raise ValueError("no training scenes in the object table (split=train); check the spacespan stage output")
        self.stage, self.objects, self.rows, self.steps, self.seed = stage, objects, rows, steps, seed
        self.scene_inputs, self.mix, self.turns, self.rank = scene_inputs, mix_previous, turns, rank
        self.vocab_share, self.simplified_share = vocab_share, simplified_share
        lo, hi = (int(v) for v in simplified_tokens)
        if lo < 0 or hi < lo:
            raise ValueError(f"simplified_tokens must be [lo, hi] with 0 <= lo <= hi, got {list(simplified_tokens)}")
        self.spread_range = (lo, hi)
        if real_turns < 1:
            raise ValueError(f"real_turns must be >= 1, got {real_turns}")
        self.real_turns = int(real_turns)
        self.refer_share = float(refer_share)
        self.spatial_share = float(spatial_share)
        self.augment = bool(augment)
        self.scene_ids = sorted(objects)
        self.pool = [(o, i) for s in self.scene_ids for o in [objects[s]] for i in range(len(o.ids))]
        self.max_objects = min(max_objects, len(self.pool), 100)
        self.rows_by_scene = {k: {s: g.index.to_numpy() for s, g in df.groupby("scene_id")} if len(df) else {}
                              for k, df in rows.items()}

    def spread(self, scene: SceneInput, sizes: np.ndarray, rng: np.random.Generator) -> SceneInput:
        """``scene`` with a token count drawn from ``simplified_tokens`` (:func:`spread_scene`); unchanged when off."""
        lo, hi = self.spread_range
        if hi == 0:
            return scene
        return spread_scene(scene, sizes, int(rng.integers(lo, hi + 1)), rng)

    def simplified(self, o: SceneObjects, order: np.ndarray, rng: np.random.Generator,
                   ids: np.ndarray | None = None) -> SceneInput:
        """``o``'s simplified scene in ``order`` (optionally with other identifiers ``ids``), spread (:meth:`spread`)."""
        return self.spread(o.scene_input(order, ids), o.sizes[order], rng)

    def past_warmup(self, step: int) -> bool:
        """Stage 1 has left its 1-6-object phase (whole-scene rows join)."""
        return step >= SMALL_UNTIL * self.steps

    # ---- one example per stage ----
    def stage1(self, rng: np.random.Generator, step: int) -> Example:
        f = step / max(1, self.steps)  # scene-size warm-up (ONE_OBJECT_UNTIL, SMALL_UNTIL, GROWN_AT above)
        if f < ONE_OBJECT_UNTIL:
            n = 1
        elif f < SMALL_UNTIL:
            n = min(2 + int(5 * (f - ONE_OBJECT_UNTIL) / (SMALL_UNTIL - ONE_OBJECT_UNTIL)), 6, self.max_objects)
        else:
            grow = min(1.0, (f - SMALL_UNTIL) / (GROWN_AT - SMALL_UNTIL))
            n_max = min(int(round(6 + (self.max_objects - 6) * grow)), self.max_objects)
            n = int(rng.integers((n_max + 1) // 2, n_max + 1))
        picks = [self.pool[j] for j in rng.choice(len(self.pool), size=n, replace=False)]
        ids = rng.choice(100, size=n, replace=False)
        labels = [o.labels[i] for o, i in picks]
        cats = np.array([o.categories[i] for o, i in picks], np.int64)
        centers = np.stack([o.centers[i] for o, i in picks])
        # optionally some objects get a category from the whole vocabulary, so symbols that never occur in
        # train scenes are learned too (slower to learn: off by default)
        vocab = categories()
        swap = rng.random(n) < self.vocab_share
        for k in np.flatnonzero(swap):
            cats[k] = int(rng.integers(len(vocab)))
            labels[k] = vocab[cats[k]]
        scene = self.spread(SceneInput.from_objects(ids, cats, centers), np.stack([o.sizes[i] for o, i in picks]), rng)
        counts = pd.Series(labels).value_counts()
        turns = []
        # each object is asked about at most once per sequence: a repeated question (or the reverse one) would be
        # answered by copying an earlier turn, a shortcut that never helps on a single val question
        # grounding questions from step 0: with the copy-head init and the scene query bias (proxy3d.model) the
        # one-object phase teaches both directions (val grounding 85% at step 800 vs 2% when they joined at
        # SMALL_UNTIL)
        which = 0.5
        for k in rng.choice(n, size=min(self.turns, n), replace=False):
            unique = counts[labels[k]] == 1
            turns.append(which_is(ids[k], labels[k]) if unique and rng.random() < which else what_is(ids[k], labels[k]))
        return Example(scene, turns)

    def stage2(self, rng: np.random.Generator, step: int) -> Example:
        o = self.objects[self.scene_ids[int(rng.integers(len(self.scene_ids)))]]
        if self.augment:
            o = augment_scene(o, rng)
        n = len(o.ids)
        ids = rng.choice(100, size=n, replace=False)
        order = rng.permutation(n)
        turns = [stage2_turn(o, ids, int(rng.integers(n)), rng.random(), rng) for _ in range(self.turns)]
        return Example(self.simplified(o, order, rng, ids), turns)

    def nearest(self, rng: np.random.Generator) -> Example:
        """Stage 2's pointer phase: a train scene moved as with ``augment`` (:func:`augment_scene`), random
        identifiers, and ``turns`` questions: a ``POINTER_NEAREST`` share nearest-object ones, the rest drawn as
        in :meth:`stage2` (whose mix holds 30% more of them: ~65% in all). With nearest-object questions alone the
        head also pushed identifiers into the other answers ("Where is" 11% -> 5% on the val probes)."""
        o = augment_scene(self.objects[self.scene_ids[int(rng.integers(len(self.scene_ids)))]], rng)
        n = len(o.ids)
        ids = rng.choice(100, size=n, replace=False)
        turns = []
        for _ in range(self.turns):
            k, kind = int(rng.integers(n)), rng.random()
            turns.append(stage2_turn(o, ids, k, 0.3 + 0.3 * kind / POINTER_NEAREST if kind < POINTER_NEAREST
                                     else (kind - POINTER_NEAREST) / (1 - POINTER_NEAREST), rng))
        return Example(self.simplified(o, rng.permutation(n), rng, ids), turns)

    def from_rows(self, rng: np.random.Generator, stage: int, real: bool) -> Example | None:
        groups = self.rows_by_scene.get(stage) or {}
        scenes = sorted(s for s in groups if s in self.objects)
        if not scenes:
            return None
        sid = scenes[int(rng.integers(len(scenes)))]
        idx = groups[sid]
        take = rng.choice(idx, size=min(len(idx), self.real_turns if real else self.turns), replace=False)
        turns = [row_turn(self.rows[stage].loc[int(i)], self.objects[sid]) for i in take]
        if real:
            if self.scene_inputs is None:
                return None
            scene = self.scene_inputs(sid)
            if scene is None:
                return None
        else:
            o = self.objects[sid]
            scene = self.simplified(o, rng.permutation(len(o.ids)), rng)
        return Example(scene, turns)

    def referring(self, rng: np.random.Generator) -> Example | None:
        """Templated referring expressions on one train scene: target (unique label) first, its nearest other
        object as the anchor; the answer names the target and its identifier."""
        o = self.objects[self.scene_ids[int(rng.integers(len(self.scene_ids)))]]
        counts = pd.Series(o.labels).value_counts()
        unique = [k for k, lab in enumerate(o.labels) if counts[lab] == 1 and lab not in ("wall", "floor")]
        if not unique or len(o.ids) < 2:
            return None
        ks = rng.choice(unique, size=min(self.turns, len(unique)), replace=False)
        turns = [refer(int(o.ids[k]), o.labels[k], o.labels[nearest_other(o.centers, int(k))], int(rng.integers(8)))
                 for k in ks]
        return Example(self.simplified(o, rng.permutation(len(o.ids)), rng), turns)

    def stage3(self, rng: np.random.Generator, step: int) -> Example:
        if self.refer_share and rng.random() < self.refer_share:
            ex = self.referring(rng)
            if ex is not None:
                return ex
        ex = self.from_rows(rng, 3, real=False)
        if ex is not None:
            return ex
        o = self.objects[self.scene_ids[int(rng.integers(len(self.scene_ids)))]]
        ks = rng.integers(len(o.ids), size=self.turns)
        return Example(self.simplified(o, rng.permutation(len(o.ids)), rng), [size_of(o.ids[k], o.sizes[k]) for k in ks])

    def spatial(self, rng: np.random.Generator, real: bool) -> Example | None:
        """Templated VSI-Bench questions (:func:`spatial_turns`) on one train scene's real proxies
        (``real_turns`` questions) or simplified scene (``turns``)."""
        sid = self.scene_ids[int(rng.integers(len(self.scene_ids)))]
        o = self.objects[sid]
        if real:
            scene = self.scene_inputs(sid) if self.scene_inputs is not None else None
            if scene is None:
                return None
        else:
            scene = self.simplified(o, rng.permutation(len(o.ids)), rng)
        turns = spatial_turns(o, self.real_turns if real else self.turns, rng)
        return Example(scene, turns) if turns else None

    def stage4(self, rng: np.random.Generator, step: int) -> Example:
        if self.spatial_share and rng.random() < self.spatial_share:
            ex = self.spatial(rng, real=rng.random() >= self.simplified_share)
            if ex is not None:
                return ex
        # a share of the stage-4 rows (descriptions, QA, captions) on simplified scenes, 8 per sequence: ~8x the
        # language practice per step at a fraction of a 700-proxy sequence's cost (with 0.5: Scan2Cap CIDEr 13 ->
        # 26, SQA3D EM 30 -> 33 on the val items, ScanRefer 5 -> 7.5)
        if self.simplified_share and rng.random() < self.simplified_share:
            ex = self.from_rows(rng, 4, real=False)
            if ex is not None:
                return ex
        ex = self.from_rows(rng, 4, real=True)
        if ex is None:
            raise ValueError("stage 4: no SpaceSpan stage-4 rows whose scene has proxies; run the spacespan and "
                             "proxies stages first")
        return ex

    def example(self, rng: np.random.Generator, stage: int, step: int) -> Example:
        if stage in (1, 2):  # SpaceSpan's own stage-1/2 rows (whole scenes) join the templated questions when
            # present; in stage 1 only after the small-scene phase of the warm-up
            if (stage == 2 or self.past_warmup(step)) and rng.random() < 0.25:
                ex = self.from_rows(rng, stage, real=False)
                if ex is not None:
                    return ex
            return self.stage1(rng, step) if stage == 1 else self.stage2(rng, step)
        return self.stage3(rng, step) if stage == 3 else self.stage4(rng, step)

    def batch(self, step: int, size: int) -> list[Example]:
        """The examples of ``step``; in stage 2, steps past ``steps`` are its pointer phase (:meth:`nearest` only)."""
        rng = np.random.default_rng([self.seed, self.stage, step, self.rank])
        if self.stage == 2 and step >= self.steps:
            return [self.nearest(rng) for _ in range(size)]
        out = []
        for _ in range(size):
            stage = self.stage
            if stage > 1 and rng.random() < self.mix:
                stage = int(rng.integers(1, stage))
            out.append(self.example(rng, stage, step if stage == self.stage else self.steps))
        return out
