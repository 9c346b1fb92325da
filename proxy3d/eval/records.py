"""Reading annotation and prediction files record by record, with the line each record starts on.

JSON arrays, JSON Lines and (annotations only) Parquet are accepted. A malformed file raises
:class:`PredictionFormatError` naming the file, the line and the fix; never an ``assert``.
GT boxes come from a ScanNet-layout data root or ScanNet's release root (``scans/<id>``, ``scans_test/<id>``)
through ``proxy3d.scenes.scannet.load_objects``, or from a table with columns ``scene_id, object_id, label,
center_x/y/z, size_x/y/z`` (``artifacts/spacespan/objects.parquet``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_DECODER = json.JSONDecoder()
log = logging.getLogger(__name__)


class PredictionFormatError(ValueError):
    """A predictions/annotations file is not in the expected format (message names file and line)."""


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def iter_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` for each element of a JSON array or each line of a JSON Lines file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped.startswith("["):
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                raise PredictionFormatError(f"{path}:{i}: not valid JSON ({e.msg}, column {e.colno}); "
                                            "expected one JSON object per line or one JSON array") from None
        return
    items, end = _array(path, text, len(text) - len(stripped) + 1)
    rest = _skip_space(text, end)
    if rest < len(text):  # json.loads refuses these too; a second array or a stray word is not silently dropped
        raise PredictionFormatError(f"{path}:{_line(text, rest)}: extra data after the JSON array "
                                    f"({text[rest:rest + 30]!r}); put every record in the one array, or write "
                                    "JSON Lines (one object per line, no enclosing '[')")
    yield from items


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _array(path: Path, text: str, pos: int) -> tuple[list[tuple[int, Any]], int]:
    """``[(line, element), ...]`` of the JSON array whose '[' is just before ``pos``, and the position after ']'."""
    items: list[tuple[int, Any]] = []
    pos = _skip_space(text, pos)
    if pos < len(text) and text[pos] == "]":
        return items, pos + 1
    while True:
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise PredictionFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno}); "
                                        "fix the file (it must be a JSON array of objects)") from None
        items.append((_line(text, pos), obj))
        pos = _skip_space(text, end)
        if pos >= len(text):
            raise PredictionFormatError(f"{path}:{_line(text, pos)}: JSON array is not closed with ']'")
        if text[pos] == "]":
            return items, pos + 1
        if text[pos] != ",":
            raise PredictionFormatError(f"{path}:{_line(text, pos)}: expected ',' or ']' between records, "
                                        f"found {text[pos]!r}")
        pos = _skip_space(text, pos + 1)


def iter_keyed_arrays(path: str | Path, what: str) -> Iterator[tuple[str, list[tuple[int, Any]]]]:
    """``(key, [(line, element), ...])`` of a JSON object whose values are arrays (Scan2Cap's
    ``{scene_id: [{caption, box}, ...]}``), in file order and a repeated key each time, so an error about an
    element can name its line; ``what`` describes the expected elements in errors."""
    path = Path(path)
    doc = load_json(path)  # syntax errors, with their line; the walk below can then trust the structure
    if not isinstance(doc, dict):
        raise PredictionFormatError(f"{path}:1: expected a JSON object {{key: [{what}, ...]}}, "
                                    f"got {type(doc).__name__}")
    text = path.read_text(encoding="utf-8")
    pos = _skip_space(text, _skip_space(text, 0) + 1)  # after '{'
    while text[pos] != "}":
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_space(text, _skip_space(text, pos) + 1)  # past ':'
        if text[pos] != "[":
            raise PredictionFormatError(f"{path}:{_line(text, pos)}: {key!r}: expected a list of {what}")
        items, pos = _array(path, text, pos + 1)
        yield str(key), items
        pos = _skip_space(text, pos)
        if text[pos] == ",":
            pos = _skip_space(text, pos + 1)


def load_json(path: str | Path) -> Any:
    """A whole JSON document; a decode error names file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PredictionFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None


