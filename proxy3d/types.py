"""Data contracts shared by every part (DESIGN.md §4-§5).

World frame everywhere: metres, z up (gravity), axis-aligned like ScanNet's ``axisAlignment``.
``Triplets`` and ``Proxies`` are saved as safetensors with a JSON metadata header; both round-trip
exactly through :func:`save_triplets`/:func:`load_triplets` and :func:`save_proxies`/:func:`load_proxies`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from proxy3d.io import atomic_path


@dataclass
class Frame:
    """One RGB-D frame.

    rgb: (H, W, 3) uint8; depth: (H, W) float32 metres or None (0 = invalid);
    pose: (4, 4) float64 camera-to-world (world = axis-aligned frame); K: (3, 3) intrinsics of ``rgb``;
    instance: (H, W) int32 instance ids consistent across the scene, -1 = none, or None.
    """

    rgb: np.ndarray
    depth: np.ndarray | None
    pose: np.ndarray
    K: np.ndarray
    instance: np.ndarray | None = None
    index: int = 0  # frame index in the source sequence


@dataclass
class SceneObject:
    """A ground-truth object: instance id, label, category id in the 213-category vocabulary (-1 unknown),
    axis-aligned box ``aabb`` = (cx, cy, cz, dx, dy, dz) in the world frame."""

    object_id: int
    label: str
    category: int
    aabb: np.ndarray  # (6,) float: centre xyz + size xyz


@dataclass
class Triplets:
    """Patch triplets of one scene.

    features: (L, C) float32; points: (L, 3) float32 world coords (median of valid pixel points);
    labels: (L,) int32 instance id of the largest-area mask in the patch (-1 none);
    valid: (L,) bool (patch has >= 1 valid point); frame: (L,) int16 frame index;
    instance_category: {instance id: category id}; meta: free-form JSON-able dict (encoder, stride, ...).
    """

    scene_id: str
    features: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    frame: np.ndarray
    instance_category: dict[int, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class Proxies:
    """Proxy tokens of one scene, already in serialization (BFS) order; K' <= budget.

    features: (K', C) float32 mean member feature; centers: (K', 3) float32 mean member point;
    instance: (K',) int32 majority instance id (-1 none); category: (K',) int32 (-1 unknown);
    count: (K',) int32 member patches; members: optional (L,) int32 proxy index of each input patch
    (-1 = not assigned: invalid/dropped), indexed in the *final* order.
    """

    scene_id: str
    features: np.ndarray
    centers: np.ndarray
    instance: np.ndarray
    category: np.ndarray
    count: np.ndarray
    members: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])


def _save(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata={"json": json.dumps(meta)})


def _load(path: Path, kind: str = "", required: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and JSON metadata of a safetensors file; ``required`` tensors (and a scene id) must be there, else
    an error that says which file this is not (e.g. proxies given where triplets are expected)."""
    tensors, meta = _read(Path(path), kind, tensors=True)
    missing = [k for k in required if k not in tensors] + ([] if "scene_id" in meta or not required else ["scene_id"])
    if missing:
        raise ValueError(f"{path}: not a {kind} file (missing {missing}; has {sorted(tensors)}); pass the output "
                         f"of the stage that writes {kind}")
    return tensors, meta


def load_meta(path: str | Path, kind: str = "") -> dict[str, Any]:
    """The JSON metadata of a safetensors file (scene id, ...) without reading its tensors."""
    return _read(Path(path), kind, tensors=False)[1]


def _read(path: Path, kind: str, tensors: bool, names: tuple[str, ...] | None = None
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    what = f"{kind} safetensors file" if kind else "safetensors file"
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a {what}; pass the file, or move the folder away")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; run the stage that produces it (see dvc.yaml)")

    def broken(reason: str) -> ValueError:
        return ValueError(f"{path}: not a valid {what} ({reason}); re-run the stage that writes it")

    try:
        with safe_open(str(path), framework="numpy") as f:
            text = (f.metadata() or {}).get("json", "{}")
            out = {k: f.get_tensor(k) for k in f.keys() if names is None or k in names} if tensors else {}
    except SafetensorError as e:
        raise broken(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
    except OSError as e:
        raise OSError(f"{path}: cannot read it ({e.strerror or e}); check the file") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise broken(f"its 'json' metadata is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise broken(f"its 'json' metadata is a {type(meta).__name__}, not an object")
    return out, meta


def save_triplets(t: Triplets, path: str | Path) -> None:
    meta = {"scene_id": t.scene_id, "instance_category": {str(k): int(v) for k, v in t.instance_category.items()}, **{"meta": t.meta}}
    _save(Path(path), {"features": t.features.astype(np.float32), "points": t.points.astype(np.float32),
                       "labels": t.labels.astype(np.int32), "valid": t.valid.astype(np.uint8),
                       "frame": t.frame.astype(np.int16)}, meta)


def load_triplets(path: str | Path) -> Triplets:
    x, meta = _load(Path(path), "triplets", ("features", "points", "labels", "valid", "frame"))
    return Triplets(scene_id=meta["scene_id"], features=x["features"], points=x["points"], labels=x["labels"],
                    valid=x["valid"].astype(bool), frame=x["frame"],
                    instance_category={int(k): int(v) for k, v in meta.get("instance_category", {}).items()},
                    meta=meta.get("meta", {}))


def load_triplet_points(path: str | Path) -> np.ndarray:
    """(L, 3) float32 patch points of a triplets file, without reading its (L, C) features."""
    x, _ = _read(Path(path), "triplets", tensors=True, names=("points",))
    if "points" not in x:
        raise ValueError(f"{path}: not a triplets file (no 'points' tensor); pass the output of the triplets stage")
    return x["points"]


def save_proxies(p: Proxies, path: str | Path) -> None:
    tensors = {"features": p.features.astype(np.float32), "centers": p.centers.astype(np.float32),
               "instance": p.instance.astype(np.int32), "category": p.category.astype(np.int32),
               "count": p.count.astype(np.int32)}
    if p.members is not None:
        tensors["members"] = p.members.astype(np.int32)
    _save(Path(path), tensors, {"scene_id": p.scene_id, "meta": p.meta})


def load_proxies(path: str | Path) -> Proxies:
    x, meta = _load(Path(path), "proxies", ("features", "centers", "instance", "category", "count"))
    return Proxies(scene_id=meta["scene_id"], features=x["features"], centers=x["centers"], instance=x["instance"],
                   category=x["category"], count=x["count"], members=x.get("members"), meta=meta.get("meta", {}))
