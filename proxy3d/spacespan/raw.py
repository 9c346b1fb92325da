"""Load native annotation files as one raw JSON string per record, keeping malformed input as rows.

A ``.json`` file is read whole (top-level list, ``{"questions": [...]}``-style wrapper, Scan2Cap's
key -> captions map, or MMScan's split -> records map) and exploded into records; a ``.jsonl`` file gives one
record per line. A file, line or container entry that is not valid JSON of the expected shape becomes one row
with ``malformed = true`` (quarantined later), never an exception.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

RAW_COLUMNS = ["file", "file_split", "pos", "raw", "malformed"]
_SPLIT_RE = r"(?:^|[_.-])(train|val|test)[_.-]"
_STRINGS = T.ArrayType(T.StringType())
_TEXTS = T.MapType(T.StringType(), T.StringType())  # each value kept as its JSON text, parsed one by one


def _split_name(name: Column) -> Column:
    """'train' for train, 'val' for val or test, else null."""
    return F.when(name == "train", "train").when(name.isin("val", "test"), "val")


def file_split(file: Column) -> Column:
    """The split a source's own file name declares: 'train', 'val' (val or test), or null. Only the name
    counts: a folder such as ``my_val_runs/`` or ``exp-test-1/`` says nothing about the files in it."""
    return _split_name(F.regexp_extract(F.element_at(F.split(file, "/"), -1), _SPLIT_RE, 1))


def _record(raw: Column, split: Column | None = None, malformed: bool = False) -> Column:
    return F.struct((F.lit(None).cast("string") if split is None else split).alias("split"), raw.alias("raw"),
                    F.lit(malformed).alias("malformed"))


def _caption_entry(e: Column) -> Column:
    """One Scan2Cap entry as ``{"key", "captions"}``; a value that is not a list stays as it is (quarantined
    by the native schema), so one bad entry does not lose the file."""
    captions = F.from_json(e["value"], _STRINGS)
    raw = F.when(captions.isNotNull(), F.to_json(F.struct(e["key"].alias("key"), captions.alias("captions"))))
    return _record(F.coalesce(raw, F.to_json(F.struct(e["key"].alias("key"), e["value"].alias("captions")))))


def _split_entry(e: Column) -> Column:
    """The records of one split key (MMScan's ``{"train": [...], "val": [...], "test": [...]}``); a value that
    is not a list is one malformed row."""
    records = F.transform(F.from_json(e["value"], _STRINGS), lambda x: _record(x, e["key"]))
    bad = F.substring(F.coalesce(e["value"], F.lit("null")), 1, 2000)
    return F.coalesce(records, F.array(_record(bad, e["key"], True)))


def _elements(value: Column, container: str) -> Column:
    """One whole file's records as array<struct<split, raw, malformed>>; null if it is not the container."""
    if container in ("list", "splits"):
        listed = F.transform(F.from_json(value, _STRINGS), lambda x: _record(x))
        if container == "list":
            return listed
        by_split = F.transform(F.map_entries(F.from_json(value, _TEXTS)), _split_entry)
        return F.coalesce(listed, F.flatten(by_split))
    if container == "map":
        return F.transform(F.map_entries(F.from_json(value, _TEXTS)), _caption_entry)
    wrapped = F.from_json(value, T.StructType([T.StructField(container, _STRINGS)]))
    return F.transform(wrapped[container], lambda x: _record(x))


def load_raw(spark: SparkSession, files: list[Path], container: str = "list") -> DataFrame:
    """Rows (file, file_split, pos, raw, malformed) for every record in ``files``.

    container: "list" (top-level JSON array), "map" (Scan2Cap corpus), "splits" (a top-level array, or an
    object of split name -> records whose key gives ``file_split``: MMScan's ``MMScan_QA.json``), or the key
    of a wrapper object ("questions", "annotations" for SQA3D).
    """
    parts: list[DataFrame] = []
    whole = [str(f) for f in files if f.suffix == ".json"]
    lines = [str(f) for f in files if f.suffix == ".jsonl"]
    no_split = F.lit(None).cast("string").alias("split")
    if whole:
        df = spark.read.text(whole, wholetext=True).select(F.input_file_name().alias("file"), "value")
        df = df.withColumn("arr", _elements(F.col("value"), container))
        good = df.where(F.col("arr").isNotNull()).select("file", F.posexplode("arr").alias("pos", "e"))
        parts.append(good.select("file", "pos", "e.raw", "e.malformed", "e.split"))
        bad = df.where(F.col("arr").isNull()).select(
            "file", F.lit(None).cast("int").alias("pos"), F.substring("value", 1, 2000).alias("raw"),
            F.lit(True).alias("malformed"), no_split)
        parts.append(bad)
    if lines:
        df = spark.read.text(lines).select(F.input_file_name().alias("file"), F.col("value").alias("raw"))
        df = df.where(F.length(F.trim("raw")) > 0)
        parts.append(df.select("file", F.lit(None).cast("int").alias("pos"), "raw",
                               F.from_json("raw", T.MapType(T.StringType(), T.StringType())).isNull()
                               .alias("malformed"), no_split))
    if not parts:
        schema = "file string, pos int, raw string, malformed boolean, split string"
        parts.append(spark.createDataFrame([], schema))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    split = F.coalesce(_split_name(F.col("split")), file_split(F.col("file")))
    return out.withColumn("file_split", split).select(*RAW_COLUMNS)


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
