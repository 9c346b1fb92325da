"""``proxy3d import-scannet``: ScanNet ``.sens`` files (or a plain video) -> the ScanNet export layout.

Each scene is written into a temporary folder next to its destination and renamed into place, so an
interrupted import leaves no half scene. Frames are sampled among those with a finite pose (ScanNet writes
-inf where tracking was lost; the reader rejects such frames by default). Mesh annotations found next to a
``.sens`` (``<id>.txt``, ``<id>.aggregation.json``, ``<id>_vh_clean_2.ply``,
``<id>_vh_clean_2.0.010000.segs.json``) are copied, and so is ScanNet's label table
(``scannetv2-labels.combined.tsv``) found next to the ``.sens`` or up to two folders above it (the ScanNet
release keeps it next to ``scans/``): the reader maps raw labels with it. The sampled frames' 2D instance
maps are extracted from ``<id>_2d-instance-filt.zip`` next to the ``.sens`` into ``instance-filt/``, which
``perception.masks=gt`` needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from proxy3d.config import load_params
from proxy3d.io import safe_join, validate_scene_id
from proxy3d.scenes import export
from proxy3d.scenes.sampling import sample_indices
from proxy3d.scenes.scannet import LABEL_TABLE, read_scene_txt
from proxy3d.scenes.sens import SensError, SensReader
from proxy3d.scenes.video import assumed_intrinsics, read_video

log = logging.getLogger(__name__)

COPIED = ("{}.aggregation.json", "{}_vh_clean_2.ply", "{}_vh_clean_2.0.010000.segs.json")
INSTANCE_ZIP = "{}_2d-instance-filt.zip"  # instance-filt/<frame>.png: objectId + 1, 0 = none


def _staging(out_root: Path, scene_id: str, force: bool) -> tuple[Path, Path]:
    dest = safe_join(out_root / "scenes", scene_id)
    if dest.exists() and not force:
        raise FileExistsError(f"scene {scene_id!r}: {dest} already exists; pass --force to replace it")
    tmp = dest.parent / f".{scene_id}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return dest, tmp


def _commit(tmp: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def label_table_near(sens: Path) -> Path | None:
    """ScanNet's label table next to ``sens`` or up to two folders above it (as in
    ``<release>/scans/<id>/<id>.sens``); None when there is none."""
    for d in sens.absolute().parents[:3]:
        if (d / LABEL_TABLE).is_file():
            return d / LABEL_TABLE
    return None


def extract_instances(archive: Path, ids: Sequence[int], out_dir: Path, scene_id: str) -> None:
    """Copy ``<frame>.png`` of frames ``ids`` from ScanNet's ``_2d-instance-filt.zip`` into ``out_dir``."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = {int(PurePosixPath(n).stem): n for n in z.namelist()
                       if n.lower().endswith(".png") and PurePosixPath(n).stem.isdigit()}
            out_dir.mkdir(parents=True, exist_ok=True)
            for i in ids:
                if int(i) in members:
                    (out_dir / f"{i}.png").write_bytes(z.read(members[int(i)]))
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ValueError(f"scene {scene_id!r}: cannot read {archive} ({e}): re-download it, or move it away to "
                         "import without instance maps (perception.masks=gt then fails)") from None
    missing = sum(int(i) not in members for i in ids)
    if missing:
        log.warning("scene %r: %s has no instance map for %d of %d imported frames; perception.masks=gt fails "
                    "on those frames", scene_id, archive, missing, len(ids))


