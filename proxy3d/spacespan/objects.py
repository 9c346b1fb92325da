"""Scene object tables (scene_id, object_id, label, category, centre, size) for validation and curriculum.

Real and synthetic data both go through ``proxy3d.scenes.scannet.load_objects`` (ScanNet export layout:
world-frame AABBs of each segGroup's mesh vertices).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from proxy3d.scenes.spec import SynthScene

log = logging.getLogger(__name__)


def _row(scene_id: str, object_id: int, label: str, category: int, aabb: Any) -> dict[str, Any]:
    a = [float(v) for v in np.asarray(aabb, dtype=float).reshape(6)]
    return {"scene_id": scene_id, "object_id": int(object_id), "label": label, "category": int(category),
            "center_x": a[0], "center_y": a[1], "center_z": a[2], "size_x": a[3], "size_y": a[4], "size_z": a[5]}


def rows_from_synth(scenes: list[SynthScene]) -> list[dict[str, Any]]:
    """Object rows straight from in-memory synthetic scenes (tests, benchmark)."""
    return [_row(s.scene_id, o.object_id, o.label, o.category, o.aabb) for s in scenes for o in s.objects]


def load_rows(data_root: Path) -> list[dict[str, Any]]:
    """Object rows of every scene under ``data_root/scenes`` (via :func:`proxy3d.scenes.scannet.load_objects`)."""
    from proxy3d.scenes.scannet import list_scenes, load_objects

    rows: list[dict[str, Any]] = []
    for sid in list_scenes(data_root):
        objects = load_objects(data_root, sid)
        if not objects:
            log.warning("scene %s has no ground-truth objects; its annotations will be quarantined", sid)
        rows += [_row(sid, o.object_id, o.label, o.category, o.aabb) for o in objects]
    return rows
