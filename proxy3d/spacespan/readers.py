"""One reader per source: native files -> rows in the SpaceSpan schema plus parse-level ``reason``/``detail``.

Each reader takes the source's folder (or a single file), finds the files by their public names, applies the
explicit native schema and maps the fields. Rows keep ``file``, ``file_split`` (the split the file name
declares), ``pos`` and ``raw`` for splitting, de-duplication and the quarantine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from proxy3d.eval.metrics import SQA3D_TYPES
from proxy3d.spacespan.raw import file_split, load_raw, parse, parse_reason
from proxy3d.spacespan.schema import NATIVE, REQUIRED

NORMALIZED = ["id", "source", "task", "scene_id", "question", "answers", "target_object_ids", "situation",
              "position", "rotation", "options", "question_type", "curriculum_stage", "file", "file_split", "pos",
              "raw", "reason", "detail"]

PATTERNS: dict[str, tuple[str, ...]] = {
    "scanrefer": ("ScanRefer_filtered_train.json*", "ScanRefer_filtered_val.json*"),
    "multi3drefer": ("multi3drefer_train.json*", "multi3drefer_val.json*"),
    "scanqa": ("ScanQA_v1.0_train.json*", "ScanQA_v1.0_val.json*"),
    "sqa3d_questions": ("v1_balanced_questions_train_scannetv2.json*", "v1_balanced_questions_val_scannetv2.json*"),
    "sqa3d_annotations": ("v1_balanced_sqa_annotations_train_scannetv2.json*",
                          "v1_balanced_sqa_annotations_val_scannetv2.json*"),
    "scan2cap": ("scan2cap_train_corpus.json*", "scan2cap_val_corpus.json*"),
    # the release's one file (the devkit reads MMScan_samples/MMScan_QA.json: {"train": [...], "val": [...],
    # "test": [...]}) or one file per split
    "mmscan": ("MMScan_QA.json*", "MMScan_samples/MMScan_QA.json*", "MMScan_QA_train.json*",
               "MMScan_QA_val.json*"),
    "vsibench": ("*.parquet", "*.json", "*.jsonl"),
}


def find_files(path: Path, kind: str) -> list[Path]:
    """Files of ``kind`` under ``path`` (a folder searched by the public file names, or one file)."""
    if path.is_file():
        return [path]
    found = sorted({f for pat in PATTERNS[kind] for f in path.glob(pat) if f.suffix in (".json", ".jsonl",
                                                                                          ".parquet")})
    return found


def _tok(ids: Column) -> Column:
    return F.array_join(F.transform(ids, lambda x: F.format_string("<OBJ%03d>", x)), " ")


def _ints(col: Column) -> Column:
    return F.coalesce(col.cast(T.ArrayType(T.IntegerType())), F.array().cast(T.ArrayType(T.IntegerType())))


def _finish(df: DataFrame, source: str, task: Column, stage: int, reason: Column, detail: Column,
            **cols: Column) -> DataFrame:
    null_d = F.lit(None).cast(T.ArrayType(T.DoubleType()))
    defaults: dict[str, Column] = {"situation": F.lit(None).cast("string"), "position": null_d, "rotation": null_d,
                                   "options": F.lit(None).cast(T.ArrayType(T.StringType())),
                                   "question_type": F.lit(None).cast("string")}
    defaults.update(cols)
    return df.select(*[c.alias(n) for n, c in defaults.items()], F.lit(source).alias("source"), task.alias("task"),
                     F.lit(stage).alias("curriculum_stage"), "file", "file_split", "pos", "raw",
                     reason.alias("reason"), detail.alias("detail")).select(*NORMALIZED)


def read_scanrefer(spark: SparkSession, path: Path) -> DataFrame:
    df = parse(load_raw(spark, find_files(path, "scanrefer")), NATIVE["scanrefer"])
    oid = F.expr("try_cast(r.object_id as int)")
    reason, detail = parse_reason(REQUIRED["scanrefer"])
    bad_id = F.col("r.object_id").isNotNull() & oid.isNull()
    detail = F.coalesce(detail, F.when(reason.isNull() & bad_id, F.lit("object_id")))
    reason = F.coalesce(reason, F.when(bad_id, F.lit("wrong_type")))
    return _finish(df, "scanrefer", F.lit("grounding"), 4, reason, detail,
                   id=F.concat_ws(":", F.lit("scanrefer"), "r.scene_id", "r.object_id", "r.ann_id"),
                   scene_id=F.col("r.scene_id"), question=F.col("r.description"),
                   answers=F.array(F.format_string("<OBJ%03d>", oid)), target_object_ids=F.array(oid))


def read_multi3drefer(spark: SparkSession, path: Path) -> DataFrame:
    df = parse(load_raw(spark, find_files(path, "multi3drefer")), NATIVE["multi3drefer"])
    reason, detail = parse_reason(REQUIRED["multi3drefer"])
    ids = _ints(F.col("r.object_ids"))
    answer = F.when(F.size(ids) == 0, F.lit("none")).otherwise(_tok(ids))
    return _finish(df, "multi3drefer", F.lit("multi_grounding"), 4, reason, detail,
                   # keyed (scene, object_id, ann_id) as in M3DRef-CLIP; scene:ann_id without an object_id
                   id=F.concat_ws(":", F.lit("multi3drefer"), "r.scene_id", "r.object_id",
                                  F.col("r.ann_id").cast("string")),
                   scene_id=F.col("r.scene_id"), question=F.col("r.description"), answers=F.array(answer),
                   target_object_ids=ids, question_type=F.col("r.eval_type"))


def read_scanqa(spark: SparkSession, path: Path) -> DataFrame:
    df = parse(load_raw(spark, find_files(path, "scanqa")), NATIVE["scanqa"])
    reason, detail = parse_reason(REQUIRED["scanqa"])
    return _finish(df, "scanqa", F.lit("qa"), 4, reason, detail,
                   id=F.concat_ws(":", F.lit("scanqa"), "r.question_id"), scene_id=F.col("r.scene_id"),
                   question=F.col("r.question"), answers=F.col("r.answers"),
                   target_object_ids=_ints(F.col("r.object_ids")))


def _sqa_type(q: Column) -> Column:
    """``proxy3d.eval.metrics.sqa3d_question_type`` (LEO's ``get_sqa_question_type``) as a Spark expression,
    so the job needs no Python workers: the first type the stripped, lower-cased question starts with, else
    the leftover type ("others")."""
    *named, rest = SQA3D_TYPES
    text = F.lower(F.regexp_replace(q, r"(?U)^[\s\x1c-\x1f]+", ""))  # the characters str.lstrip() strips
    return F.coalesce(*[F.when(text.startswith(t), F.lit(t)) for t in named], F.lit(rest))


def read_sqa3d(spark: SparkSession, path: Path) -> DataFrame:
    q = parse(load_raw(spark, find_files(path, "sqa3d_questions"), "questions"), NATIVE["sqa3d_questions"])
    a = parse(load_raw(spark, find_files(path, "sqa3d_annotations"), "annotations"), NATIVE["sqa3d_annotations"])
    q_reason, q_detail = parse_reason(REQUIRED["sqa3d_questions"])
    a_reason, a_detail = parse_reason(REQUIRED["sqa3d_annotations"])
    q = q.select(F.col("r").alias("q"), "file", "file_split", "pos", F.col("raw").alias("q_raw"),
                 q_reason.alias("q_reason"), q_detail.alias("q_detail"),
                 F.coalesce(F.col("r.question_id").cast("string"), F.concat(F.lit("#"), "file", "pos", "raw"))
                 .alias("k"))
    a = a.select(F.col("r").alias("a"), F.col("file").alias("a_file"), F.col("raw").alias("a_raw"),
                 a_reason.alias("a_reason"), a_detail.alias("a_detail"),
                 F.coalesce(F.col("r.question_id").cast("string"), F.concat(F.lit("#"), "file", "pos", "raw"))
                 .alias("k"))
    df = q.join(a, "k", "full_outer")
    reason = (F.when(F.col("q_reason").isNotNull(), F.col("q_reason")).when(F.col("a_reason").isNotNull(),
                                                                            F.col("a_reason"))
              .when(F.col("q").isNull(), "missing_field").when(F.col("a").isNull(), "missing_field"))
    detail = (F.when(F.col("q_reason").isNotNull(), F.col("q_detail")).when(F.col("a_reason").isNotNull(),
                                                                           F.col("a_detail"))
              .when(F.col("q").isNull(), "question").when(F.col("a").isNull(), "answers"))
    df = df.select(F.coalesce("file", "a_file").alias("file"),
                   F.coalesce("file_split", file_split(F.col("a_file"))).alias("file_split"), "pos",
                   F.to_json(F.struct(F.col("q_raw").alias("question"), F.col("a_raw").alias("annotation")))
                   .alias("raw"), "q", "a", reason.alias("reason"), detail.alias("detail"))
    answers = F.transform(F.col("a.answers"), lambda x: x["answer"])
    return _finish(df, "sqa3d", F.lit("situated_qa"), 4, F.col("reason"), F.col("detail"),
                   id=F.concat(F.lit("sqa3d:"), F.coalesce(F.col("q.question_id"), F.col("a.question_id"))
                               .cast("string")),
                   scene_id=F.coalesce("q.scene_id", "a.scene_id"), question=F.col("q.question"), answers=answers,
                   target_object_ids=F.array().cast(T.ArrayType(T.IntegerType())),
                   situation=F.col("q.situation"),
                   position=F.array(F.col("a.position.x"), F.col("a.position.y"), F.col("a.position.z")),
                   rotation=F.array(*[F.col(f"a.rotation.{c}") for c in ("_x", "_y", "_z", "_w")]),
                   question_type=_sqa_type(F.col("q.question")))


def read_scan2cap(spark: SparkSession, path: Path) -> DataFrame:
    df = parse(load_raw(spark, find_files(path, "scan2cap"), "map"), NATIVE["scan2cap"])
    reason, detail = parse_reason(REQUIRED["scan2cap"])
    parts = F.split(F.col("r.key"), r"\|")
    oid = F.expr("try_cast(get(split(r.key, '[|]'), 1) as int)")
    bad = F.col("r.key").isNotNull() & (oid.isNull() | (F.size(parts) < 2))
    detail = F.coalesce(detail, F.when(reason.isNull() & bad, F.lit("key")))
    reason = F.coalesce(reason, F.when(bad, F.lit("wrong_type")))
    captions = F.transform(F.col("r.captions"), lambda c: F.trim(F.regexp_replace(c, r"^\s*sos\s+|\s+eos\s*$", "")))
    return _finish(df, "scan2cap", F.lit("caption"), 4, reason, detail,
                   id=F.concat(F.lit("scan2cap:"), F.col("r.key")), scene_id=parts.getItem(0),
                   question=F.format_string("Describe the object <OBJ%03d>.", oid), answers=captions,
                   target_object_ids=F.array(oid))


def read_mmscan(spark: SparkSession, path: Path) -> DataFrame:
    df = parse(load_raw(spark, find_files(path, "mmscan"), "splits"), NATIVE["mmscan"])
    reason, detail = parse_reason(REQUIRED["mmscan"])
    return _finish(df, "mmscan", F.lit("attribute"), 3, reason, detail,
                   id=F.concat(F.lit("mmscan:"), F.col("r.ID")), scene_id=F.col("r.scan_id"),
                   question=F.col("r.question"), answers=F.col("r.answers"),
                   target_object_ids=_ints(F.col("r.object_ids")), question_type=F.col("r.sub_class"))


def read_vsibench(spark: SparkSession, path: Path) -> DataFrame:
    files = find_files(path, "vsibench")
    schema = NATIVE["vsibench"]
    df = parse(load_raw(spark, [f for f in files if f.suffix != ".parquet"]), schema)
    pq = [str(f) for f in files if f.suffix == ".parquet"]
    if pq:
        native = T.StructType([f for f in schema.fields if f.name != "_corrupt_record"])
        p = spark.read.schema(native).parquet(*pq).withColumn("file", F.input_file_name())
        p = p.select("file", file_split(F.col("file")).alias("file_split"), F.lit(None).cast("int").alias("pos"),
                     F.to_json(F.struct(*native.fieldNames())).alias("raw"), F.lit(False).alias("malformed"),
                     F.struct(*native.fieldNames(), F.lit(None).cast("string").alias("_corrupt_record")).alias("r"))
        df = df.unionByName(p)
    df = df.withColumn("file_split", F.coalesce("file_split", F.lit("val")))  # VSI-Bench is an evaluation set
    reason, detail = parse_reason(REQUIRED["vsibench"])
    mc = F.coalesce(F.size("r.options"), F.lit(0)) > 0
    return _finish(df, "vsibench", F.when(mc, "spatial_mc").otherwise("spatial_num"), 4, reason, detail,
                   id=F.concat(F.lit("vsibench:"), F.col("r.id").cast("string")), scene_id=F.col("r.scene_name"),
                   question=F.col("r.question"), answers=F.array(F.col("r.ground_truth")),
                   target_object_ids=F.array().cast(T.ArrayType(T.IntegerType())),
                   options=F.when(mc, F.col("r.options")), question_type=F.col("r.question_type"))


READERS: dict[str, Callable[[SparkSession, Path], DataFrame]] = {
    "scanrefer": read_scanrefer, "multi3drefer": read_multi3drefer, "scanqa": read_scanqa, "sqa3d": read_sqa3d,
    "scan2cap": read_scan2cap, "mmscan": read_mmscan, "vsibench": read_vsibench,
}
