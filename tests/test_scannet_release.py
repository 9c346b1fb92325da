"""Real ScanNet v2 data: the release layout (scans/<id>/ with .sens, 2D instance zip, label table next to
scans/), SensReader exports with resized colour, and the scannet_frames_25k layout.

Inputs are written byte by byte as ScanNet's own tools write them (SensorData.py, the release files), not
with proxy3d's writers, so a shared misunderstanding cannot hide a bug.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proxy3d import vocab
from proxy3d.eval.records import load_gt_boxes
from proxy3d.eval.score import score_file
from proxy3d.perception.geometry import unproject
from proxy3d.scenes.import_cli import main as import_main
from proxy3d.scenes.scannet import LABEL_TABLE, SceneDataError, load_objects, open_scene
from proxy3d.scenes.sens import SensReader

SID = "scene0000_00"
NO_PARAMS = ["--params", str(Path(__file__).parent / "fixtures" / "defaults.yaml")]  # built-in defaults
CW, CH, DW, DH = 1296, 968, 640, 480
# scene0000_00's calibration: colour intrinsics belong to 1296x968, depth intrinsics to 640x480
KC = np.array([[1170.187988, 0, 647.75, 0], [0, 1170.187988, 483.75, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
KD = np.array([[571.623718, 0, 319.5, 0], [0, 571.623718, 239.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
SCENE_TXT = (  # as ScanNet writes it (no depthShift key)
    "axisAlignment = 0.945519 0.325568 0.000000 -5.384390 -0.325568 0.945519 0.000000 -2.848260 0.000000 "
    "0.000000 1.000000 -0.064350 0.000000 0.000000 0.000000 1.000000 \n"
    f"colorHeight = {CH}\ncolorWidth = {CW}\ndepthHeight = {DH}\ndepthWidth = {DW}\n"
    "fx_color = 1170.187988\nfx_depth = 571.623718\nfy_color = 1170.187988\nfy_depth = 571.623718\n"
    "mx_color = 647.750000\nmx_depth = 319.500000\nmy_color = 483.750000\nmy_depth = 239.500000\n"
    "numColorFrames = 3\nnumDepthFrames = 3\nnumIMUmeasurements = 0\nsceneType = Apartment\n")
TSV = ("id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\teigen13class\tModelNet40\t"
       "ModelNet10\tShapeNetCore55\tsynsetoffset\twnsynsetid\twnsynsetkey\tmpcat40\tmpcat40index\n"
       "22\tbooks\tbook\t1678\t23\t2\tbook\tbooks\tBooks\t\t\t\t\tn02870526\tbook.n.11\tobjects\t39\n"
       "29\tkitchen cabinets\tkitchen cabinet\t289\t3\t6\tcabinet\tcabinet\tFurniture\t\t\tcabinet\t2933112\t"
       "n02933112\tcabinet.n.01\tcabinet\t7\n")
LOST = np.full((4, 4), -np.inf)  # ScanNet's pose when tracking was lost


def _pose(x: float) -> np.ndarray:
    p = np.eye(4)
    p[:3, 3] = (x, 2.0, 0.5)
    return p


def _jpeg(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG")
    return b.getvalue()


def _png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def _depth_mm() -> np.ndarray:
    """(DH, DW) uint16: a ramp, so a wrong principal point or focal length moves the points."""
    return (1500 + np.add.outer(np.arange(DH), np.arange(DW))).astype(np.uint16)


def _save_mat(m: np.ndarray, path: Path) -> None:
    """As SensorData.py's save_mat_to_file: one row per line, '%f'."""
    path.write_text("".join(" ".join(f"{v:f}" for v in row) + "\n" for row in m))


