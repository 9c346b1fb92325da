"""Binary little-endian PLY point/mesh vertices (the format of ScanNet's ``*_vh_clean_2.ply``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from proxy3d.io import atomic_write_bytes

_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
          "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
          "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8"}


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write vertices ``xyz`` (N, 3) float32 and colours ``rgb`` (N, 3) uint8 atomically."""
    n = int(xyz.shape[0])
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    rec = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, k in enumerate("xyz"):
        rec[k] = xyz[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        rec[k] = rgb[:, i]
    atomic_write_bytes(path, header.encode("ascii") + rec.tobytes())


def read_ply_vertices(path: str | Path) -> np.ndarray:
    """Vertex records of a binary little-endian PLY as a structured array (fields as in the header).

    Elements after ``vertex`` (faces) are ignored. Raises ValueError naming the file when it is not a
    binary little-endian PLY with a vertex element first.
    """
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or 'end_header'); re-export the mesh")
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary_little_endian PLY is supported; convert it (e.g. with open3d)")
    fields: list[tuple[str, str]] = []
    count, in_vertex = -1, False
    for line in lines:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            count, in_vertex = int(parts[2]), True
        elif parts[:1] == ["element"]:
            if in_vertex:
                break
        elif in_vertex and parts[:1] == ["property"] and parts[1] != "list":
            if parts[1] not in _TYPES:
                raise ValueError(f"{path}: unsupported PLY property type {parts[1]!r}")
            fields.append((parts[2], _TYPES[parts[1]]))
    if count < 0 or not fields:
        raise ValueError(f"{path}: PLY has no vertex element; re-export the mesh")
    dtype = np.dtype(fields)
    body = data[end + len(b"end_header\n"):]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated PLY ({len(body)} bytes for {count} vertices); re-download or re-export it")
    return np.frombuffer(body, dtype=dtype, count=count)
