"""Validation, quarantine, exact de-duplication and scene-level splits.

Reasons, first match wins: malformed_json, wrong_type, missing_field (from the readers), empty_question,
empty_answer, unknown_scene, object_id_out_of_range (a target id outside 0..NUM_IDENTIFIERS-1: no ``<OBJxxx>``
token names it, so the model could never give the answer), unknown_object (a target id not in the scene's
object table), duplicate_id (same id seen earlier: first by file, position, text).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from proxy3d.vocab import NUM_IDENTIFIERS


def scene_objects(objects: DataFrame) -> DataFrame:
    """(scene_id, scene_objects: array<int>) from the object table."""
    return objects.groupBy("scene_id").agg(F.array_sort(F.collect_set("object_id")).alias("scene_objects"))


def _blank(c: Column) -> Column:
    return c.isNull() | (F.length(F.trim(c)) == 0)


def check(records: DataFrame, objects: DataFrame) -> DataFrame:
    """Fill ``reason``/``detail`` for every content-level problem; rows with null reason are valid."""
    df = records.join(F.broadcast(scene_objects(objects)), "scene_id", "left")
    targets = F.col("target_object_ids")
    missing = F.filter(targets, lambda x: x.isNull() | ~F.array_contains(F.col("scene_objects"), x))
    out_of_range = F.filter(targets, lambda x: (x < 0) | (x >= NUM_IDENTIFIERS))
    checks: list[tuple[str, Column, Column]] = [
        ("empty_question", _blank(F.col("question")), F.lit("question")),
        ("empty_answer", F.col("answers").isNull() | F.forall("answers", _blank), F.lit("answers")),
        ("unknown_scene", F.col("scene_objects").isNull(), F.col("scene_id")),
        ("object_id_out_of_range", F.size(out_of_range) > 0,
         F.array_join(out_of_range.cast("array<string>"), ",")),
        ("unknown_object", F.size(missing) > 0, F.array_join(missing.cast("array<string>"), ",", "null")),
    ]
    flags = [F.col(f"_c{i}") for i in range(len(checks))]
    for i, (_, cond, _why) in enumerate(checks):
        df = df.withColumn(f"_c{i}", cond)
    reason = F.coalesce(F.col("reason"), *[F.when(f, F.lit(n)) for f, (n, _, _) in zip(flags, checks, strict=True)])
    detail = F.when(F.col("reason").isNotNull(), F.col("detail")).otherwise(
        F.coalesce(*[F.when(f, why) for f, (_, _, why) in zip(flags, checks, strict=True)]))
    df = df.select("*", reason.alias("_reason"), detail.alias("_detail")).drop(
        "reason", "detail", "scene_objects", *[f"_c{i}" for i in range(len(checks))])
    df = df.withColumnRenamed("_reason", "reason").withColumnRenamed("_detail", "detail")
    ok = F.col("reason").isNull()
    order = Window.partitionBy("id", ok).orderBy("file", F.col("pos").asc_nulls_last(), "raw")
    df = df.withColumn("_dup", ok & (F.row_number().over(order) > 1))
    return (df.withColumn("detail", F.when(F.col("_dup"), F.col("id")).otherwise(F.col("detail")))
            .withColumn("reason", F.when(F.col("_dup"), F.lit("duplicate_id")).otherwise(F.col("reason")))
            .drop("_dup"))


def dedup(valid: DataFrame) -> DataFrame:
    """Drop exact duplicates (same scene, question, answers, targets, situation, pose, options) across and
    within sources, keeping the first by (source, id); adds ``_n`` (1 = kept) and ``_first_source`` (source of the kept copy)."""
    key = F.sha2(F.to_json(F.struct(
        "scene_id", F.lower(F.trim("question")).alias("q"), F.array_sort("answers").alias("a"),
        F.array_sort("target_object_ids").alias("t"), "situation", "position", "rotation", "options")), 256)
    w = Window.partitionBy("_key").orderBy("source", "id")
    return (valid.withColumn("_key", key).withColumn("_n", F.row_number().over(w))
            .withColumn("_first_source", F.first("source").over(w)).drop("_key"))


def scene_splits(records: DataFrame, objects: DataFrame, val_fraction: float, seed: int) -> DataFrame:
    """(scene_id, split, conflict): a source's own split wins (val over train when sources disagree); scenes
    no source assigns are split by a hash of (seed, scene id)."""
    declared = records.where(F.col("file_split").isNotNull()).groupBy("scene_id").agg(
        F.max(F.col("file_split") == "val").alias("has_val"), F.max(F.col("file_split") == "train").alias("has_train"))
    scenes = objects.select("scene_id").distinct().join(declared, "scene_id", "left")
    bucket = F.pmod(F.xxhash64(F.lit(str(seed)), F.col("scene_id")), F.lit(10_000)) / 10_000.0
    split = (F.when(F.col("has_val"), "val").when(F.col("has_train"), "train")
             .when(bucket < val_fraction, "val").otherwise("train"))
    conflict = F.coalesce(F.col("has_val") & F.col("has_train"), F.lit(False))
    return scenes.select("scene_id", split.alias("split"), conflict.alias("conflict"))