def _write_sens(path: Path, poses: list[np.ndarray]) -> None:
    """A version-4 SensorData file: 1296x968 JPEG colour, 640x480 zlib depth, as ScanNet ships it."""
    buf = [struct.pack("<IQ", 4, 15), b"StructureSensor"]
    for m in (KC, np.eye(4), KD, np.eye(4)):
        buf.append(np.asarray(m, "<f4").tobytes())
    buf.append(struct.pack("<iiIIIIfQ", 2, 1, CW, CH, DW, DH, 1000.0, len(poses)))
    for i, p in enumerate(poses):
        col = np.full((CH, CW, 3), 40 * i, np.uint8)
        c, d = _jpeg(col), zlib.compress(_depth_mm().tobytes())
        buf += [np.asarray(p, "<f4").tobytes(), struct.pack("<QQQQ", 1000 * i, 1000 * i, len(c), len(d)), c, d]
    buf.append(struct.pack("<Q", 0))  # IMU frames
    path.write_bytes(b"".join(buf))


def _release(root: Path, poses: list[np.ndarray], instance_frames: int = 0) -> Path:
    """``root/scans/<id>/`` as the ScanNet release has it, label table next to ``scans/``; returns the .sens."""
    s = root / "scans" / SID
    s.mkdir(parents=True)
    _write_sens(s / f"{SID}.sens", poses)
    (s / f"{SID}.txt").write_text(SCENE_TXT)
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1], [3, 3, 0], [4, 3, 0], [3, 4, 2], [4, 4, 2]])
    rec = np.zeros(len(v), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                  ("blue", "u1"), ("alpha", "u1")])
    rec["x"], rec["y"], rec["z"] = v.T
    faces = b"".join(struct.pack("<Biii", 3, a, b, c) for a, b, c in [(0, 1, 2), (4, 5, 6)])
    hdr = ("ply\nformat binary_little_endian 1.0\ncomment VCGLIB generated\nelement vertex 8\n"
           + "".join(f"property float {a}\n" for a in "xyz")
           + "".join(f"property uchar {c}\n" for c in ("red", "green", "blue", "alpha"))
           + "element face 2\nproperty list uchar int vertex_indices\nend_header\n")
    (s / f"{SID}_vh_clean_2.ply").write_bytes(hdr.encode() + rec.tobytes() + faces)
    (s / f"{SID}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"sceneId": SID,
                                                                        "segIndices": [5] * 4 + [9] * 4}))
    (s / f"{SID}.aggregation.json").write_text(json.dumps({"sceneId": f"scannet.{SID}", "segGroups": [
        {"id": 0, "objectId": 0, "segments": [5], "label": "kitchen cabinets"},
        {"id": 1, "objectId": 1, "segments": [9], "label": "books"}]}))
    if instance_frames:
        with zipfile.ZipFile(s / f"{SID}_2d-instance-filt.zip", "w") as z:
            for i in range(instance_frames):
                z.writestr(f"instance-filt/{i}.png", _png(_instance(i)))
    (root / LABEL_TABLE).write_text(TSV)
    return s / f"{SID}.sens"


