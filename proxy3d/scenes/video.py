"""Frames of a plain video file (PyAV): N frames sampled uniformly, no depth, unknown pose."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from proxy3d.scenes.sampling import sample_indices
from proxy3d.types import Frame

log = logging.getLogger(__name__)


def assumed_intrinsics(width: int, height: int) -> np.ndarray:
    """(3, 3) pinhole guess for a video without calibration: ~64 degree horizontal field of view."""
    f = 0.8 * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise ValueError(f"{path}: cannot open as a video ({e}); check the file or convert it to mp4") from None


def count_frames(path: str | Path) -> int:
    """Number of decodable video frames (container metadata when present, else by decoding)."""
    path = Path(path)
    with _open(path) as c:
        if not c.streams.video:
            raise ValueError(f"{path}: has no video stream; pass a video file")
        stream = c.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in c.decode(stream))


def read_video(path: str | Path, frames: int = 32) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame index, rgb (H, W, 3) uint8)`` for ``frames`` frames spread uniformly over the video."""
    path = Path(path)
    n = count_frames(path)
    wanted = set(sample_indices(n, frames).tolist())
    last = max(wanted, default=-1)
    with _open(path) as c:
        for i, fr in enumerate(c.decode(c.streams.video[0])):
            if i in wanted:
                yield i, fr.to_ndarray(format="rgb24")
            if i >= last:
                break


def video_frames(path: str | Path, frames: int = 32) -> Iterator[Frame]:
    """Frames of a video: depth None, pose NaN (unknown), intrinsics assumed (see :func:`assumed_intrinsics`)."""
    log.warning("%s: a plain video has no depth and no camera poses: frames carry NaN poses and assumed "
                "intrinsics (use geometry=vggt to estimate them)", path)
    for i, rgb in read_video(path, frames):
        h, w = rgb.shape[:2]
        yield Frame(rgb=rgb, depth=None, pose=np.full((4, 4), np.nan), K=assumed_intrinsics(w, h), index=i)
