"""Build the synthetic dataset: worlds -> rendered frames -> ScanNet export layout (+ native annotations).

Everything derives from one seed (scene ``i`` uses ``SeedSequence([seed, i])``), so the same arguments
give byte-identical files. The dataset is built in a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from proxy3d.config import SynthParams
from proxy3d.scenes import export
from proxy3d.scenes.spec import SynthScene
from proxy3d.scenes.synth.linalg import apply, compose, rigid_inverse
from proxy3d.scenes.synth.render import intrinsics, render
from proxy3d.scenes.synth.world import World, build_world

log = logging.getLogger(__name__)

POINT_SPACING = 0.08  # metres between sampled surface points in the .ply
MIN_VISIBLE_PIXELS = 30  # an object counts as seen in a frame from this many pixels on
UNANNOTATED_SEGMENT = 999_999  # segment of the ceiling: in the mesh, in no segGroup (like ScanNet)


# The generator's settings are the `synth:` section of params.yaml: one schema, no second copy.
SynthConfig = SynthParams


def scene_ids(n: int) -> list[str]:
    return [f"scene{i:04d}_00" for i in range(n)]


def split_of(n: int, seed: int, val_fraction: float, labels: list[set[str]] | None = None) -> dict[str, str]:
    """Scene-level train/val split: ``round(n * val_fraction)`` val scenes (>= 1 when n >= 2 and fraction > 0),
    taken in a seeded random order.

    With each scene's ``labels``, a scene becomes val only if every label of the val scenes still occurs in a
    train scene (scenes that would break that are passed over, and used only when too few others are left): a
    model trained from scratch cannot name a category it never saw, and 9 of the 74 val objects of the default
    data once had one, which capped the stage-1 "What is" probe at 87.8%.
    """
    n_val = round(n * val_fraction)
    if n >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng([seed, 7919]).permutation(n).tolist()
    val: list[int] = []
    if labels is not None:
        for i in order:
            if len(val) == n_val:
                break
            held_out = set(val) | {i}
            seen = set().union(*(labels[j] for j in range(n) if j not in held_out))
            if set().union(*(labels[v] for v in held_out)) <= seen:
                val.append(i)
    val += [i for i in order if i not in val][: n_val - len(val)]
    return {sid: ("val" if i in val else "train") for i, sid in enumerate(scene_ids(n))}


def _scene_seed(cfg: SynthConfig, i: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, i]).generate_state(1)[0])


def _scene_labels(cfg: SynthConfig, i: int) -> set[str]:
    """The labels of scene ``i`` (its world without rendering: the split does not change a world)."""
    world = build_world(scene_ids(cfg.scenes)[i], "train", _scene_seed(cfg, i), cfg.frames, cfg.min_objects,
                        cfg.max_objects)
    return {o.label for o in world.scene.objects}


def box_surface(lo: np.ndarray, hi: np.ndarray, spacing: float = POINT_SPACING) -> tuple[np.ndarray, np.ndarray]:
    """Points on the six faces of a box (corners included, so their bounds equal the box): (N, 3), face (N,)."""
    axes = [np.linspace(lo[a], hi[a], max(2, math.ceil((hi[a] - lo[a]) / spacing) + 1)) for a in range(3)]
    pts, faces = [], []
    for a in range(3):
        b, c = [x for x in range(3) if x != a]
        gb, gc = np.meshgrid(axes[b], axes[c], indexing="ij")
        for side, val in enumerate((lo[a], hi[a])):
            p = np.empty((gb.size, 3))
            p[:, a], p[:, b], p[:, c] = val, gb.ravel(), gc.ravel()
            pts.append(p)
            faces.append(np.full(gb.size, 2 * a + side))
    return np.concatenate(pts), np.concatenate(faces)


def write_scene(world: World, scene_dir: Path, width: int, height: int) -> None:
    """Render every frame of ``world`` and write its ScanNet-layout folder; fills ``first_seen``."""
    scene, sid = world.scene, world.scene.scene_id
    K = intrinsics(width, height)
    scan_from_world = rigid_inverse(world.axis_alignment)
    first_seen: dict[int, int] = {}
    for i, pose in enumerate(world.poses):
        rgb, depth, inst = render(pose=pose, K=K, width=width, height=height, **world.render_args())
        export.write_frame(scene_dir, i, compose(scan_from_world, pose), rgb=rgb, depth_mm=export.depth_to_mm(depth),
                           instance=inst)
        ids, counts = np.unique(inst[inst >= 0], return_counts=True)
        for oid in ids[counts >= MIN_VISIBLE_PIXELS].tolist():
            first_seen.setdefault(int(oid), i)
    scene.first_seen = dict(sorted(first_seen.items()))
    export.write_intrinsics(scene_dir, K, K)
    export.write_scene_txt(scene_dir, sid, world.axis_alignment, (width, height), (width, height), K, K,
                           len(world.poses))
    xyz, rgb_pts, segs, groups = [], [], [], []
    for b in range(len(world.boxes_lo)):
        pts, face = box_surface(world.boxes_lo[b], world.boxes_hi[b])
        oid = int(world.box_instance[b])
        seg = face + 8 * oid + 1 if oid >= 0 else np.full(len(pts), UNANNOTATED_SEGMENT)
        xyz.append(pts)
        rgb_pts.append(np.repeat((world.box_rgb[b] * 255 + 0.5).astype(np.uint8)[None], len(pts), 0))
        segs.append(seg)
        if oid >= 0:
            groups.append((oid, scene.objects[oid].label, sorted(set(seg.tolist()))))
    pts = np.concatenate(xyz)
    pts_scan = apply(scan_from_world, pts)
    export.write_annotations(scene_dir, sid, groups, pts_scan, np.concatenate(rgb_pts), np.concatenate(segs))
    _write_gt_boxes(scene, scene_dir / f"{sid}_gt_boxes.json")


def _write_gt_boxes(scene: SynthScene, path: Path) -> None:
    """Ground-truth boxes: world-frame aabb and the oriented box (local size: width, depth, height; yaw)."""
    rows = []
    for o in scene.objects:
        c, s = o.aabb[:3], o.aabb[3:]
        along_x = round(math.cos(o.yaw) ** 2) == 1  # faces +-x: its depth runs along x
        local = [s[1], s[0], s[2]] if along_x else [s[0], s[1], s[2]]
        rows.append({"objectId": o.object_id, "label": o.label, "category": o.category,
                     "aabb": [round(float(v), 6) for v in o.aabb], "obb": {
                         "centre": [round(float(v), 6) for v in c], "size": [round(float(v), 6) for v in local],
                         "yaw": round(o.yaw, 6)},
                     "color": o.color, "support": o.support, "structural": o.structural})
    path.write_text(json.dumps({"sceneId": scene.scene_id, "roomSize": list(scene.room_size), "objects": rows},
                               indent=1, sort_keys=True))


def _write_annotations(scenes: list[SynthScene], out: Path, seed: int) -> None:
    try:
        module = importlib.import_module("proxy3d.scenes.annotations")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("proxy3d.scenes.annotations"):
            log.warning("proxy3d.scenes.annotations is not available yet: no native annotation files written")
            return
        raise
    module.write_all(scenes, out, seed)


def _make_scene(i: int, scene_id: str, split: str, cfg: SynthConfig, scene_dir: Path) -> SynthScene:
    world = build_world(scene_id, split, _scene_seed(cfg, i), cfg.frames, cfg.min_objects, cfg.max_objects)
    write_scene(world, scene_dir, cfg.width, cfg.height)
    return world.scene


def generate_dataset(out: str | Path, cfg: SynthConfig, force: bool = False, progress: bool = True,
                     workers: int = 1) -> list[SynthScene]:
    """Generate ``cfg.scenes`` scenes into ``out`` (``out/scenes/<id>/``, ``out/splits/``, ``out/annotations/``).

    Scenes are independent (own seed, own folder), so ``workers`` processes give the same bytes as one.
    Refuses to overwrite a non-empty ``out`` unless ``force``; builds in a temporary sibling and renames.
    """
    out = Path(out)
    if cfg.scenes < 1:
        raise ValueError(f"synth.scenes={cfg.scenes}: need at least one scene")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} already exists and is not empty; pass --force to replace it or choose --out")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        splits = split_of(cfg.scenes, cfg.seed, cfg.val_fraction, [_scene_labels(cfg, i) for i in range(cfg.scenes)])
        jobs = [(i, sid, splits[sid], cfg, tmp / "scenes" / sid) for i, sid in enumerate(scene_ids(cfg.scenes))]
        bar = tqdm(total=len(jobs), desc="synth scenes", unit="scene", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_make_scene, *job) for job in jobs]
                for _ in as_completed(futures):
                    bar.update()
                scenes = [f.result() for f in futures]
        else:
            scenes = []
            for job in jobs:
                scenes.append(_make_scene(*job))
                bar.update()
        bar.close()
        export.write_splits(tmp, [s for s in splits if splits[s] == "train"], [s for s in splits if splits[s] == "val"])
        _write_annotations(scenes, tmp / "annotations", cfg.seed)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return scenes