def _instance(i: int) -> np.ndarray:
    """(DH, DW) uint8 as in _2d-instance-filt.zip: objectId + 1, 0 = none; differs per frame."""
    a = np.zeros((DH, DW), np.uint8)
    a[:, : DW // 2] = 1
    a[: 10 * (i + 1), DW // 2:] = 2
    return a


def _sensreader_export(d: Path, colour_size: tuple[int, int], depth: bool = True, txt: bool = True) -> Path:
    """A scene as ScanNet's SensReader exports it with colour resized (export_color_images(image_size=...)):
    intrinsic_color.txt still holds the 1296x968 matrix (export_intrinsics writes the header's)."""
    for sub in ("color", "pose", "intrinsic") + (("depth",) if depth else ()):
        (d / sub).mkdir(parents=True)
    for i in range(2):
        rgb = np.zeros((colour_size[1], colour_size[0], 3), np.uint8)
        rgb[..., 0] = 60 * i
        (d / "color" / f"{i}.jpg").write_bytes(_jpeg(rgb))
        if depth:
            (d / "depth" / f"{i}.png").write_bytes(_png(_depth_mm()))
        _save_mat(_pose(i), d / "pose" / f"{i}.txt")
    _save_mat(KC, d / "intrinsic" / "intrinsic_color.txt")
    _save_mat(KD, d / "intrinsic" / "intrinsic_depth.txt")
    if txt:
        (d / f"{d.name}.txt").write_text(SCENE_TXT)
    return d


# ---------------------------------------------------------------------------- 1. intrinsics of resized colour
def test_same_size_export_unprojects_depth_with_depth_intrinsics(tmp_path: Path) -> None:
    """640x480 colour + 640x480 depth (a common SensReader export): the points must come from K_depth,
    not from the 1296x968 colour matrix in intrinsic_color.txt."""
    _sensreader_export(tmp_path / SID, (DW, DH))
    f = next(open_scene(tmp_path, SID).frames())
    assert f.rgb.shape == (DH, DW, 3) and f.depth.shape == (DH, DW)
    np.testing.assert_allclose(f.K, KD[:3, :3])
    got, _ = unproject(f.depth, f.K, np.eye(4))
    want, _ = unproject(f.depth, KD[:3, :3], np.eye(4))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_colour_only_scene_scales_colour_intrinsics_to_the_image_size(tmp_path: Path) -> None:
    """No depth: the colour matrix is scaled from <id>.txt's colorWidth x colorHeight to the image size
    (pixel centres at integers: c' = (c + 0.5) * s - 0.5)."""
    _sensreader_export(tmp_path / SID, (DW, DH), depth=False)
    f = next(open_scene(tmp_path, SID).frames())
    s = DW / CW, DH / CH
    want = np.array([[KC[0, 0] * s[0], 0, (KC[0, 2] + 0.5) * s[0] - 0.5],
                     [0, KC[1, 1] * s[1], (KC[1, 2] + 0.5) * s[1] - 0.5], [0, 0, 1]])
    np.testing.assert_allclose(f.K, want, rtol=1e-6)


def test_intrinsics_of_another_resolution_without_sizes_fail_naming_the_fix(tmp_path: Path) -> None:
    """No depth and no <id>.txt sizes: a principal point outside the image cannot be this image's matrix."""
    _sensreader_export(tmp_path / SID, (DW, DH), depth=False, txt=False)
    with pytest.raises(SceneDataError, match=r"intrinsic_color\.txt.*principal point.*colorWidth"):
        open_scene(tmp_path, SID)


# ---------------------------------------------------------------------------- 2. instance maps from the zip
def test_import_extracts_the_2d_instance_maps_of_the_sampled_frames(tmp_path: Path) -> None:
    sens = _release(tmp_path / "release", [_pose(0), _pose(0.1), _pose(0.2)], instance_frames=3)
    out = tmp_path / "data"
    assert import_main([str(sens), "--out", str(out), "--frames", "2", *NO_PARAMS]) == 0
    inst = out / "scenes" / SID / "instance-filt"
    assert sorted(p.name for p in inst.iterdir()) == ["0.png", "2.png"]
    frames = list(open_scene(out, SID).frames())
    assert [f.index for f in frames] == [0, 2]
    for f in frames:
        assert f.rgb.shape == (DH, DW, 3)
        np.testing.assert_array_equal(f.instance, _instance(f.index).astype(np.int32) - 1)


# ---------------------------------------------------------------------------- 3. --boxes on the release root
def test_label_table_next_to_scans_maps_raw_labels(tmp_path: Path) -> None:
    root = tmp_path / "scannet"
    _release(root, [_pose(0)])
    objs = load_objects(root / "scans", SID)
    assert [(o.label, o.category) for o in objs] == [("kitchen cabinets", vocab.category_id("kitchen cabinet")),
                                                     ("books", vocab.category_id("book"))]


def test_score_boxes_reads_the_release_root(tmp_path: Path) -> None:
    """README's `proxy3d score --boxes /data/scannet`: scenes are in scans/<id>; a perfect box scores 1."""
    root = tmp_path / "scannet"
    _release(root, [_pose(0)])
    objs = load_objects(root / "scans", SID)
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps([{"scene_id": SID, "object_id": "0", "object_name": "kitchen_cabinets",
                                "ann_id": "0", "description": "the cabinet"}]))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"scene_id": SID, "object_id": 0, "ann_id": 0, "bbox": objs[0].aabb.tolist()}]))
    assert score_file("scanrefer", pred, [ann], root)["acc@0.5"] == 1.0
    assert sorted(load_gt_boxes(root, {SID})[SID]) == [0, 1]


