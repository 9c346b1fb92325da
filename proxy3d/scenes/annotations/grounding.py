"""ScanRefer, Multi3DRefer and Scan2Cap records for one synthetic scene, from its true geometry.

Field names follow the public files exactly:
- ScanRefer (``ScanRefer_filtered_{split}.json``): scene_id, object_id (str), object_name, ann_id (str),
  description, token (list of str).
- Multi3DRefer (``multi3drefer_{split}.json``): scene_id, object_name, ann_id (int), description,
  object_ids (list of int), eval_type (zt_w_d | zt_wo_d | st_w_d | st_wo_d | mt), spatial, color, texture, shape.
- Scan2Cap corpus (``scan2cap_{split}_corpus.json``): {"scene_id|object_id|object_name": ["sos ... eos", ...]}.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from proxy3d.scenes.annotations.geometry import (
    box_distance,
    movable,
    nearest,
    scene_rng,
    support_name,
    tokenize,
)
from proxy3d.scenes.spec import SynthObject, SynthScene
from proxy3d.vocab import categories


def _describe(obj: SynthObject, scene: SynthScene, variant: int) -> str:
    objs = movable(scene)
    by_id = {o.object_id: o for o in scene.objects}
    colour = f"{obj.color} " if obj.color else ""
    height = float(obj.aabb[5])
    on = support_name(obj, by_id)
    if variant == 0:
        where = "mounted on the wall" if on == "wall" else f"on the {on}"
        return f"this is a {colour}{obj.label}. it is {where}."
    near = nearest(obj, [o for o in objs if o.object_id != obj.support])
    near_txt = f" it is next to the {near.label}." if near is not None else ""
    return f"the {colour}{obj.label} is about {height:.1f} meters tall.{near_txt}"


def scanrefer(scene: SynthScene, per_object: int = 2) -> list[dict[str, Any]]:
    """Two descriptions per object: support relation + colour, and height + nearest neighbour."""
    out = []
    for obj in movable(scene):
        for ann in range(per_object):
            text = _describe(obj, scene, ann % 2)
            out.append({
                "scene_id": scene.scene_id,
                "object_id": str(obj.object_id),
                "object_name": obj.label.replace(" ", "_"),
                "ann_id": str(ann),
                "description": text,
                "token": tokenize(text),
            })
    return out


def scan2cap(scanrefer_records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Scan2Cap's evaluation corpus, built from ScanRefer descriptions as the original code does."""
    corpus: dict[str, list[str]] = defaultdict(list)
    for r in scanrefer_records:
        key = f"{r['scene_id']}|{r['object_id']}|{r['object_name']}"
        corpus[key].append(" ".join(["sos", *r["token"], "eos"]))
    return dict(corpus)


def multi3drefer(scene: SynthScene, seed: int) -> list[dict[str, Any]]:
    """Zero-, single- and multi-target descriptions with Multi3DRefer's eval types."""
    rng = scene_rng(seed, scene.scene_id, "multi3drefer")
    objs = movable(scene)
    groups: dict[str, list[SynthObject]] = defaultdict(list)
    for o in objs:
        groups[o.label].append(o)
    rows: list[tuple[str, str, list[int], str, bool, bool]] = []  # name, text, ids, eval_type, spatial, color
    for label in sorted(groups):
        members = groups[label]
        ids = [o.object_id for o in members]
        if len(members) > 1:
            rows.append((label, f"all the {label}s in the room.", ids, "mt", False, False))
            colours = defaultdict(list)
            for o in members:
                colours[o.color].append(o)
            for colour, same in sorted(colours.items()):
                if colour and len(same) == 1:
                    rows.append((label, f"the {colour} {label}.", [same[0].object_id], "st_w_d", False, True))
            absent = sorted({"purple", "orange", "pink", "teal"} - set(colours))
            if absent:
                rows.append((label, f"the {absent[0]} {label}.", [], "zt_w_d", False, True))
        else:
            o = members[0]
            near = nearest(o, objs)
            rel = f" close to the {near.label}" if near is not None and box_distance(o, near) < 1.0 else ""
            rows.append((label, f"the {label}{rel}.", ids, "st_wo_d", bool(rel), False))
    present = set(groups)
    vocab = [c for c in categories() if c not in present and c not in ("floor", "wall", "ceiling")]
    missing = vocab[int(rng.integers(len(vocab)))] if vocab else "unicorn"
    rows.append((missing, f"the {missing} in this room.", [], "zt_wo_d", False, False))
    return [
        {
            "scene_id": scene.scene_id,
            "object_name": name.replace(" ", "_"),
            "ann_id": i,
            "description": text,
            "object_ids": ids,
            "eval_type": eval_type,
            "spatial": spatial,
            "color": colour,
            "texture": False,
            "shape": False,
        }
        for i, (name, text, ids, eval_type, spatial, colour) in enumerate(rows)
    ]
