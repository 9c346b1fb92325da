""".sens round trip, import-scannet (.sens and video), and the export-layout reader on real-ScanNet quirks."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proxy3d import vocab
from proxy3d.scenes import export
from proxy3d.scenes.import_cli import main as import_main
from proxy3d.scenes.sampling import sample_indices
from proxy3d.scenes.scannet import LABEL_TABLE, load_objects, open_scene
from proxy3d.scenes.sens import SensFrame, SensHeader, SensReader, encode_depth, sens_from_export, write_sens
from proxy3d.scenes.synth import SynthConfig, generate_dataset

NO_PARAMS = ["--params", str(Path(__file__).parent / "fixtures" / "defaults.yaml")]  # built-in defaults
# the header of ScanNet's scannetv2-labels.combined.tsv; tests write hand-made rows
TSV_HEADER = "\t".join(["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass",
                        "nyu40class", "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55",
                        "synsetoffset", "wnsynsetid", "wnsynsetkey", "mpcat40index", "mpcat40"])


def write_label_table(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    """A label table with ScanNet's 17 columns; only id, raw_category and category are filled in."""
    lines = [f"{i}\t{raw}\t{cat}\t1" + "\t" * 13 for i, raw, cat in rows]
    path.write_text("\n".join([TSV_HEADER, *lines]) + "\n")
    return path


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("readers") / "data"
    generate_dataset(out, SynthConfig(scenes=1, seed=11, frames=5, width=96, height=72), progress=False)
    return out


def _header(n: int, w: int = 8, h: int = 6) -> SensHeader:
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(4, 4)).astype(np.float32) for _ in range(4)]
    return SensHeader("StructureSensor", *mats, "jpeg", "zlib_ushort", w, h, w, h, 1000.0, n)


def test_sens_round_trip_is_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = []
    for i in range(3):
        pose = rng.normal(size=(4, 4)).astype(np.float32)
        if i == 1:
            pose[:] = -np.inf  # ScanNet marks lost tracking like this
        frames.append(SensFrame(pose, 1000 * i, 1000 * i + 7, export.encode_jpeg(rng.integers(0, 255, (6, 8, 3), np.uint8)),
                                encode_depth(rng.integers(0, 8000, (6, 8)).astype(np.uint16))))
    header = _header(3)
    write_sens(tmp_path / "s.sens", header, frames)
    with SensReader(tmp_path / "s.sens") as r:
        h = r.header
        got = list(r.frames())
    assert (h.sensor_name, h.color_compression, h.depth_compression, h.depth_shift, h.num_frames) == (
        "StructureSensor", "jpeg", "zlib_ushort", 1000.0, 3)
    assert (h.color_width, h.color_height, h.depth_width, h.depth_height) == (8, 6, 8, 6)
    for a, b in zip((h.intrinsic_color, h.extrinsic_color, h.intrinsic_depth, h.extrinsic_depth),
                    (header.intrinsic_color, header.extrinsic_color, header.intrinsic_depth, header.extrinsic_depth),
                    strict=True):
        assert a.tobytes() == b.tobytes()
    assert [i for i, _ in got] == [0, 1, 2]
    for (_, g), f in zip(got, frames, strict=True):
        assert g.camera_to_world.tobytes() == f.camera_to_world.tobytes()
        assert (g.timestamp_color, g.timestamp_depth) == (f.timestamp_color, f.timestamp_depth)
        assert g.color_data == f.color_data and g.depth_data == f.depth_data
        assert np.array_equal(g.depth(h), np.frombuffer(zlib.decompress(f.depth_data), "<u2").reshape(6, 8))
        assert g.color(h).shape == (6, 8, 3)
    with SensReader(tmp_path / "s.sens") as r:
        assert [i for i, _ in r.frames([0, 2])] == [0, 2]


def _sens_from_scene(scene_dir: Path, sens: Path) -> None:
    """Pack an exported scene back into a .sens next to copies of its mesh files (like ScanNet's scans/)."""
    sens_from_export(scene_dir, sens)
    sid = scene_dir.name
    for name in (f"{sid}.txt", f"{sid}.aggregation.json", f"{sid}_vh_clean_2.ply",
                 f"{sid}_vh_clean_2.0.010000.segs.json"):
        shutil.copyfile(scene_dir / name, sens.parent / name)


def test_import_scannet_sens_reproduces_the_scene(synth_root: Path, tmp_path: Path) -> None:
    src = synth_root / "scenes" / "scene0000_00"
    (tmp_path / "scans").mkdir()
    sens = tmp_path / "scans" / "scene0000_00.sens"
    _sens_from_scene(src, sens)
    assert import_main([str(sens), "--out", str(tmp_path / "imported"), "--frames", "0", *NO_PARAMS]) == 0
    a, b = open_scene(synth_root, "scene0000_00", frames=5), open_scene(tmp_path / "imported", "scene0000_00", frames=5)
    assert len(a) == len(b) == 5
    for oa, ob in zip(a.objects, b.objects, strict=True):
        np.testing.assert_allclose(oa.aabb, ob.aabb, atol=1e-6)
    for fa, fb in zip(a.frames(), b.frames(), strict=True):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
        np.testing.assert_allclose(fa.pose, fb.pose, atol=1e-5)
    assert (tmp_path / "imported" / "scenes" / "scene0000_00" / "color" / "3.jpg").read_bytes() == (
        src / "color" / "3.jpg").read_bytes()
    # sampling: 3 of 5 frames keep their original indices
    assert import_main([str(sens), "--out", str(tmp_path / "few"), "--frames", "3", *NO_PARAMS]) == 0
    names = sorted(p.name for p in (tmp_path / "few" / "scenes" / "scene0000_00" / "color").iterdir())
    assert names == ["0.jpg", "2.jpg", "4.jpg"]


