"""The SpaceSpan assembly job: read every source, validate, quarantine, de-duplicate, split, add curriculum items.

Output under ``out_dir`` (written to a temp folder, then swapped in whole; an existing ``out_dir`` is replaced
only if it holds this layout, see :func:`check_out_dir`)::

    records/curriculum_stage=<1..4>/split=<train|val>/*.parquet   rows in schema.RECORD
    quarantine/*.parquet                                         rows in schema.QUARANTINE
    objects.parquet                                              scene object tables + split (one file)
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from proxy3d.config import SpaceSpanParams
from proxy3d.spacespan.curriculum import generate
from proxy3d.spacespan.readers import READERS, find_files
from proxy3d.spacespan.schema import OBJECTS, QUARANTINE, RECORD, RECORD_COLUMNS
from proxy3d.spacespan.validate import check, dedup, scene_splits

log = logging.getLogger(__name__)
_KINDS = {"sqa3d": ("sqa3d_questions", "sqa3d_annotations")}


def resolve_sources(p: SpaceSpanParams, data_root: Path) -> dict[str, Path]:
    """Source name -> existing path. A missing required source raises naming it; others are skipped."""
    out: dict[str, Path] = {}
    for name, rel in sorted(p.sources.items()):
        if name not in READERS:
            raise ValueError(f"spacespan.sources.{name}: unknown source; known: {', '.join(sorted(READERS))}")
        if not rel:
            continue
        path = Path(rel) if Path(rel).is_absolute() else Path(data_root) / rel
        has = path.exists() and all(find_files(path, k) for k in _KINDS.get(name, (name,)))
        if has:
            out[name] = path
        elif name in p.required_sources:
            raise FileNotFoundError(f"required SpaceSpan source '{name}' has no files at {path} (params.yaml "
                                    f"spacespan.sources.{name}); generate data with `proxy3d synth data` or fix the path")
        else:
            log.warning("source %s: no files at %s; skipped", name, path)
    return out


def _objects_frame(spark: SparkSession, object_rows: list[dict[str, Any]]) -> DataFrame:
    """The object table as a Spark DataFrame, shipped as Arrow (no Python worker processes needed)."""
    frame = pd.DataFrame(object_rows, columns=OBJECTS.fieldNames()).astype(
        {"object_id": "int32", "category": "int32"})
    return spark.createDataFrame(frame, schema=OBJECTS)


def _final(df: DataFrame) -> DataFrame:
    casts = {f.name: F.col(f.name).cast(f.dataType) for f in RECORD.fields}
    return df.select(*[casts[c].alias(c) for c in RECORD_COLUMNS])


def _stable_names(root: Path) -> None:
    """Name Spark's output files by content position only: ``part-00000-<random uuid>-c000.snappy.parquet`` ->
    ``part-00000.snappy.parquet``, without the ``.crc`` and ``_SUCCESS`` side files. With the random names every
    rerun of this stage gave a new ``artifacts/spacespan`` hash for the same rows, and DVC retrained all four
    stages after it."""
    for f in sorted(root.rglob("*")):
        if f.is_file() and (f.name == "_SUCCESS" or f.name.endswith(".crc")):
            f.unlink()
    for f in sorted(root.rglob("part-*.parquet")):
        m = re.fullmatch(r"(part-\d+)-.*?((?:\.\w+)?\.parquet)", f.name)
        if m:
            f.rename(f.with_name(m.group(1) + m.group(2)))


LAYOUT = ("records", "quarantine", "objects.parquet")  # everything this job writes under out_dir


def check_out_dir(out_dir: Path, data_root: Path | None = None) -> None:
    """Refuse an ``out_dir`` whose replacement would delete other data: the data root or a folder holding
    it, or an existing folder that is not a previous SpaceSpan output (:data:`LAYOUT`, or empty)."""
    out = Path(out_dir).resolve()
    if data_root is not None:
        data = Path(data_root).resolve()
        if out == data or out in data.parents:
            raise ValueError(f"--out {out_dir} is the data root {data_root} or holds it: writing SpaceSpan "
                             "there would replace the raw data; choose another folder (default: "
                             "artifacts/spacespan)")
    if out.is_file():
        raise ValueError(f"--out {out_dir} is a file; choose a folder (default: artifacts/spacespan)")
    if out.is_dir():
        held = sorted(c.name for c in out.iterdir())
        if any(name not in LAYOUT for name in held) or (held and "records" not in held):
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise ValueError(f"--out {out_dir} is not a SpaceSpan output folder (it holds {shown}); choose "
                             "another folder: SpaceSpan replaces its output folder whole")


def _staging(out_dir: Path) -> Path:
    """A new, uniquely named folder next to ``out_dir`` to write into: concurrent runs never share one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()  # not tempfile.mkdtemp: its 0700 would become the output folder's mode after the rename
    return tmp


