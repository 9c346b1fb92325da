"""Reader of the ScanNet export layout (real ScanNet or ``proxy3d synth data`` / ``import-scannet`` output).

``open_scene(root, scene_id, frames=32)`` returns a :class:`ScanNetScene`: ground-truth objects (boxes in
the axis-aligned world frame, from ``_vh_clean_2.ply`` + ``segs.json`` + ``aggregation.json``) and a stream
of :class:`~proxy3d.types.Frame` s sampled uniformly, with poses in the world frame (``axisAlignment @
pose``). With depth, a frame is at the depth resolution (colour resized to it) with the depth intrinsics:
ScanNet's SensReader writes ``intrinsic_color.txt`` for the recorded 1296x968 colour even when it exports
colour resized, so the colour matrix cannot be trusted for exported images. Intrinsics are scaled to the
image size when ``<id>.txt`` gives the recorded size (``colorWidth``/``colorHeight``, ``depthWidth``/
``depthHeight``) and it differs; without those keys, a principal point outside the image is an error.

Two scene-folder layouts are read: the export layout (``intrinsic/intrinsic_{color,depth}.txt``,
``instance-filt/<i>.png``) and ScanNet's preprocessed ``scannet_frames_25k`` (``intrinsics_{color,depth}.txt``
at the scene root, ``instance/<i>.png``). The raw release (``scans/<id>/<id>.sens``) is converted by
``proxy3d import-scannet``; only its mesh annotations are read in place (``proxy3d score --boxes``).

An object's ``label`` is the aggregation's raw label (``"kitchen cabinets"``); its ``category`` is the
vocabulary id of ScanNet's category for that raw label (``"kitchen cabinet"``) from ScanNet's label table
``scannetv2-labels.combined.tsv`` (raw_category -> category, the names ScanNet200 uses), looked up in the
scene folder, the folder of scenes and the data root; without a table, or for a label it lacks, the raw
label itself is looked up (the synthetic world's labels are vocabulary names).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from proxy3d import vocab
from proxy3d.io import validate_scene_id
from proxy3d.scenes.ply import read_ply_vertices
from proxy3d.scenes.sampling import sample_indices
from proxy3d.types import Frame, SceneObject

log = logging.getLogger(__name__)

_SKIP_HINT = "set data.skip_invalid_frames=true to skip such frames"
LABEL_TABLE = "scannetv2-labels.combined.tsv"
RELEASE_FOLDERS = ("scans", "scans_test")  # folders of scene folders in ScanNet's release root
# per kind: the export layout's file, then scannet_frames_25k's
INTRINSIC_FILES = {"color": ("intrinsic/intrinsic_color.txt", "intrinsics_color.txt"),
                   "depth": ("intrinsic/intrinsic_depth.txt", "intrinsics_depth.txt")}
INSTANCE_FOLDERS = ("instance-filt", "instance")
LAYOUTS = ("the ScanNet export layout (intrinsic/intrinsic_color.txt, instance-filt/) and scannet_frames_25k "
           "(intrinsics_color.txt at the scene root, instance/)")


class SceneDataError(ValueError):
    """A scene folder is malformed: the message names the scene, the file and the fix."""


def scenes_dir(root: str | Path) -> Path:
    """``root/scenes`` when it exists (a data root), else ``root`` itself (a folder of scene folders)."""
    root = Path(root)
    return root / "scenes" if (root / "scenes").is_dir() else root


def list_scenes(root: str | Path) -> list[str]:
    """Sorted ids of the scene folders (those with a ``color/`` folder) under ``root``."""
    d = scenes_dir(root)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such folder; run 'proxy3d synth data' or point data.root at a ScanNet export")
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "color").is_dir())


def read_matrix(path: Path, scene_id: str) -> np.ndarray:
    """A 4x4 text matrix (ScanNet pose/intrinsic file); non-finite values are kept (callers check them)."""
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise SceneDataError(f"scene {scene_id!r}: cannot read {path} ({e}); it must hold a 4x4 matrix of numbers, "
                             "re-export it") from None
    if m.shape != (4, 4):
        raise SceneDataError(f"scene {scene_id!r}: {path} holds a {m.shape[0]}x{m.shape[1]} matrix, expected 4x4; "
                             "re-export it")
    return m


def read_scene_txt(path: Path) -> dict[str, str]:
    """``key = value`` lines of ScanNet's ``<scene_id>.txt``."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def axis_alignment(meta: dict[str, str], path: Path, scene_id: str) -> np.ndarray:
    """(4, 4) scan -> world matrix from ``axisAlignment``; identity (with a warning) when absent."""
    if "axisAlignment" not in meta:
        log.warning("scene %r: %s has no axisAlignment; using identity (world frame = scan frame)", scene_id, path)
        return np.eye(4)
    try:
        a = np.array([float(v) for v in meta["axisAlignment"].split()], dtype=np.float64)
    except ValueError:
        a = np.zeros(0)
    if a.size != 16 or not np.isfinite(a).all():
        raise SceneDataError(f"scene {scene_id!r}: axisAlignment in {path} must be 16 finite numbers; fix that line")
    return a.reshape(4, 4)


