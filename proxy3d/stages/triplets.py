"""Stage ``triplets``: encoder features + point maps + masks -> patch triplets per scene.

Reads ``<data>/scenes/<scene_id>/`` (ScanNet export layout) through ``proxy3d.scenes.scannet``, writes
``<out>/<scene_id>.safetensors`` (:func:`proxy3d.types.save_triplets`) and ``metrics/triplets.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from proxy3d import tracking
from proxy3d.config import DataParams, PerceptionParams, flat_dict
from proxy3d.io import validate_scene_id, write_json
from proxy3d.perception.triplets import builder_from_params
from proxy3d.stages._common import load_stage_params, stage_parser
from proxy3d.tracking import Tracker
from proxy3d.types import save_triplets

log = logging.getLogger(__name__)


def run(p: PerceptionParams, data: DataParams, scenes_root: Path, out_dir: Path, tracker: Tracker,
        scene_ids: list[str] | None = None) -> dict:
    """Build and save the triplets of every scene (or ``scene_ids``); return the metrics."""
    from proxy3d.scenes.scannet import list_scenes, open_scene

    if scene_ids:  # all checked before the encoder loads and any scene is written
        ids = [validate_scene_id(sid, "--scenes") for sid in scene_ids]
    else:
        ids = [validate_scene_id(sid, str(scenes_root)) for sid in list_scenes(scenes_root)]
    if not ids:
        raise FileNotFoundError(f"{scenes_root}: no scenes found; run 'proxy3d synth data' or point data.root at a "
                                "ScanNet-layout folder")
    builder = builder_from_params(p)
    per_scene = {}
    for sid in ids:
        scene = open_scene(scenes_root, sid, frames=data.frames, skip_invalid_frames=data.skip_invalid_frames)
        trip = builder.build(scene.scene_id, scene.frames(), scene.objects, n_frames=len(scene))
        save_triplets(trip, out_dir / f"{scene.scene_id}.safetensors")
        per_scene[scene.scene_id] = {k: v if isinstance(v, int) else round(float(v), 4) for k, v in builder.stats.items()}
        log.info("triplets %s: %d patches, %.1f%% valid, %.1f%% labelled, %.3f s/frame", scene.scene_id,
                 builder.stats["patches"], builder.stats["valid_pct"], builder.stats["labelled_pct"],
                 builder.stats["seconds_per_frame"])
    n = len(per_scene)
    frames = sum(s["frames"] for s in per_scene.values())
    metrics = {
        "scenes": n,
        "patches_per_scene": sum(s["patches"] for s in per_scene.values()) / n,
        "valid_pct": sum(s["valid_pct"] * s["patches"] for s in per_scene.values()) / max(1, sum(s["patches"] for s in per_scene.values())),
        "labelled_pct": sum(s["labelled_pct"] * s["patches"] for s in per_scene.values()) / max(1, sum(s["patches"] for s in per_scene.values())),
        "seconds_per_frame": sum(s["seconds_per_frame"] * s["frames"] for s in per_scene.values()) / max(1, frames),
        "frames": frames,
    }
    tracker.log_metrics(metrics)
    return {**metrics, "per_scene": per_scene}


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(
        "triplets", "Per scene: 2D encoder features (perception.encoder), world points (perception.geometry: depth | "
        "vggt) and instance masks (perception.masks: gt | sam2) fused into patch triplets (f, p, m), saved as "
        "<out>/<scene_id>.safetensors.", "sections 'data:' and 'perception:'", Path("metrics/triplets.json"),
        "perception.encoder=qwen2_5_vl")
    ap.add_argument("--data", type=Path, default=None, help="data root (default: data.root from params)")
    ap.add_argument("--out", type=Path, default=Path("artifacts/triplets"), help="output folder")
    ap.add_argument("--scenes", default="", help="comma-separated scene ids (default: every scene)")
    args = ap.parse_args(argv)
    params = load_stage_params(args)
    root = args.data if args.data is not None else Path(params.data.root)
    scene_ids = [s.strip() for s in args.scenes.split(",") if s.strip()] or None
    with tracking.stage_run("triplets", {**flat_dict(params.perception, "perception"),
                                                **flat_dict(params.data, "data")}, params.tracking) as tr:
        metrics = run(params.perception, params.data, root / "scenes", args.out, tr, scene_ids)
    write_json(args.metrics, metrics)
    log.info("triplets: %d scenes, %.0f patches/scene, %.1f%% valid, %.1f%% labelled -> %s", metrics["scenes"],
             metrics["patches_per_scene"], metrics["valid_pct"], metrics["labelled_pct"], args.out)
    return 0