def test_score_boxes_without_the_scenes_fails_and_partial_warns(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "scannet"
    _release(root, [_pose(0)])
    with pytest.raises(FileNotFoundError, match=r"--boxes .*scans/<id>"):
        load_gt_boxes(tmp_path, {SID})
    with caplog.at_level(logging.WARNING):
        boxes = load_gt_boxes(root, {SID, "scene0999_00"})
    assert set(boxes) == {SID}
    assert "1 of 2 scenes" in caplog.text and "scene0999_00" in caplog.text


# ---------------------------------------------------------------------------- 4. frames whose tracking was lost
def test_import_samples_only_frames_with_a_finite_pose(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sens = _release(tmp_path / "release", [_pose(0), LOST, _pose(0.2), LOST, _pose(0.4)])
    with SensReader(sens) as r:
        poses = r.poses()
        assert poses.shape == (5, 4, 4) and [bool(np.isfinite(p).all()) for p in poses] == [1, 0, 1, 0, 1]
        assert [i for i, _ in r.frames([2, 4])] == [2, 4]  # poses() leaves frames() working
    with caplog.at_level(logging.WARNING):
        assert import_main([str(sens), "--out", str(tmp_path / "all"), "--frames", "0", *NO_PARAMS]) == 0
    assert "2 of 5 frames" in caplog.text
    assert open_scene(tmp_path / "all", SID, frames=0).frame_ids == [0, 2, 4]  # no skip_invalid_frames needed
    assert import_main([str(sens), "--out", str(tmp_path / "two"), "--frames", "2", *NO_PARAMS]) == 0
    assert open_scene(tmp_path / "two", SID, frames=0).frame_ids == [0, 4]


# ---------------------------------------------------------------------------- 5. scannet_frames_25k
def test_frames_25k_layout_reads_root_intrinsics_and_instance_folder(tmp_path: Path) -> None:
    d = tmp_path / "scannet_frames_25k" / SID
    for sub in ("color", "depth", "pose", "instance", "label"):
        (d / sub).mkdir(parents=True)
    for i in (0, 100):
        (d / "color" / f"{i:06d}.jpg").write_bytes(_jpeg(np.zeros((DH, DW, 3), np.uint8)))
        (d / "depth" / f"{i:06d}.png").write_bytes(_png(_depth_mm()))
        (d / "instance" / f"{i:06d}.png").write_bytes(_png(_instance(i // 100)))
        _save_mat(_pose(i / 100), d / "pose" / f"{i:06d}.txt")
    _save_mat(KC, d / "intrinsics_color.txt")
    _save_mat(KD, d / "intrinsics_depth.txt")
    frames = list(open_scene(d.parent, SID).frames())
    assert [f.index for f in frames] == [0, 100]
    np.testing.assert_allclose(frames[0].K, KD[:3, :3])
    np.testing.assert_array_equal(frames[1].instance, _instance(1).astype(np.int32) - 1)


def test_missing_intrinsics_name_the_supported_layouts(tmp_path: Path) -> None:
    d = _sensreader_export(tmp_path / SID, (DW, DH))
    shutil.rmtree(d / "intrinsic")
    with pytest.raises(SceneDataError, match=r"intrinsic/intrinsic_color\.txt.*intrinsics_color\.txt"):
        open_scene(tmp_path, SID)