def _swap(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` (same file system: two renames), only if ``out`` is SpaceSpan's own
    output."""
    check_out_dir(out)
    old = tmp.with_name(f"{tmp.name}.old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def assemble(spark: SparkSession, p: SpaceSpanParams, sources: dict[str, Path], object_rows: list[dict[str, Any]],
             out_dir: Path) -> dict[str, Any]:
    """Run the job; returns the metrics dict (also what ``metrics/spacespan.json`` holds)."""
    t0 = time.time()
    out_dir = Path(out_dir)
    check_out_dir(out_dir)  # before any work; checked again right before the swap
    objects = _objects_frame(spark, object_rows)
    parts = [READERS[name](spark, path) for name, path in sorted(sources.items())]
    if not parts:
        raise ValueError("no SpaceSpan source has files; check spacespan.sources in params.yaml")
    records = parts[0]
    for part in parts[1:]:
        records = records.unionByName(part)
    checked = check(records, objects).persist()
    quarantine = checked.where(F.col("reason").isNotNull())
    deduped = dedup(checked.where(F.col("reason").isNull())).persist()
    kept = deduped.where(F.col("_n") == 1)
    splits = scene_splits(kept, objects, p.val_fraction, p.seed).persist()
    extra = {c: F.lit(None).cast(RECORD[c].dataType) for c in ("situation", "position", "rotation", "options",
                                                               "question_type")}
    items = generate(objects, p).select("*", *[v.alias(k) for k, v in extra.items()])
    allrows = kept.select(*[c for c in RECORD_COLUMNS if c != "split"]).unionByName(
        items.select(*[c for c in RECORD_COLUMNS if c != "split"]))
    final = _final(allrows.join(splits.select("scene_id", "split"), "scene_id"))

    tmp = _staging(out_dir)
    try:
        (final.repartition("curriculum_stage", "split").sortWithinPartitions("id")
         .write.partitionBy("curriculum_stage", "split").parquet(str(tmp / "records")))
        q = quarantine.select(*[F.col(f.name).cast(f.dataType) for f in QUARANTINE.fields])
        (q.coalesce(1).sortWithinPartitions("source", "reason", "file", "raw")
         .write.parquet(str(tmp / "quarantine")))
        scene_rows = splits.collect()
        _write_objects(tmp / "objects.parquet", object_rows, {r["scene_id"]: r["split"] for r in scene_rows})

        _stable_names(tmp)
        metrics = _metrics(tmp, deduped, scene_rows)
        checked.unpersist()
        deduped.unpersist()
        splits.unpersist()
        _swap(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metrics["seconds"] = round(time.time() - t0, 2)
    log.info("spacespan: %d records, %d quarantined, %d duplicates removed in %.1f s", metrics["records"],
             metrics["quarantined"], metrics["duplicates_removed"], metrics["seconds"])
    return metrics


def _write_objects(path: Path, object_rows: list[dict[str, Any]], split: dict[str, str]) -> None:
    """One Parquet file: the object table plus each scene's split (what training and evaluation read)."""
    schema = pa.schema([(f.name, pa.int32() if isinstance(f.dataType, T.IntegerType) else
                         pa.float64() if isinstance(f.dataType, T.DoubleType) else pa.string())
                        for f in OBJECTS.fields] + [("split", pa.string())])
    rows = sorted(({**r, "split": split[r["scene_id"]]} for r in object_rows),
                  key=lambda r: (r["scene_id"], r["object_id"]))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _metrics(tmp: Path, deduped: DataFrame, scene_rows: list[Any]) -> dict[str, Any]:
    """Counts from the written Parquet (read with pyarrow: no Spark job) plus two small Spark aggregations."""
    rec = pq.read_table(tmp / "records", columns=["task", "source", "curriculum_stage", "split"]).to_pandas()
    rec = rec.astype(str)
    quar = pq.read_table(tmp / "quarantine", columns=["source", "reason"]).to_pandas()
    qby: dict[str, dict[str, int]] = defaultdict(dict)
    for (source, reason), n in quar.groupby(["source", "reason"]).size().items():
        qby[source][reason] = int(n)
    drops = deduped.where(F.col("_n") > 1).groupBy((F.col("source") != F.col("_first_source")).alias("x")).count()
    dropped = {bool(r["x"]): int(r["count"]) for r in drops.collect()}
    scenes: dict[str, int] = defaultdict(int)
    for r in scene_rows:
        scenes[r["split"]] += 1

    def counts(*cols: str) -> dict[str, int]:
        key = rec[list(cols)].agg("/".join, axis=1) if len(cols) > 1 else rec[cols[0]]
        return {str(k): int(v) for k, v in sorted(key.value_counts().items())}

    return {
        "records": len(rec),
        "records_by_stage": counts("curriculum_stage"),
        "records_by_task": counts("task"),
        "records_by_source": counts("source"),
        "records_by_split": counts("split"),
        "records_by_stage_task_source": counts("curriculum_stage", "task", "source"),
        "quarantined": len(quar),
        "quarantine_by_source_reason": {k: dict(sorted(v.items())) for k, v in sorted(qby.items())},
        "duplicates_removed": sum(dropped.values()),
        "duplicates_removed_cross_source": dropped.get(True, 0),
        "scenes_by_split": dict(sorted(scenes.items())),
        "split_conflicts": sum(1 for r in scene_rows if r["conflict"]),
    }


__all__ = ["assemble", "check_out_dir", "resolve_sources"]