def load_table(path: str | Path) -> list[tuple[int, dict]]:
    """Records of a JSON array / JSON Lines / Parquet file as ``(line or row, dict)``."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        return [(i + 1, r) for i, r in enumerate(pd.read_parquet(path).to_dict("records"))]
    return list(iter_records(path))


def field(path: Path, line: int, rec: Any, key: str, kind: type | tuple[type, ...] = object) -> Any:
    """``rec[key]`` checked for presence and type, else an error naming file, line and key."""
    if not isinstance(rec, dict):
        raise PredictionFormatError(f"{path}:{line}: expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        raise PredictionFormatError(f"{path}:{line}: missing field {key!r} (has {sorted(rec)[:8]}); "
                                    "see 'proxy3d score --help' for the expected format")
    return check_kind(path, line, key, rec[key], kind)


def check_kind(path: Path, line: int | str, key: str, value: Any, kind: type | tuple[type, ...] = object,
               expected: str = "") -> Any:
    """``value`` if it is a ``kind`` (a bool only where ``kind`` is bool), else an error naming file, line and key
    (``expected`` describes ``kind`` in it; default its name)."""
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PredictionFormatError(f"{path}:{line}: field {key!r} = {str(value)[:60]!r} has type "
                                    f"{type(value).__name__}, expected {expected or getattr(kind, '__name__', kind)}")
    return value


def parse_box(path: Path, line: int | str, value: Any, key: str = "bbox") -> np.ndarray:
    """A predicted box: ``(8, 3)`` corners, ``(2, 3)`` [min, max] bounds (min <= max) or ``(6,)`` centre+size ->
    ``(2, 3)`` bounds (:func:`proxy3d.eval.metrics.box_bounds`)."""
    from proxy3d.eval.metrics import box_bounds

    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PredictionFormatError(f"{path}:{line}: field {key!r} is not a box ({e}); give 8 corners "
                                    "[[x, y, z] x 8], [[xmin, ymin, zmin], [xmax, ymax, zmax]] or "
                                    "[cx, cy, cz, dx, dy, dz]") from None
    try:
        bounds = box_bounds(arr)
    except ValueError as e:  # the message names the box and the accepted forms
        raise PredictionFormatError(f"{path}:{line}: field {key!r} is not a box: {e}") from None
    if not np.isfinite(bounds).all():
        raise PredictionFormatError(f"{path}:{line}: field {key!r} has non-finite coordinates")
    return bounds


def as_int(path: Path, line: int, value: Any, key: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise PredictionFormatError(f"{path}:{line}: field {key!r} = {value!r} is not an integer id") from None


# ----------------------------------------------------------------------------- GT boxes
Boxes = dict[str, dict[int, tuple[str, np.ndarray]]]  # scene -> object id -> (label, (6,) centre+size)


def gt_box(boxes: Boxes, scene_id: str, object_id: int) -> np.ndarray | None:
    """The GT box of an object, None when the scene or the object is unknown."""
    entry = boxes.get(scene_id, {}).get(object_id)
    return None if entry is None else entry[1]


def gt_box_or_no_box(boxes: Boxes, scene_id: str, object_id: int) -> np.ndarray:
    """:func:`gt_box`, with ``metrics.NO_BOX`` (a box nothing overlaps) for an unknown object: it still counts
    as a box in Multi3DRefer's and Scan2Cap's matching, and matches nothing."""
    from proxy3d.eval.metrics import NO_BOX

    b = gt_box(boxes, scene_id, object_id)
    return NO_BOX if b is None else b


def load_gt_boxes(source: str | Path, scene_ids: set[str]) -> Boxes:
    """GT object boxes of ``scene_ids`` from a Parquet/CSV objects table or a ScanNet-layout data root."""
    source = Path(source)
    out: Boxes = {}
    if source.is_file() or source.suffix in (".parquet", ".csv"):
        import pandas as pd

        if not source.exists():
            raise FileNotFoundError(f"{source}: no such objects table; run 'dvc repro spacespan' or pass "
                                    "--boxes <data root>")
        df = pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source)
        cols = ["scene_id", "object_id", "label", "center_x", "center_y", "center_z", "size_x", "size_y", "size_z"]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{source}: objects table lacks columns {missing}; expected {cols}")
        df = df[df["scene_id"].isin(scene_ids)]
        for r in df.itertuples(index=False):
            box = np.array([r.center_x, r.center_y, r.center_z, r.size_x, r.size_y, r.size_z], dtype=np.float64)
            out.setdefault(str(r.scene_id), {})[int(r.object_id)] = (str(r.label), box)
        return out
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a data root or objects table; pass --boxes data or "
                                "--boxes artifacts/spacespan/objects.parquet")
    from proxy3d.scenes.scannet import RELEASE_FOLDERS, load_objects, scenes_dir

    # (folder of scene folders, root that load_objects gets): a data root keeps itself as root, so its label table
    # is found; a release folder is its own root (the table next to scans/ is found from the scene folder)
    layouts = [(scenes_dir(source), source)] + [(source / f, source / f) for f in RELEASE_FOLDERS]
    missing = []
    for sid in sorted(scene_ids):
        root = next((r for d, r in layouts if (d / sid).is_dir()), None)
        if root is None:
            missing.append(sid)
            continue
        out[sid] = {o.object_id: (o.label, np.asarray(o.aabb, dtype=np.float64)) for o in load_objects(root, sid)}
    if missing and not out:
        tried = ", ".join(f"{source / d}/<id>" for d in ("scenes", ".", *RELEASE_FOLDERS))
        raise FileNotFoundError(f"--boxes {source}: none of the {len(missing)} scenes of the annotations (e.g. "
                                f"{missing[0]}) has a folder in {tried}; point --boxes at a data root, at ScanNet's "
                                "release root (the folder holding scans/) or at an objects table "
                                "(artifacts/spacespan/objects.parquet)")
    if missing:
        log.warning("--boxes %s: %d of %d scenes of the annotations have no folder there (e.g. %s); their items "
                    "score as wrong", source, len(missing), len(scene_ids), ", ".join(missing[:3]))
    return out
