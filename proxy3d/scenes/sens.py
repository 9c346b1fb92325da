"""ScanNet ``.sens`` files (SensorData, version 4): reader and writer.

Layout (little-endian, as in ScanNet's ``SensReader/python/SensorData.py`` and ``c++/src/sensorData.h``)::

    uint32 version (= 4) | uint64 strlen | char[strlen] sensor name
    float32[16] intrinsic_color | extrinsic_color | intrinsic_depth | extrinsic_depth   (4x4, row-major)
    int32 color compression (-1 unknown, 0 raw, 1 png, 2 jpeg) | int32 depth compression (-1 unknown,
    0 raw_ushort, 1 zlib_ushort, 2 occi_ushort) | uint32 color width, color height, depth width, depth height
    float32 depth shift (1000 = mm) | uint64 number of frames
    per frame: float32[16] camera_to_world | uint64 timestamp color | uint64 timestamp depth
               uint64 color bytes | uint64 depth bytes | color data | depth data
    (IMU frames follow; they are not read)
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from proxy3d.io import atomic_path

VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
_FRAME_HEAD = 64 + 32  # camera_to_world, two timestamps, two byte counts


class SensError(ValueError):
    """A ``.sens`` file cannot be read; the message names the file and the fix."""


@dataclass
class SensHeader:
    """Everything before the frames. Matrices: (4, 4) float32."""

    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str
    depth_compression: str
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float
    num_frames: int
    version: int = VERSION


@dataclass
class SensFrame:
    """One frame: camera_to_world (4, 4) float32 (scan frame; -inf when tracking was lost) and raw bytes."""

    camera_to_world: np.ndarray
    timestamp_color: int
    timestamp_depth: int
    color_data: bytes
    depth_data: bytes

    def color(self, h: SensHeader) -> np.ndarray:
        """Decoded colour (color_height, color_width, 3) uint8."""
        if h.color_compression == "raw":
            return np.frombuffer(self.color_data, np.uint8).reshape(h.color_height, h.color_width, 3)
        if h.color_compression not in ("jpeg", "png"):
            raise SensError(f"colour compression {h.color_compression!r} is not supported (jpeg, png, raw)")
        with Image.open(io.BytesIO(self.color_data)) as im:
            return np.array(im.convert("RGB"))

    def depth(self, h: SensHeader) -> np.ndarray:
        """Decoded depth (depth_height, depth_width) uint16 in 1/depth_shift metres."""
        if h.depth_compression == "zlib_ushort":
            raw = zlib.decompress(self.depth_data)
        elif h.depth_compression == "raw_ushort":
            raw = self.depth_data
        else:
            raise SensError(f"depth compression {h.depth_compression!r} is not supported (zlib_ushort, raw_ushort)")
        return np.frombuffer(raw, dtype="<u2").reshape(h.depth_height, h.depth_width)


def _read(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise SensError(f"{path}: file ends inside the {what} (wanted {n} bytes, got {len(b)}): the .sens is truncated"
                        " or not a ScanNet SensorData file; re-download it")
    return b


def _mat(f: BinaryIO, path: Path, what: str) -> np.ndarray:
    return np.frombuffer(_read(f, 64, path, what), dtype="<f4").reshape(4, 4).astype(np.float32)


class SensReader:
    """Open a ``.sens`` file: ``.header`` at once, frames streamed by :meth:`frames`, poses alone by
    :meth:`poses`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._f: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        except OSError as e:
            raise SensError(f"{self.path}: cannot open ({e.strerror}); check the path") from None
        try:
            self.header = self._read_header()
        except Exception:
            self._f.close()
            raise
        self._frames_start = self._f.tell()

    def _read_header(self) -> SensHeader:
        f, p = self._f, self.path
        (version,) = struct.unpack("<I", _read(f, 4, p, "header"))
        if version != VERSION:
            raise SensError(f"{p}: SensorData version {version}, expected {VERSION}: not a ScanNet .sens file "
                            "(or a newer format); re-export it with ScanNet's SensReader")
        (strlen,) = struct.unpack("<Q", _read(f, 8, p, "header"))
        if strlen > 4096:
            raise SensError(f"{p}: sensor name length {strlen} is implausible: the file is corrupt; re-download it")
        name = _read(f, strlen, p, "header").decode("utf-8", errors="replace")
        mats = [_mat(f, p, "header") for _ in range(4)]
        cc, dc = struct.unpack("<ii", _read(f, 8, p, "header"))
        cw, ch, dw, dh = struct.unpack("<IIII", _read(f, 16, p, "header"))
        (shift,) = struct.unpack("<f", _read(f, 4, p, "header"))
        (n,) = struct.unpack("<Q", _read(f, 8, p, "header"))
        if cc not in COLOR_COMPRESSION or dc not in DEPTH_COMPRESSION:
            raise SensError(f"{p}: unknown compression codes (colour {cc}, depth {dc}): the file is corrupt")
        left = self._bytes_left()
        if n * _FRAME_HEAD > left:
            raise SensError(f"{p}: the header claims {n} frames but only {left} bytes follow it (each frame "
                            f"takes at least {_FRAME_HEAD}): the .sens is corrupt or truncated; re-download "
                            "it")
        return SensHeader(name, *mats, COLOR_COMPRESSION[cc], DEPTH_COMPRESSION[dc], cw, ch, dw, dh, float(shift), n)

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[tuple[int, SensFrame]]:
        """Yield ``(index, frame)`` for ``indices`` (sorted; all when None), skipping other frames' bytes."""
        wanted = None if indices is None else set(int(i) for i in indices)
        last = self.header.num_frames - 1 if wanted is None else max(wanted, default=-1)
        self._f.seek(self._frames_start)
        for i in range(last + 1):
            what = f"frame {i} of {self.header.num_frames}"
            pose, tc, td, nc, nd = self._frame_head(what)
            if wanted is not None and i not in wanted:
                self._f.seek(nc + nd, io.SEEK_CUR)
                continue
            yield i, SensFrame(pose, tc, td, _read(self._f, nc, self.path, what), _read(self._f, nd, self.path, what))

    def poses(self) -> np.ndarray:
        """(num_frames, 4, 4) float32 camera_to_world of every frame (-inf where tracking was lost), seeking
        past the images, so frames can be chosen by pose before any image is read."""
        out = np.empty((self.header.num_frames, 4, 4), dtype=np.float32)
        self._f.seek(self._frames_start)
        for i in range(self.header.num_frames):
            out[i], _, _, nc, nd = self._frame_head(f"frame {i} of {self.header.num_frames}")
            self._f.seek(nc + nd, io.SEEK_CUR)
        return out

    def _frame_head(self, what: str) -> tuple[np.ndarray, int, int, int, int]:
        """Pose, timestamps and image byte counts of the frame at the file position (left at its images)."""
        head = _read(self._f, _FRAME_HEAD, self.path, what)
        pose = np.frombuffer(head[:64], dtype="<f4").reshape(4, 4).astype(np.float32)
        tc, td, nc, nd = struct.unpack("<QQQQ", head[64:])
        left = self._bytes_left()
        # checked before reading or seeking: a corrupt size (2**62) must not try to allocate that much
        for kind, size, avail in (("colour", nc, left), ("depth", nd, left - nc)):
            if size > avail:
                raise SensError(f"{self.path}: {what} claims {size} {kind} bytes but only {avail} bytes "
                                "are left in the file: the .sens is corrupt or truncated; re-download it")
        return pose, tc, td, nc, nd

    def _bytes_left(self) -> int:
        return os.fstat(self._f.fileno()).st_size - self._f.tell()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SensReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_sens(path: str | Path, header: SensHeader, frames: list[SensFrame]) -> None:
    """Write a version-4 ``.sens`` file atomically (``header.num_frames`` is taken from ``frames``)."""
    cc = {v: k for k, v in COLOR_COMPRESSION.items()}[header.color_compression]
    dc = {v: k for k, v in DEPTH_COMPRESSION.items()}[header.depth_compression]
    name = header.sensor_name.encode("utf-8")
    parts = [struct.pack("<IQ", VERSION, len(name)), name]
    parts += [np.asarray(m, dtype="<f4").reshape(16).tobytes() for m in
              (header.intrinsic_color, header.extrinsic_color, header.intrinsic_depth, header.extrinsic_depth)]
    parts.append(struct.pack("<iiIIIIfQ", cc, dc, header.color_width, header.color_height, header.depth_width,
                             header.depth_height, header.depth_shift, len(frames)))
    for fr in frames:
        parts.append(np.asarray(fr.camera_to_world, dtype="<f4").reshape(16).tobytes())
        parts.append(struct.pack("<QQQQ", fr.timestamp_color, fr.timestamp_depth, len(fr.color_data),
                                 len(fr.depth_data)))
        parts += [fr.color_data, fr.depth_data]
    parts.append(struct.pack("<Q", 0))  # number of IMU frames
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(parts))


