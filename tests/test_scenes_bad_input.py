"""Bad input: each gives an error naming the scene, the file and the fix, or is skipped and counted."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from proxy3d.scenes.import_cli import main as import_main
from proxy3d.scenes.scannet import LABEL_TABLE, SceneDataError, list_scenes, load_objects, open_scene
from proxy3d.scenes.sens import SensError, SensReader, sens_from_export
from proxy3d.scenes.synth import SynthConfig, generate_dataset

SID = "scene0000_00"
NO_PARAMS = ["--params", str(Path(__file__).parent / "fixtures" / "defaults.yaml")]  # built-in defaults


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "data"
    generate_dataset(out, SynthConfig(scenes=1, seed=5, frames=6, width=64, height=48), progress=False)
    return out


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


def scene_dir(root: Path) -> Path:
    return root / "scenes" / SID


def test_non_finite_pose_fails_naming_scene_file_and_fix(root: Path) -> None:
    (scene_dir(root) / "pose" / "2.txt").write_text("-inf -inf -inf -inf\n" * 4)
    with pytest.raises(SceneDataError) as e:
        open_scene(root, SID, frames=6)
    msg = str(e.value)
    assert SID in msg and "pose/2.txt" in msg and "skip_invalid_frames" in msg
    scene = open_scene(root, SID, frames=6, skip_invalid_frames=True)
    assert scene.skipped == 1 and len(scene) == 5
    assert [f.index for f in scene.frames()] == [0, 1, 3, 4, 5]


def test_missing_pose_file_and_depth_count_mismatch(root: Path) -> None:
    (scene_dir(root) / "depth" / "4.png").unlink()
    (scene_dir(root) / "pose" / "1.txt").unlink()
    with pytest.raises(SceneDataError) as e:
        open_scene(root, SID)
    msg = str(e.value)
    assert SID in msg and "color/ has 6 frames, pose/ has 5, depth/ has 5" in msg and "skip_invalid_frames" in msg
    scene = open_scene(root, SID, skip_invalid_frames=True)
    assert scene.skipped == 2 and [f.index for f in scene.frames()] == [0, 2, 3, 5]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_fails_or_is_skipped(root: Path, damage: str) -> None:
    p = scene_dir(root) / "color" / "3.jpg"
    p.write_bytes(b"not a jpeg" if damage == "garbage" else p.read_bytes()[:200])
    with pytest.raises(SceneDataError) as e:
        list(open_scene(root, SID).frames())
    assert SID in str(e.value) and "color/3.jpg" in str(e.value) and "skip_invalid_frames" in str(e.value)
    scene = open_scene(root, SID, skip_invalid_frames=True)
    assert [f.index for f in scene.frames()] == [0, 1, 2, 4, 5] and scene.skipped == 1


def test_malformed_pose_and_alignment_name_the_file(root: Path) -> None:
    (scene_dir(root) / "pose" / "0.txt").write_text("1 2 3\n")
    with pytest.raises(SceneDataError, match=r"pose/0.txt holds a 1x3 matrix"):
        open_scene(root, SID)
    txt = scene_dir(root) / f"{SID}.txt"
    txt.write_text("axisAlignment = 1 0 0\n")
    with pytest.raises(SceneDataError, match=rf"{SID}.txt must be 16 finite numbers"):
        load_objects(root, SID)


def test_mesh_and_segs_must_match(root: Path) -> None:
    segs = scene_dir(root) / f"{SID}_vh_clean_2.0.010000.segs.json"
    segs.write_text('{"segIndices": [1, 2, 3]}')
    with pytest.raises(SceneDataError, match=r"3 segIndices but .* vertices"):
        load_objects(root, SID)


@pytest.mark.parametrize("content", [b"", b"\x04\x00\x00\x00" + b"\x00" * 10, b"\x07\x00\x00\x00" + b"\x00" * 400])
def test_unreadable_sens_names_file_and_fix(tmp_path: Path, content: bytes) -> None:
    sens = tmp_path / "scene0100_00.sens"
    sens.write_bytes(content)
    with pytest.raises(SensError) as e:
        SensReader(sens)
    assert str(sens) in str(e.value) and ("re-download" in str(e.value) or "re-export" in str(e.value))
    with pytest.raises(SensError, match="scene 'scene0100_00'"):
        import_main([str(sens), "--out", str(tmp_path / "out"), *NO_PARAMS])
    assert not (tmp_path / "out" / "scenes" / "scene0100_00").exists()
    assert not [p for p in (tmp_path / "out" / "scenes").iterdir()], "half-imported scene left behind"


def test_truncated_sens_frames_leave_nothing_behind(root: Path, tmp_path: Path) -> None:
    sens = tmp_path / f"{SID}.sens"
    sens_from_export(scene_dir(root), sens)
    sens.write_bytes(sens.read_bytes()[:-3000])
    with pytest.raises(SensError, match=r"frame \d of 6"):
        import_main([str(sens), "--out", str(tmp_path / "out"), "--frames", "0", *NO_PARAMS])
    assert not list((tmp_path / "out" / "scenes").iterdir())


def _sens_frame_offsets(sens: Path) -> list[int]:
    """Byte offset of each frame's header (camera_to_world, timestamps, colour and depth byte counts)."""
    b = sens.read_bytes()
    (strlen,) = struct.unpack_from("<Q", b, 4)
    off = 4 + 8 + strlen + 4 * 64 + 8 + 16 + 4
    (n,) = struct.unpack_from("<Q", b, off)
    out, off = [], off + 8
    for _ in range(n):
        out.append(off)
        nc, nd = struct.unpack_from("<QQ", b, off + 80)
        off += 96 + nc + nd
    return out