def import_sens(sens: Path, out_root: Path, frames: int, force: bool = False) -> Path:
    """Export ``frames`` frames of ``sens`` (0 = all), sampled uniformly among those with a finite pose, to
    ``out_root/scenes/<stem>/``."""
    scene_id = validate_scene_id(sens.stem, source=str(sens))
    dest, tmp = _staging(out_root, scene_id, force)
    try:
        with SensReader(sens) as r:
            h = r.header
            valid = np.flatnonzero(np.isfinite(r.poses()).all(axis=(1, 2)))
            lost = h.num_frames - len(valid)
            if not len(valid):
                raise SensError(f"{sens}: no frame has a finite camera pose ({h.num_frames} frames, {lost} with "
                                "tracking lost): nothing to import; use another scene or re-download the file")
            ids = valid[sample_indices(len(valid), frames)].tolist()
            for i, fr in tqdm(r.frames(ids), total=len(ids), desc=scene_id, unit="frame"):
                jpeg = fr.color_data if h.color_compression == "jpeg" else export.encode_jpeg(fr.color(h))
                export.write_frame(tmp, i, fr.camera_to_world.astype(np.float64), color_jpeg=jpeg, depth_mm=fr.depth(h))
        if lost:
            log.warning("scene %r: %d of %d frames of %s have non-finite poses (tracking lost) and are not "
                        "imported; sampled %d of the %d others", scene_id, lost, h.num_frames, sens, len(ids),
                        len(valid))
        archive = sens.with_name(INSTANCE_ZIP.format(scene_id))
        if archive.exists():
            extract_instances(archive, ids, tmp / "instance-filt", scene_id)
        export.write_intrinsics(tmp, h.intrinsic_color, h.intrinsic_depth)
        (tmp / "intrinsic" / "extrinsic_color.txt").write_text(export.format_matrix(h.extrinsic_color))
        (tmp / "intrinsic" / "extrinsic_depth.txt").write_text(export.format_matrix(h.extrinsic_depth))
        txt = sens.with_name(f"{scene_id}.txt")
        meta = read_scene_txt(txt)
        if meta:
            meta.setdefault("depthShift", f"{h.depth_shift:g}")
            (tmp / f"{scene_id}.txt").write_text("".join(f"{k} = {v}\n" for k, v in sorted(meta.items())))
        else:
            log.warning("scene %r: no %s next to the .sens: no axisAlignment, world frame = scan frame", scene_id, txt)
            export.write_scene_txt(tmp, scene_id, None, (h.color_width, h.color_height), (h.depth_width, h.depth_height),
                                   h.intrinsic_color, h.intrinsic_depth, h.num_frames, scene_type="Imported",
                                   extra={"depthShift": f"{h.depth_shift:g}"})
        for pattern in COPIED:
            src = sens.with_name(pattern.format(scene_id))
            if src.exists():
                shutil.copyfile(src, tmp / src.name)
        table = label_table_near(sens)
        if table is not None:
            shutil.copyfile(table, tmp / LABEL_TABLE)
        _commit(tmp, dest)
    except SensError as e:
        raise SensError(f"scene {scene_id!r}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def import_video(video: Path, scene_id: str, out_root: Path, frames: int, force: bool = False) -> Path:
    """Export ``frames`` uniformly sampled frames of a video: colour only, NaN poses, assumed intrinsics."""
    validate_scene_id(scene_id, source="--scene-id")
    if not video.is_file():
        raise FileNotFoundError(f"{video}: no such video file; check the path")
    dest, tmp = _staging(out_root, scene_id, force)
    try:
        size, n = (0, 0), 0
        for i, rgb in tqdm(read_video(video, frames), total=frames or None, desc=scene_id, unit="frame"):
            export.write_frame(tmp, i, np.full((4, 4), np.nan), rgb=rgb)
            size, n = (rgb.shape[1], rgb.shape[0]), n + 1
        if n == 0:
            raise ValueError(f"{video}: no decodable frames; check the file")
        K = assumed_intrinsics(*size)
        export.write_intrinsics(tmp, K, K)
        export.write_scene_txt(tmp, scene_id, None, size, None, K, None, n, scene_type="Video",
                               extra={"poseSource": "unknown", "intrinsicSource": "assumed"})
        log.warning("scene %r: %s has no depth and no poses: wrote %d frames with NaN poses and assumed intrinsics",
                    scene_id, video, n)
        _commit(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="proxy3d import-scannet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sens", nargs="*", type=Path, help="ScanNet .sens files (scene id = file stem)")
    p.add_argument("--video", type=Path, help="a plain video file (mp4, ...) to import instead")
    p.add_argument("--scene-id", help="scene id for --video (default: the video's file stem)")
    p.add_argument("--out", type=Path, help="data root; scenes go to OUT/scenes/<id>/ (default: params data.root)")
    p.add_argument("--frames", type=int, help="frames sampled uniformly per scene, 0 = all (default: params data.frames)")
    p.add_argument("--params", type=Path, default=None,
                   help="params file (default: ./params.yaml, or the built-in defaults without one)")
    p.add_argument("--force", action="store_true", help="replace scenes that already exist")
    args = p.parse_args(argv)
    if args.frames is not None and args.frames < 0:
        p.error(f"--frames {args.frames}: give a number of frames >= 1, or 0 for every frame")
    from proxy3d.stages._common import params_file

    params = load_params(params_file(args.params))
    out = args.out or Path(params.data.root)
    frames = params.data.frames if args.frames is None else args.frames
    if not args.sens and not args.video:
        p.error("give .sens files or --video FILE")
    try:
        for sens in args.sens:
            if not sens.is_file():
                raise FileNotFoundError(f"{sens}: no such .sens file; check the path")
            print(f"imported {sens} -> {import_sens(sens, out, frames, args.force)}")
        if args.video:
            scene_id = args.video.stem if args.scene_id is None else args.scene_id
            dest = import_video(args.video, scene_id, out, frames, args.force)
            print(f"imported {args.video} -> {dest} (no depth, poses unknown)")
    except FileExistsError as e:
        print(f"proxy3d import-scannet: error: {e}", file=sys.stderr)
        return 1
    return 0