def find_label_table(root: str | Path, scene_dir: Path) -> Path | None:
    """ScanNet's ``scannetv2-labels.combined.tsv`` in the scene folder, the folder of scenes, the data root or,
    for ``scans/<id>``, the release root above ``scans/`` (where ScanNet ships it; the first found); None when
    there is none."""
    dirs = [scene_dir, scenes_dir(root), Path(root)]
    if scene_dir.parent.name in RELEASE_FOLDERS:
        dirs.append(scene_dir.parent.parent)
    for d in dict.fromkeys(dirs):
        if (d / LABEL_TABLE).is_file():
            return d / LABEL_TABLE
    return None


def read_label_table(path: Path) -> Mapping[str, str]:
    """``raw_category -> category`` of ScanNet's label table (columns found by their header names; the first
    row of a raw category wins, as in ScanNet200's preprocessing). Parsed once per file version."""
    st = path.stat()
    return _read_label_table(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _read_label_table(path: str, _mtime_ns: int, _size: int) -> Mapping[str, str]:
    lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
    header = lines[0].rstrip("\r").split("\t") if lines else []
    if "raw_category" not in header or "category" not in header:
        raise SceneDataError(f"{path}:1: expected ScanNet's label table header (id, raw_category, category, "
                             f"...), got {header[:4]}; use the scannetv2-labels.combined.tsv of the ScanNet "
                             "release")
    raw_col, cat_col = header.index("raw_category"), header.index("category")
    out: dict[str, str] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = line.rstrip("\r").split("\t")
        if len(row) <= max(raw_col, cat_col):
            raise SceneDataError(f"{path}:{n}: {len(row)} tab-separated columns, need raw_category (column "
                                 f"{raw_col + 1}) and category (column {cat_col + 1}); fix or re-download "
                                 "the table")
        if row[raw_col].strip() and row[cat_col].strip():
            out.setdefault(row[raw_col].strip(), row[cat_col].strip())
    log.info("%s: %d raw categories mapped to ScanNet categories", path, len(out))
    return MappingProxyType(out)


def label_category(label: str, table: Mapping[str, str]) -> int:
    """Vocabulary id of an aggregation label: of its ScanNet category in ``table`` (raw_category ->
    category), else of the label itself; -1 when neither is in the vocabulary."""
    mapped = table.get(label.strip())
    cid = vocab.category_id(mapped) if mapped is not None else -1
    return cid if cid >= 0 else vocab.category_id(label)


def _scene_folder(root: str | Path, scene_id: str) -> Path:
    validate_scene_id(scene_id, source=str(root))
    d = scenes_dir(root) / scene_id
    if not d.is_dir():
        raise FileNotFoundError(f"scene {scene_id!r}: no folder {d}; run 'proxy3d synth data' or "
                                "'proxy3d import-scannet', or check data.root")
    return d


def load_objects(root: str | Path, scene_id: str) -> list[SceneObject]:
    """Ground-truth objects of a scene: world-frame AABBs of each segGroup's mesh vertices.

    Returns [] (with a log line) when the scene has no aggregation (e.g. ScanNet test scenes, videos).
    """
    d = _scene_folder(root, scene_id)
    ply = d / f"{scene_id}_vh_clean_2.ply"
    segs_path = d / f"{scene_id}_vh_clean_2.0.010000.segs.json"
    agg_path = d / f"{scene_id}.aggregation.json"
    if not (ply.exists() and segs_path.exists() and agg_path.exists()):
        log.info("scene %r: no mesh annotations (%s + segs + aggregation): no ground-truth objects", scene_id, ply.name)
        return []
    align = axis_alignment(read_scene_txt(d / f"{scene_id}.txt"), d / f"{scene_id}.txt", scene_id)
    verts = read_ply_vertices(ply)
    xyz = np.stack([verts["x"], verts["y"], verts["z"]], axis=1).astype(np.float64)
    xyz = xyz @ align[:3, :3].T + align[:3, 3]
    try:
        seg = np.asarray(json.loads(segs_path.read_text())["segIndices"], dtype=np.int64)
        groups = json.loads(agg_path.read_text())["segGroups"]
    except (ValueError, KeyError, TypeError) as e:
        raise SceneDataError(f"scene {scene_id!r}: cannot parse {segs_path.name} / {agg_path.name} ({e}); "
                             "re-download the ScanNet annotation files") from None
    if seg.shape[0] != xyz.shape[0]:
        raise SceneDataError(f"scene {scene_id!r}: {segs_path} has {seg.shape[0]} segIndices but {ply} has "
                             f"{xyz.shape[0]} vertices; both must come from the same mesh (_vh_clean_2)")
    table_path = find_label_table(root, d)
    try:
        table = read_label_table(table_path) if table_path is not None else {}
    except SceneDataError as e:
        raise SceneDataError(f"scene {scene_id!r}: {e}") from None
    objects = []
    for g in groups:
        mask = np.isin(seg, np.asarray(g.get("segments", []), dtype=np.int64))
        oid = int(g.get("objectId", g.get("id", -1)))
        if not mask.any():
            log.warning("scene %r: object %d (%s) in %s has no vertices; skipped", scene_id, oid, g.get("label"),
                        agg_path.name)
            continue
        lo, hi = xyz[mask].min(axis=0), xyz[mask].max(axis=0)
        label = str(g.get("label", ""))
        objects.append(SceneObject(object_id=oid, label=label, category=label_category(label, table),
                                   aabb=np.concatenate([(lo + hi) / 2, hi - lo])))
    return sorted(objects, key=lambda o: o.object_id)


def recorded_size(meta: dict[str, str], kind: str, path: Path, scene_id: str) -> tuple[int, int] | None:
    """(width, height) the ``kind`` ("color"/"depth") intrinsics were calibrated for, from ``<id>.txt``;
    None when it does not say."""
    w, h = meta.get(f"{kind}Width"), meta.get(f"{kind}Height")
    if w is None or h is None:
        return None
    try:
        size = int(w), int(h)
    except ValueError:
        size = (0, 0)
    if min(size) <= 0:
        raise SceneDataError(f"scene {scene_id!r}: {kind}Width = {w!r}, {kind}Height = {h!r} in {path} are not "
                             "positive integers; fix those lines")
    return size


def fit_intrinsics(K: np.ndarray, recorded: tuple[int, int] | None, image: tuple[int, int], path: Path,
                   scene_id: str, kind: str) -> np.ndarray:
    """(3, 3) ``K`` of a ``recorded`` (w, h) image scaled to an ``image`` (w, h) resize of it; pixel centres are
    at integers (as ``unproject`` has them), so a principal point maps as ``c' = (c + 0.5) * s - 0.5``.
    Without ``recorded``, K is taken as is unless its principal point lies outside the image."""
    w, h = image
    if recorded is None:
        if not (0 <= K[0, 2] <= w and 0 <= K[1, 2] <= h):
            raise SceneDataError(
                f"scene {scene_id!r}: {path} has its principal point ({K[0, 2]:g}, {K[1, 2]:g}) outside the "
                f"{w}x{h} {kind} images, so it belongs to another resolution (ScanNet's SensReader keeps the "
                f"1296x968 colour matrix when it exports resized colour); add {kind}Width / {kind}Height of that "
                f"resolution to <scene_id>.txt (ScanNet's has them) or write the intrinsics of the {w}x{h} images")
        return K
    if recorded == (w, h):
        return K
    sx, sy = w / recorded[0], h / recorded[1]
    out = np.array(K, dtype=np.float64)
    out[0, :2] *= sx
    out[1, 1] *= sy
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def _frame_ids(folder: Path, suffixes: tuple[str, ...]) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    return {int(p.stem): p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.stem.isdigit()}


class ScanNetScene:
    """One scene folder: ``.objects``, ``len()`` sampled frames, ``.frames()`` streams them.

    ``skipped`` counts frames dropped as invalid (only with ``skip_invalid_frames=True``): missing colour/
    depth/pose files, non-finite poses, and images that fail to decode while streaming.
    """

    def __init__(self, root: str | Path, scene_id: str, frames: int = 32, skip_invalid_frames: bool = False):
        self.dir = _scene_folder(root, scene_id)
        self.scene_id = scene_id
        self.skip_invalid_frames = skip_invalid_frames
        self.skipped = 0
        d, sid = self.dir, scene_id
        txt = d / f"{sid}.txt"
        self.meta = read_scene_txt(txt)
        self.align = axis_alignment(self.meta, txt, sid)
        self.poses_unknown = self.meta.get("poseSource", "") == "unknown"
        self.depth_shift = float(self.meta.get("depthShift", 1000.0))
        color = _frame_ids(d / "color", (".jpg", ".jpeg", ".png"))
        if not color:
            raise SceneDataError(f"scene {sid!r}: {d / 'color'} has no <i>.jpg frames; re-export the scene")
        depth = _frame_ids(d / "depth", (".png",)) if (d / "depth").is_dir() else None
        pose = _frame_ids(d / "pose", (".txt",))
        ids = set(color) & set(pose) & (set(depth) if depth is not None else set(color))
        everything = set(color) | set(pose) | (set(depth) if depth is not None else set())
        if ids != everything:
            counts = f"color/ has {len(color)} frames, pose/ has {len(pose)}" + (
                f", depth/ has {len(depth)}" if depth is not None else "")
            missing = sorted(everything - ids)[:5]
            if not skip_invalid_frames:
                raise SceneDataError(f"scene {sid!r}: frame count mismatch in {d}: {counts} (incomplete frames "
                                     f"e.g. {missing}); re-export the scene or {_SKIP_HINT}")
            log.warning("scene %r: %s; skipping %d incomplete frames", sid, counts, len(everything - ids))
            self.skipped += len(everything - ids)
        self._color, self._depth = color, depth
        inst_dir = next((d / n for n in INSTANCE_FOLDERS if (d / n).is_dir()), d / INSTANCE_FOLDERS[0])
        self._instance = _frame_ids(inst_dir, (".png",))
        self._poses: dict[int, np.ndarray] = {}
        bad: list[int] = []
        for i in sorted(ids):
            m = read_matrix(pose[i], sid)
            if np.isfinite(m).all() or (self.poses_unknown and np.isnan(m).all()):
                self._poses[i] = m
            else:
                bad.append(i)
        if bad:
            if not skip_invalid_frames:
                raise SceneDataError(f"scene {sid!r}: {len(bad)} of {len(ids)} frames have a non-finite pose "
                                     f"(e.g. {pose[bad[0]]} holds inf/nan: tracking lost); {_SKIP_HINT}")
            log.warning("scene %r: skipping %d frames with non-finite poses", sid, len(bad))
            self.skipped += len(bad)
        if self.poses_unknown:
            log.warning("scene %r: camera poses are unknown (%s says poseSource = unknown): frames carry NaN poses",
                        sid, txt.name)
        valid = sorted(self._poses)
        if not valid:
            raise SceneDataError(f"scene {sid!r}: no valid frame left in {d}; re-export the scene")
        self.frame_ids = [valid[i] for i in sample_indices(len(valid), frames)]
        kinds = ("color", "depth") if depth is not None else ("color",)
        self._K_files = {k: self._intrinsics_file(k) for k in kinds}
        self.K_color = read_matrix(self._K_files["color"], sid)[:3, :3]
        self.K_depth = read_matrix(self._K_files["depth"], sid)[:3, :3] if depth is not None else None
        self._recorded = {k: recorded_size(self.meta, k, txt, sid) for k in kinds}
        self._fitted: dict[tuple[str, int, int], np.ndarray] = {}
        try:  # header only: intrinsics of another resolution fail at open, not mid-stream
            with Image.open((depth if depth is not None else color)[self.frame_ids[0]]) as im:
                self.intrinsics(kinds[-1], *im.size)
        except OSError:
            pass  # an undecodable image is reported while streaming, where skip_invalid_frames applies
        self.objects = load_objects(root, scene_id)

    def _intrinsics_file(self, kind: str) -> Path:
        for rel in INTRINSIC_FILES[kind]:
            if (self.dir / rel).is_file():
                return self.dir / rel
        raise SceneDataError(f"scene {self.scene_id!r}: no {kind} intrinsics in {self.dir}: expected "
                             f"{' or '.join(INTRINSIC_FILES[kind])}; supported layouts are {LAYOUTS}; re-export "
                             "the scene")

    def intrinsics(self, kind: str, width: int, height: int) -> np.ndarray:
        """(3, 3) intrinsics of the ``kind`` images at ``width`` x ``height`` (see the module docstring)."""
        key = (kind, width, height)
        if key not in self._fitted:
            K = self.K_depth if kind == "depth" else self.K_color
            self._fitted[key] = fit_intrinsics(K, self._recorded[kind], (width, height), self._K_files[kind],
                                               self.scene_id, kind)
        return self._fitted[key]

    def __len__(self) -> int:
        return len(self.frame_ids)

    @staticmethod
    def _image(path: Path, rgb: bool = False) -> np.ndarray:
        """Decode an image fully (a truncated or corrupt file raises OSError): (H, W, 3) uint8 or (H, W)."""
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB") if rgb else im)

    def frames(self) -> Iterator[Frame]:
        """Stream the sampled frames (decoded one at a time)."""
        for i in self.frame_ids:
            paths = [self._color[i]] + ([self._depth[i]] if self._depth is not None else [])
            try:
                rgb = self._image(self._color[i], rgb=True)
                depth = (self._image(self._depth[i]).astype(np.float32) / self.depth_shift
                         if self._depth is not None else None)
                inst_path = self._instance.get(i)
                inst = self._image(inst_path).astype(np.int32) - 1 if inst_path is not None else None
            except OSError as e:
                if not self.skip_invalid_frames:
                    raise SceneDataError(f"scene {self.scene_id!r}: cannot decode frame {i} ({', '.join(map(str, paths))}):"
                                         f" {e}; re-export that frame or {_SKIP_HINT}") from None
                log.warning("scene %r: skipping frame %d: %s", self.scene_id, i, e)
                self.skipped += 1
                continue
            if depth is not None:
                h, w = depth.shape
                if rgb.shape[:2] != depth.shape:
                    rgb = np.array(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
                K = self.intrinsics("depth", w, h)
            else:
                K = self.intrinsics("color", rgb.shape[1], rgb.shape[0])
            if inst is not None and inst.shape != rgb.shape[:2]:
                h, w = rgb.shape[:2]
                inst = np.array(Image.fromarray(inst).resize((w, h), Image.NEAREST))
            pose = self._poses[i] if self.poses_unknown else self.align @ self._poses[i]
            yield Frame(rgb=rgb, depth=depth, pose=pose, K=np.array(K, dtype=np.float64), instance=inst, index=i)


def open_scene(root: str | Path, scene_id: str, frames: int = 32, skip_invalid_frames: bool = False) -> ScanNetScene:
    """Open ``<root>/scenes/<scene_id>`` (or ``<root>/<scene_id>``); see :class:`ScanNetScene`."""
    return ScanNetScene(root, scene_id, frames=frames, skip_invalid_frames=skip_invalid_frames)