@pytest.mark.parametrize(("frame", "field", "kind"), [(0, 0, "colour"), (2, 1, "depth"), (1, 0, "colour")])
def test_sens_frame_with_a_huge_byte_count_is_a_sens_error(root: Path, tmp_path: Path, frame: int, field: int,
                                                         kind: str) -> None:
    """A corrupt colour/depth byte count (2**62) fails naming the file, the frame and the size before any
    read or seek (it used to raise MemoryError, which import-scannet does not catch); frame 1 is skipped."""
    sens = tmp_path / f"{SID}.sens"
    sens_from_export(scene_dir(root), sens)
    b = bytearray(sens.read_bytes())
    struct.pack_into("<Q", b, _sens_frame_offsets(sens)[frame] + 80 + 8 * field, 2**62)
    sens.write_bytes(bytes(b))
    want = rf"{re.escape(str(sens))}: frame {frame} of 6 claims {2**62} {kind} bytes but only \d+ bytes"
    with SensReader(sens) as r, pytest.raises(SensError, match=want):
        list(r.frames([0, 2, 3]))
    with pytest.raises(SensError, match=rf"scene '{SID}': {want}"):
        import_main([str(sens), "--out", str(tmp_path / "out"), "--frames", "0", *NO_PARAMS])
    assert not list((tmp_path / "out" / "scenes").iterdir())


def test_sens_header_with_a_huge_frame_count_is_a_sens_error(root: Path, tmp_path: Path) -> None:
    sens = tmp_path / f"{SID}.sens"
    sens_from_export(scene_dir(root), sens)
    b = bytearray(sens.read_bytes())
    struct.pack_into("<Q", b, _sens_frame_offsets(sens)[0] - 8, 2**62)
    sens.write_bytes(bytes(b))
    want = rf"{re.escape(str(sens))}: the header claims {2**62} frames but only \d+ bytes follow"
    with pytest.raises(SensError, match=want):
        import_main([str(sens), "--out", str(tmp_path / "out"), "--frames", "0", *NO_PARAMS])


def test_malformed_label_table_names_scene_file_and_line(root: Path) -> None:
    table = root / LABEL_TABLE
    where = re.escape(str(table))
    table.write_text("a\tb\tc\n")
    with pytest.raises(SceneDataError, match=rf"scene '{SID}': {where}:1: expected ScanNet's label table"):
        load_objects(root, SID)
    table.write_text("id\traw_category\tcategory\n1\tchair\tchair\n2\tbooks\n")
    with pytest.raises(SceneDataError, match=rf"{where}:3: 2 tab-separated columns, need raw_category"):
        load_objects(root, SID)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "scene0000_00/../x", "/abs", ""])
def test_scene_ids_with_separators_are_refused_before_touching_files(root: Path, bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a safe name"):
        open_scene(root, bad)
    with pytest.raises(ValueError, match="not a safe name"):
        load_objects(root, bad)
    with pytest.raises(ValueError, match="not a safe name"):
        import_main(["--video", str(tmp_path / "x.mp4"), "--scene-id", bad, "--out", str(tmp_path / "o"), *NO_PARAMS])
    assert not (tmp_path / "o").exists()


def test_missing_scene_and_missing_root(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="scene 'scene0999_00'.*proxy3d synth data"):
        open_scene(root, "scene0999_00")
    with pytest.raises(FileNotFoundError, match="proxy3d synth data"):
        list_scenes(root / "nope")
    assert np.array_equal(list_scenes(root), [SID])
