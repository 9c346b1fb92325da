"""``proxy3d score``: score a predictions file in a benchmark's submission format.

Lets other models be compared with ours on the same annotation files and the same metric code.
"""

from __future__ import annotations

import argparse
import json
import math

from proxy3d.eval.score import BENCHMARKS, score_file

FORMATS = """prediction formats (JSON array, or JSON Lines: one object per line):
  scanrefer     [{"scene_id", "object_id", "ann_id", "bbox": box}]
  multi3drefer  [{"scene_id", "ann_id", "aabb": [box, ...]}]   (empty list = no target; a query left out
                scores 0, zero-target ones included, as M3DRef-CLIP's evaluator does)
  scanqa        [{"scene_id", "question_id", "answer_top10": [...], "bbox"}]
  sqa3d         [{"question_id", "answer"}]      annotations: questions + annotations JSON files
  scan2cap      {"<scene_id>": [{"caption", "box"}]}   annotations: ScanRefer-format records (their "token"
                lists, else the description split off its punctuation) or a Scan2Cap corpus; scored as
                Scan2Cap's benchmark/eval.py: "sos ... eos", no PTB tokenizer, one box per object, IoU >= 0.5
  vsibench      {"id", "prediction"} per line   annotations: VSI-Bench jsonl/json/parquet
A box is one of (IoUs are axis-aligned: rotated corners count as their axis-aligned hull):
  8 corners     [[x, y, z] x 8]                        (ScanRefer, Scan2Cap)
  bounds        [[xmin, ymin, zmin], [xmax, ymax, zmax]]  (M3DRef-CLIP's aabb_bound; needs min <= max in every
                column, so centre + size written as two rows is refused, not misread)
  centre+size   [cx, cy, cz, dx, dy, dz]
GT boxes (--boxes): a ScanNet-layout data root (default 'data') or an objects table
  (artifacts/spacespan/objects.parquet: scene_id, object_id, label, center_x/y/z, size_x/y/z).
GT items without a prediction and predictions with unknown ids both score as wrong; for a repeated id the
last prediction is scored (counted in n_duplicate). Answers must be strings: null is a format error."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxy3d score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FORMATS)
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--predictions", required=True, help="predictions file in the benchmark's submission format")
    p.add_argument("--annotations", required=True, nargs="+", help="ground-truth annotation file(s), native format")
    p.add_argument("--boxes", default="data", help="data root or objects table with GT boxes (default: data)")
    p.add_argument("--label-map", default=None, metavar="TSV",
                   help="scanrefer: ScanNet's scannetv2-labels.combined.tsv, so the unique/multiple split uses "
                        "ScanRefer's 18 classes as its evaluation does (default: the object name itself)")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = score_file(args.benchmark, args.predictions, args.annotations, args.boxes, meteor=not args.no_meteor,
                        label_map=args.label_map)
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()},
                         indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in result)
    print(f"{args.benchmark}: {args.predictions}")
    for k in sorted(result):
        v = result[k]
        print(f"  {k:<{width}}  {'n/a' if isinstance(v, float) and math.isnan(v) else f'{v:.4f}'}")
    return 0