def test_import_video_samples_frames_without_depth_or_pose(tmp_path: Path) -> None:
    import av

    video = tmp_path / "walk.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0] = 12 * i
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert import_main(["--video", str(video), "--scene-id", "walk_00", "--out", str(tmp_path / "d"), "--frames", "4",
                        *NO_PARAMS]) == 0
    scene = open_scene(tmp_path / "d", "walk_00", frames=32)
    frames = list(scene.frames())
    assert [f.index for f in frames] == sample_indices(20, 4).tolist() == [0, 6, 13, 19]
    assert all(f.depth is None and np.isnan(f.pose).all() and f.rgb.shape == (48, 64, 3) for f in frames)
    assert frames[-1].rgb[..., 0].mean() > frames[0].rgb[..., 0].mean() + 100  # really later frames
    assert scene.objects == []


def test_colour_larger_than_depth_is_resized_to_depth_with_depth_intrinsics(synth_root: Path, tmp_path: Path) -> None:
    d = tmp_path / "scenes" / "scene0000_00"
    shutil.copytree(synth_root / "scenes" / "scene0000_00", d)
    for p in (d / "color").iterdir():  # like ScanNet: 1296x968 colour, 640x480 depth
        Image.open(p).resize((192, 144)).save(p, quality=95)
    K = np.loadtxt(d / "intrinsic" / "intrinsic_depth.txt")
    Kc = K.copy()
    Kc[:2] *= 2
    (d / "intrinsic" / "intrinsic_color.txt").write_text(export.format_matrix(Kc))
    f = next(open_scene(tmp_path, "scene0000_00").frames())
    assert f.rgb.shape == (72, 96, 3) and f.depth.shape == (72, 96) and f.instance.shape == (72, 96)
    np.testing.assert_allclose(f.K, K[:3, :3])
    ref = next(open_scene(synth_root, "scene0000_00").frames())
    assert np.abs(f.rgb.astype(int) - ref.rgb.astype(int)).mean() < 12


RAW = [(0, "kitchen cabinets"), (1, "books"), (2, "towels"), (3, "chair"), (4, "sofa"), (5, "vase"),
       (6, "blob")]


def _raw_label_scene(root: Path, sid: str = "scene0000_00") -> Path:
    """A scene whose aggregation carries ScanNet raw labels, one vertex per object."""
    d = root / "scenes" / sid
    (d / "color").mkdir(parents=True)
    n = len(RAW)
    xyz = np.repeat(np.arange(n, dtype=float)[:, None], 3, axis=1)
    groups = [(oid, label, [oid]) for oid, label in RAW]
    export.write_annotations(d, sid, groups, xyz, np.zeros((n, 3), np.uint8), np.arange(n))
    (d / f"{sid}.txt").write_text("axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n")
    return d


def test_raw_aggregation_labels_get_their_category_through_scannets_label_table(tmp_path: Path) -> None:
    """segGroups labels are ScanNet raw categories: the label table maps them to ScanNet200 names (as
    ScanNet200's preprocessing does), which are then looked up in the vocabulary; labels stay raw."""
    d = _raw_label_scene(tmp_path)
    cid = vocab.category_id
    # no table: the raw label itself is looked up (what the synthetic world relies on)
    assert [o.category for o in load_objects(tmp_path, d.name)] == [-1, -1, -1, cid("chair"), cid("sofa"),
                                                                     cid("vase"), -1]
    rows = [(29, "kitchen cabinets", "kitchen cabinet"), (22, "books", "book"), (31, "towels", "towel"),
            (2, "chair", "chair"), (6, "sofa", "couch"), (6, "sofa", "not the first row")]
    want = [cid("kitchen cabinet"), cid("book"), cid("towel"), cid("chair"), cid("couch"), cid("vase"), -1]
    assert min(want[:5]) >= 0 and cid("couch") != cid("sofa")
    for where in (tmp_path, tmp_path / "scenes", d):  # data root, folder of scenes, scene folder
        table = write_label_table(where / LABEL_TABLE, rows)
        objs = load_objects(tmp_path, d.name)
        assert [o.category for o in objs] == want, where
        assert [(o.object_id, o.label) for o in objs] == RAW
        table.unlink()


def test_import_scannet_copies_the_label_table_next_to_scans(synth_root: Path, tmp_path: Path) -> None:
    src = synth_root / "scenes" / "scene0000_00"
    (tmp_path / "scans" / "scene0000_00").mkdir(parents=True)
    sens = tmp_path / "scans" / "scene0000_00" / "scene0000_00.sens"  # the ScanNet release layout
    _sens_from_scene(src, sens)
    first = load_objects(synth_root, "scene0000_00")[0]
    other = "mattress" if first.label != "mattress" else "lamp"
    write_label_table(tmp_path / LABEL_TABLE, [(1, first.label, other)])
    assert import_main([str(sens), "--out", str(tmp_path / "imported"), "--frames", "2", *NO_PARAMS]) == 0
    assert (tmp_path / "imported" / "scenes" / "scene0000_00" / LABEL_TABLE).read_bytes() == (
        tmp_path / LABEL_TABLE).read_bytes()
    got = load_objects(tmp_path / "imported", "scene0000_00")[0]
    assert (got.label, got.category) == (first.label, vocab.category_id(other))
