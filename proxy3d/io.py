"""Safe filesystem helpers: atomic writes and validated scene ids."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def validate_scene_id(scene_id: str, source: str = "") -> str:
    """Return ``scene_id`` if it is safe to use as a path component, else raise ValueError.

    Scene ids become folder and file names; separators, ``..`` and odd characters are refused.
    """
    where = f" (from {source})" if source else ""
    if not isinstance(scene_id, str) or not _SCENE_ID.match(scene_id) or ".." in scene_id:
        raise ValueError(
            f"scene id {scene_id!r}{where} is not a safe name: use letters, digits, '_', '-', '.' only "
            "(no path separators or '..'), e.g. 'scene0000_00'"
        )
    return scene_id


def safe_join(root: str | Path, *parts: str) -> Path:
    """Join ``parts`` under ``root`` and refuse results that escape ``root``."""
    root = Path(root).resolve()
    out = root.joinpath(*parts).resolve()
    if out != root and root not in out.parents:
        raise ValueError(f"path {'/'.join(parts)!r} escapes {root}; refusing to touch it")
    return out


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the same folder; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        # mkstemp creates 0600, and so do writers that recreate the file (safetensors' save_file): the usual mode
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's contents (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Deterministic JSON (sorted keys) written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def spacespan_partition(spacespan_dir: str | Path, stage: int, split: str) -> Path:
    """Folder of one SpaceSpan curriculum stage and split: ``<dir>/records/curriculum_stage=N/split=S``."""
    return Path(spacespan_dir) / "records" / f"curriculum_stage={stage}" / f"split={split}"
