"""Curriculum items generated from each scene's object table (source ``synthetic``).

Stage 1, identifier/semantic alignment (``id_align``): "What is the object <OBJ036>?" -> "<OBJ036> chair"
and, once per (scene, label), "What is the object marker of the chair?" -> "chair <OBJ003> <OBJ036>".
Answers restate the query: the layout that made a from-scratch prototype learn (RECIPES.md).
Stage 2, coordinate alignment (``coord_align``): "Where is <OBJ012>?" -> "<OBJ012> (1.23, 0.45, 0.80)" and
the reverse "Which object is at (1.23, 0.45, 0.80)?" -> "(1.23, 0.45, 0.80) <OBJ012>"; centres are rounded
to ``coord_precision`` decimals.
Stage 3 (``attribute``): object-size pairs "What is the size of <OBJ012>?" -> "<OBJ012> 0.50 x 0.40 x 0.90";
MMScan QA records join them from the readers. Stage 4 holds every benchmark record.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from proxy3d.config import SpaceSpanParams
from proxy3d.vocab import NUM_IDENTIFIERS

ITEM = ["id", "source", "task", "scene_id", "question", "answers", "target_object_ids", "curriculum_stage"]


def _item(stage: int, task: str, template: str, q: Column, a: Column, targets: Column, key: Column) -> Column:
    return F.struct(
        F.concat_ws(":", F.lit("synthetic"), F.lit(f"s{stage}"), F.lit(template), F.col("scene_id"), key).alias("id"),
        F.lit(task).alias("task"), q.alias("question"), F.array(a).alias("answers"),
        targets.cast(T.ArrayType(T.IntegerType())).alias("target_object_ids"),
        F.lit(stage).alias("curriculum_stage"))


def generate(objects: DataFrame, p: SpaceSpanParams) -> DataFrame:
    """Stage 1-3 items for every object (and label group) in ``objects`` that has an identifier token (ids past
    ``<OBJ099>`` cannot be asked about or answered with)."""
    objects = objects.where(F.col("object_id") < NUM_IDENTIFIERS)
    tok = F.format_string("<OBJ%03d>", F.col("object_id"))
    fmt = f"%.{p.coord_precision}f"
    xyz = F.format_string(f"({fmt}, {fmt}, {fmt})", "center_x", "center_y", "center_z")
    size = F.format_string(f"{fmt} x {fmt} x {fmt}", "size_x", "size_y", "size_z")
    oid = F.array(F.col("object_id"))
    key = F.col("object_id").cast("string")
    per_object = []
    if p.stage1_per_object >= 1:
        per_object.append(_item(1, "id_align", "what", F.concat(F.lit("What is the object "), tok, F.lit("?")),
                                F.concat_ws(" ", tok, "label"), oid, key))
    if p.stage2_per_object >= 1:
        per_object.append(_item(2, "coord_align", "where", F.concat(F.lit("Where is "), tok, F.lit("?")),
                                F.concat_ws(" ", tok, xyz), oid, key))
    if p.stage2_per_object >= 2:
        per_object.append(_item(2, "coord_align", "which", F.concat(F.lit("Which object is at "), xyz, F.lit("?")),
                                F.concat_ws(" ", xyz, tok), oid, key))
    per_object.append(_item(3, "attribute", "size", F.concat(F.lit("What is the size of "), tok, F.lit("?")),
                            F.concat_ws(" ", tok, size), oid, key))
    items = objects.select("scene_id", F.explode(F.array(*per_object)).alias("it")).select("scene_id", "it.*")
    if p.stage1_per_object >= 2:
        groups = objects.groupBy("scene_id", "label").agg(F.array_sort(F.collect_list("object_id")).alias("ids"))
        marks = F.array_join(F.transform("ids", lambda x: F.format_string("<OBJ%03d>", x)), " ")
        g = groups.select("scene_id", _item(1, "id_align", "marker", F.concat(
            F.lit("What is the object marker of the "), F.col("label"), F.lit("?")),
            F.concat_ws(" ", "label", marks), F.col("ids"), F.col("label")).alias("it")).select("scene_id", "it.*")
        items = items.unionByName(g)
    return items.withColumn("source", F.lit("synthetic")).select(*ITEM)
