"""Load native annotation files as one raw JSON string per record, keeping malformed input as rows.

A ``.json`` file is read whole (top-level list, ``{"questions": [...]}``-style wrapper, or Scan2Cap's
key -> captions map) and exploded into records; a ``.jsonl`` file gives one record per line. A file or line
that is not valid JSON becomes one row with ``malformed = true`` (quarantined later), never an exception.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

RAW_COLUMNS = ["file", "file_split", "pos", "raw", "malformed"]
_SPLIT_RE = r"[_/.-](train|val|test)[_/.-]"


def file_split(file: Column) -> Column:
    """The split a source's own file name declares: 'train', 'val' (val or test), or null."""
    s = F.regexp_extract(file, _SPLIT_RE, 1)
    return F.when(s == "train", "train").when(s.isin("val", "test"), "val")


def _elements(value: Column, container: str) -> Column:
    if container == "list":
        return F.from_json(value, T.ArrayType(T.StringType()))
    if container == "map":
        m = F.from_json(value, T.MapType(T.StringType(), T.ArrayType(T.StringType())))
        return F.transform(F.map_entries(m), lambda e: F.to_json(F.struct(e["key"].alias("key"),
                                                                          e["value"].alias("captions"))))
    wrapped = F.from_json(value, T.StructType([T.StructField(container, T.ArrayType(T.StringType()))]))
    return wrapped[container]


def load_raw(spark: SparkSession, files: list[Path], container: str = "list") -> DataFrame:
    """Rows (file, file_split, pos, raw, malformed) for every record in ``files``.

    container: "list" (top-level JSON array), "map" (Scan2Cap corpus), or the key of a wrapper object
    ("questions", "annotations" for SQA3D).
    """
    parts: list[DataFrame] = []
    whole = [str(f) for f in files if f.suffix == ".json"]
    lines = [str(f) for f in files if f.suffix == ".jsonl"]
    if whole:
        df = spark.read.text(whole, wholetext=True).select(F.input_file_name().alias("file"), "value")
        df = df.withColumn("arr", _elements(F.col("value"), container))
        good = df.where(F.col("arr").isNotNull()).select("file", F.posexplode("arr").alias("pos", "raw"))
        parts.append(good.withColumn("malformed", F.lit(False)))
        bad = df.where(F.col("arr").isNull()).select(
            "file", F.lit(None).cast("int").alias("pos"), F.substring("value", 1, 2000).alias("raw"),
            F.lit(True).alias("malformed"))
        parts.append(bad)
    if lines:
        df = spark.read.text(lines).select(F.input_file_name().alias("file"), F.col("value").alias("raw"))
        df = df.where(F.length(F.trim("raw")) > 0)
        parts.append(df.select("file", F.lit(None).cast("int").alias("pos"), "raw",
                               F.from_json("raw", T.MapType(T.StringType(), T.StringType())).isNull()
                               .alias("malformed")))
    if not parts:
        schema = "file string, pos int, raw string, malformed boolean"
        parts.append(spark.createDataFrame([], schema))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.withColumn("file_split", file_split(F.col("file"))).select(*RAW_COLUMNS)


def parse(raw: DataFrame, schema: T.StructType) -> DataFrame:
    """Add struct column ``r`` parsed with the explicit native ``schema`` (PERMISSIVE, corrupt column kept)."""
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"}
    return raw.withColumn("r", F.from_json("raw", schema, opts))


def parse_reason(required: tuple[str, ...], prefix: str = "r") -> tuple[Column, Column]:
    """(reason, detail) for the parse-level checks: malformed JSON, wrong types, missing required fields."""
    missing = F.array_compact(F.array(*[F.when(F.col(f"{prefix}.{f}").isNull(), F.lit(f)) for f in required]))
    corrupt = F.col(f"{prefix}._corrupt_record").isNotNull()
    reason = F.coalesce(F.when(F.col("malformed"), F.lit("malformed_json")), F.when(corrupt, F.lit("wrong_type")),
                        F.when(F.size(missing) > 0, F.lit("missing_field")))
    detail = F.when(~F.col("malformed") & ~corrupt & (F.size(missing) > 0), F.array_join(missing, ","))
    return reason, detail
