"""Spark schemas: the one SpaceSpan schema (DESIGN §6) and the native schema of every source file.

Native schemas use the public files' field names exactly and are applied explicitly (no inference), with a
``_corrupt_record`` column so a record whose values have the wrong type is caught instead of silently nulled.
"""

from __future__ import annotations

from pyspark.sql import types as T

CORRUPT = "_corrupt_record"

SOURCES = ("scanrefer", "multi3drefer", "scanqa", "sqa3d", "scan2cap", "mmscan", "vsibench", "synthetic")
TASKS = ("grounding", "multi_grounding", "qa", "situated_qa", "caption", "attribute", "spatial_mc",
         "spatial_num", "id_align", "coord_align")
REASONS = ("malformed_json", "wrong_type", "missing_field", "empty_question", "empty_answer", "unknown_scene",
           "object_id_out_of_range", "unknown_object", "duplicate_id")

# One row per QA/instruction. position = [x, y, z]; rotation = quaternion [x, y, z, w]; both null unless situated.
RECORD = T.StructType([
    T.StructField("id", T.StringType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("task", T.StringType(), False),
    T.StructField("scene_id", T.StringType(), False),
    T.StructField("question", T.StringType(), False),
    T.StructField("answers", T.ArrayType(T.StringType()), False),
    T.StructField("target_object_ids", T.ArrayType(T.IntegerType()), False),
    T.StructField("situation", T.StringType(), True),
    T.StructField("position", T.ArrayType(T.DoubleType()), True),
    T.StructField("rotation", T.ArrayType(T.DoubleType()), True),
    T.StructField("options", T.ArrayType(T.StringType()), True),
    T.StructField("question_type", T.StringType(), True),
    T.StructField("curriculum_stage", T.IntegerType(), False),
    T.StructField("split", T.StringType(), False),
])
RECORD_COLUMNS = [f.name for f in RECORD.fields]

QUARANTINE = T.StructType([
    T.StructField("source", T.StringType(), False),
    T.StructField("reason", T.StringType(), False),
    T.StructField("detail", T.StringType(), True),
    T.StructField("id", T.StringType(), True),
    T.StructField("scene_id", T.StringType(), True),
    T.StructField("file", T.StringType(), True),
    T.StructField("raw", T.StringType(), True),
])

OBJECTS = T.StructType([
    T.StructField("scene_id", T.StringType(), False),
    T.StructField("object_id", T.IntegerType(), False),
    T.StructField("label", T.StringType(), False),
    T.StructField("category", T.IntegerType(), False),
    *[T.StructField(f"center_{a}", T.DoubleType(), False) for a in "xyz"],
    *[T.StructField(f"size_{a}", T.DoubleType(), False) for a in "xyz"],
])


def _s(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(n, t, True) for n, t in fields] + [T.StructField(CORRUPT, T.StringType())])


_STR, _LONG, _BOOL, _DBL = T.StringType(), T.LongType(), T.BooleanType(), T.DoubleType()
_STRS, _LONGS = T.ArrayType(_STR), T.ArrayType(_LONG)

NATIVE: dict[str, T.StructType] = {
    "scanrefer": _s(("scene_id", _STR), ("object_id", _STR), ("object_name", _STR), ("ann_id", _STR),
                    ("description", _STR), ("token", _STRS)),
    "multi3drefer": _s(("scene_id", _STR), ("object_id", _STR), ("object_name", _STR), ("ann_id", _LONG),
                       ("description", _STR), ("object_ids", _LONGS), ("eval_type", _STR), ("spatial", _BOOL),
                       ("color", _BOOL), ("texture", _BOOL), ("shape", _BOOL)),
    "scanqa": _s(("question_id", _STR), ("scene_id", _STR), ("question", _STR), ("answers", _STRS),
                 ("object_ids", _LONGS), ("object_names", _STRS)),
    "sqa3d_questions": _s(("question_id", _LONG), ("scene_id", _STR), ("situation", _STR),
                          ("alternative_situation", _STRS), ("question", _STR)),
    "sqa3d_annotations": _s(
        ("question_id", _LONG), ("scene_id", _STR),
        ("answers", T.ArrayType(T.StructType([T.StructField("answer", _STR), T.StructField("answer_confidence", _STR),
                                              T.StructField("answer_id", _LONG)]))),
        ("position", T.StructType([T.StructField(a, _DBL) for a in "xyz"])),
        ("rotation", T.StructType([T.StructField(a, _DBL) for a in ("_w", "_x", "_y", "_z")])),
        ("answer_type", _STR), ("question_type", _STR)),
    "scan2cap": _s(("key", _STR), ("captions", _STRS)),
    "mmscan": _s(("sub_class", _STR), ("scan_id", _STR), ("question", _STR), ("answers", _STRS),
                 ("object_ids", _LONGS), ("object_names", _STRS), ("input_bboxes_id", _LONGS), ("ID", _STR)),
    "vsibench": _s(("id", _LONG), ("dataset", _STR), ("scene_name", _STR), ("question_type", _STR),
                   ("question", _STR), ("options", _STRS), ("ground_truth", _STR)),
}

# Required native fields per source (missing -> quarantined with reason missing_field).
REQUIRED: dict[str, tuple[str, ...]] = {
    "scanrefer": ("scene_id", "object_id", "ann_id", "description"),
    "multi3drefer": ("scene_id", "ann_id", "description", "object_ids", "eval_type"),
    "scanqa": ("question_id", "scene_id", "question", "answers"),
    "sqa3d_questions": ("question_id", "scene_id", "situation", "question"),
    "sqa3d_annotations": ("question_id", "scene_id", "answers", "position", "rotation"),
    "scan2cap": ("key", "captions"),
    "mmscan": ("scan_id", "question", "answers", "ID"),
    "vsibench": ("id", "scene_name", "question_type", "question", "ground_truth"),
}
