"""Native-format annotation files of the seven SpaceSpan sources, written for synthetic scenes.

``write_all(scenes, annotations_dir, seed)`` writes, per split (``scene.split``)::

    scanrefer/ScanRefer_filtered_{split}.json
    multi3drefer/multi3drefer_{split}.json
    scanqa/ScanQA_v1.0_{split}.json
    sqa3d/v1_balanced_questions_{split}_scannetv2.json, sqa3d/v1_balanced_sqa_annotations_{split}_scannetv2.json
    scan2cap/scan2cap_{split}_corpus.json
    mmscan/MMScan_QA_{split}.json
    vsibench/{train|test}-00000-of-00001.parquet   (VSI-Bench publishes "test"; val scenes go there)

Every question is computed from the scene's true geometry; output is byte-identical for the same scenes and
seed (scenes are processed sorted by id; ids embed the scene's rank so they are unique across files).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from proxy3d.io import atomic_path, atomic_write_text, validate_scene_id
from proxy3d.scenes.annotations.grounding import multi3drefer, scan2cap, scanrefer
from proxy3d.scenes.annotations.qa import mmscan_qa, scanqa, sqa3d
from proxy3d.scenes.annotations.vsibench import vsibench
from proxy3d.scenes.spec import SynthScene

log = logging.getLogger(__name__)

VSI_SCHEMA = pa.schema([
    ("id", pa.int64()), ("dataset", pa.string()), ("scene_name", pa.string()), ("question_type", pa.string()),
    ("question", pa.string()), ("options", pa.list_(pa.string())), ("ground_truth", pa.string()),
])


def _dump(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False))


def write_vsibench_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=VSI_SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


def write_all(scenes: list[SynthScene], annotations_dir: Path, seed: int) -> dict[str, int]:
    """Write every source's native files under ``annotations_dir``; returns record counts per file stem."""
    annotations_dir = Path(annotations_dir)
    per: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    corpus: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for rank, scene in enumerate(sorted(scenes, key=lambda s: s.scene_id)):
        validate_scene_id(scene.scene_id, "SynthScene")
        if scene.split not in ("train", "val"):
            raise ValueError(f"scene {scene.scene_id!r}: split {scene.split!r} must be 'train' or 'val'")
        split = per[scene.split]
        refs = scanrefer(scene)
        split["scanrefer"].extend(refs)
        corpus[scene.split].update(scan2cap(refs))
        split["multi3drefer"].extend(multi3drefer(scene, seed))
        split["scanqa"].extend(scanqa(scene))
        questions, annotations = sqa3d(scene, seed, rank)
        split["sqa3d_questions"].extend(questions)
        split["sqa3d_annotations"].extend(annotations)
        split["mmscan"].extend(mmscan_qa(scene, seed))
        split["vsibench"].extend(vsibench(scene, seed, rank))
    counts: dict[str, int] = {}
    for name, rows in sorted(per.items()):
        files = {
            f"scanrefer/ScanRefer_filtered_{name}.json": rows["scanrefer"],
            f"multi3drefer/multi3drefer_{name}.json": rows["multi3drefer"],
            f"scanqa/ScanQA_v1.0_{name}.json": rows["scanqa"],
            f"sqa3d/v1_balanced_questions_{name}_scannetv2.json": {"questions": rows["sqa3d_questions"]},
            f"sqa3d/v1_balanced_sqa_annotations_{name}_scannetv2.json": {"annotations": rows["sqa3d_annotations"]},
            f"scan2cap/scan2cap_{name}_corpus.json": dict(sorted(corpus[name].items())),
            f"mmscan/MMScan_QA_{name}.json": rows["mmscan"],
        }
        for rel, obj in files.items():
            _dump(annotations_dir / rel, obj)
            inner = obj.get("questions", obj.get("annotations", obj)) if isinstance(obj, dict) else obj
            counts[rel] = len(inner)
        vsi_name = "train" if name == "train" else "test"
        rel = f"vsibench/{vsi_name}-00000-of-00001.parquet"
        write_vsibench_parquet(annotations_dir / rel, rows["vsibench"])
        counts[rel] = len(rows["vsibench"])
    log.info("wrote native annotations for %d scenes under %s: %s", len(scenes), annotations_dir, counts)
    return counts


__all__ = ["write_all", "write_vsibench_parquet"]