def encode_depth(depth: np.ndarray) -> bytes:
    """(H, W) uint16 -> zlib_ushort bytes."""
    return zlib.compress(np.ascontiguousarray(depth, dtype="<u2").tobytes())


def sens_from_export(scene_dir: str | Path, path: str | Path) -> None:
    """Pack an exported scene folder (colour JPEGs verbatim, uint16 depth PNGs, scan-frame poses) into a
    ``.sens`` file; the inverse of ``proxy3d import-scannet`` for frames (mesh files are not included)."""
    d = Path(scene_dir)
    ids = sorted(int(p.stem) for p in (d / "color").glob("*.jpg") if p.stem.isdigit())
    if not ids:
        raise ValueError(f"{d / 'color'}: no <i>.jpg frames to pack; point at a scene folder of the export layout")
    K_color = np.loadtxt(d / "intrinsic" / "intrinsic_color.txt").astype(np.float32)
    K_depth = np.loadtxt(d / "intrinsic" / "intrinsic_depth.txt").astype(np.float32)
    frames, sizes = [], None
    for i in ids:
        depth = np.array(Image.open(d / "depth" / f"{i}.png"))
        with Image.open(d / "color" / f"{i}.jpg") as im:
            sizes = (*im.size, depth.shape[1], depth.shape[0])
        frames.append(SensFrame(np.loadtxt(d / "pose" / f"{i}.txt").astype(np.float32), i, i,
                                (d / "color" / f"{i}.jpg").read_bytes(), encode_depth(depth)))
    eye = np.eye(4, dtype=np.float32)
    header = SensHeader("proxy3d-export", K_color, eye, K_depth, eye, "jpeg", "zlib_ushort", *sizes, 1000.0, len(frames))
    write_sens(path, header, frames)
