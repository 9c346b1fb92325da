"""Writer of the ScanNet export layout (one scene folder; see COMMON layout and ``scannet.py`` for the reader).

Files are written plainly: callers build a whole scene (or dataset) in a temporary folder and rename it
into place, so an interrupted run never leaves a half-written scene behind.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from proxy3d.scenes.ply import write_ply

JPEG_QUALITY = 92


def format_matrix(m: np.ndarray) -> str:
    """A 4x4 matrix as ScanNet writes it: four lines of four numbers (non-finite values as inf/nan)."""
    return "".join(" ".join(f"{float(v):.9g}" for v in row) + "\n" for row in np.asarray(m, dtype=np.float64))


def as4x4(K: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    K = np.asarray(K, dtype=np.float64)
    out[: K.shape[0], : K.shape[1]] = K
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes (deterministic for a pinned Pillow)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png16(arr: np.ndarray) -> bytes:
    """(H, W) uint16 -> 16-bit greyscale PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def depth_to_mm(depth: np.ndarray) -> np.ndarray:
    """(H, W) float metres -> uint16 millimetres (0 = invalid; clipped to 65.535 m)."""
    mm = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


def write_frame(scene_dir: Path, index: int, pose: np.ndarray, *, color_jpeg: bytes | None = None,
                rgb: np.ndarray | None = None, depth_mm: np.ndarray | None = None,
                instance: np.ndarray | None = None) -> None:
    """Write frame ``index``: color/<i>.jpg, depth/<i>.png (uint16 mm), pose/<i>.txt (camera-to-world in the
    scan frame), instance-filt/<i>.png (uint16 objectId + 1, 0 = none). ``instance``: (H, W) int, -1 = none."""
    color = color_jpeg if color_jpeg is not None else encode_jpeg(rgb)  # type: ignore[arg-type]
    for sub in ("color", "pose") + (("depth",) if depth_mm is not None else ()) + (
            ("instance-filt",) if instance is not None else ()):
        (scene_dir / sub).mkdir(parents=True, exist_ok=True)
    (scene_dir / "color" / f"{index}.jpg").write_bytes(color)
    (scene_dir / "pose" / f"{index}.txt").write_text(format_matrix(pose))
    if depth_mm is not None:
        (scene_dir / "depth" / f"{index}.png").write_bytes(encode_png16(depth_mm))
    if instance is not None:
        (scene_dir / "instance-filt" / f"{index}.png").write_bytes(encode_png16(np.asarray(instance) + 1))


def write_intrinsics(scene_dir: Path, K_color: np.ndarray, K_depth: np.ndarray) -> None:
    (scene_dir / "intrinsic").mkdir(parents=True, exist_ok=True)
    (scene_dir / "intrinsic" / "intrinsic_color.txt").write_text(format_matrix(as4x4(K_color)))
    (scene_dir / "intrinsic" / "intrinsic_depth.txt").write_text(format_matrix(as4x4(K_depth)))


def write_scene_txt(scene_dir: Path, scene_id: str, axis_alignment: np.ndarray | None,
                    color_size: tuple[int, int], depth_size: tuple[int, int] | None, K_color: np.ndarray,
                    K_depth: np.ndarray | None, num_frames: int, scene_type: str = "Synthetic",
                    extra: dict[str, str] | None = None) -> None:
    """``<scene_id>.txt`` with ScanNet's keys (``axisAlignment = 16 numbers``, sizes, focal lengths, counts)."""
    kv: dict[str, str] = {}
    if axis_alignment is not None:
        kv["axisAlignment"] = " ".join(f"{float(v):.9g}" for v in np.asarray(axis_alignment).reshape(-1))
    kv["colorWidth"], kv["colorHeight"] = str(color_size[0]), str(color_size[1])
    kv["fx_color"], kv["fy_color"] = f"{K_color[0, 0]:.6f}", f"{K_color[1, 1]:.6f}"
    kv["mx_color"], kv["my_color"] = f"{K_color[0, 2]:.6f}", f"{K_color[1, 2]:.6f}"
    if depth_size is not None and K_depth is not None:
        kv["depthWidth"], kv["depthHeight"] = str(depth_size[0]), str(depth_size[1])
        kv["fx_depth"], kv["fy_depth"] = f"{K_depth[0, 0]:.6f}", f"{K_depth[1, 1]:.6f}"
        kv["mx_depth"], kv["my_depth"] = f"{K_depth[0, 2]:.6f}", f"{K_depth[1, 2]:.6f}"
        kv["numDepthFrames"] = str(num_frames)
    kv["numColorFrames"] = str(num_frames)
    kv["sceneType"] = scene_type
    kv.update(extra or {})
    (scene_dir / f"{scene_id}.txt").write_text("".join(f"{k} = {v}\n" for k, v in sorted(kv.items())))


def write_annotations(scene_dir: Path, scene_id: str, groups: Sequence[tuple[int, str, list[int]]],
                      xyz: np.ndarray, rgb: np.ndarray, seg_indices: np.ndarray) -> None:
    """The mesh-side annotation triple of ScanNet: ``_vh_clean_2.ply`` (xyz (N, 3) in the scan frame, rgb
    (N, 3) uint8), ``_vh_clean_2.0.010000.segs.json`` (segment id per vertex) and ``.aggregation.json``
    (``groups`` = (objectId, label, segment ids))."""
    write_ply(scene_dir / f"{scene_id}_vh_clean_2.ply", xyz.astype(np.float32), rgb.astype(np.uint8))
    segs = {"params": {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "750", "maxPoints": "5000",
                       "thinThresh": "0.05", "flatThresh": "0.001", "minLength": "0.02", "maxLength": "1"},
            "sceneId": scene_id, "segIndices": [int(s) for s in seg_indices]}
    (scene_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(segs))
    agg = {"sceneId": f"scannet.{scene_id}", "appId": "Proxy3D.synth.v1",
           "segGroups": [{"id": oid, "objectId": oid, "segments": [int(s) for s in segs_], "label": label}
                         for oid, label, segs_ in groups],
           "segmentsFile": f"scannet.{scene_id}_vh_clean_2.0.010000.segs.json"}
    (scene_dir / f"{scene_id}.aggregation.json").write_text(json.dumps(agg, indent=1))


def write_splits(root: Path, train: Sequence[str], val: Sequence[str]) -> None:
    """data/splits/scannetv2_train.txt and scannetv2_val.txt (one scene id per line)."""
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "scannetv2_train.txt").write_text("".join(f"{s}\n" for s in train))
    (root / "splits" / "scannetv2_val.txt").write_text("".join(f"{s}\n" for s in val))
