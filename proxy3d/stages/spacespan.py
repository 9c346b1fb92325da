"""Stage ``spacespan``: native annotation files -> one SpaceSpan Parquet dataset (PySpark).

Reads every source in ``spacespan.sources`` (paths relative to ``data.root``) and the scene object tables of
``<data>/scenes``; writes ``artifacts/spacespan/{records,quarantine,objects.parquet}`` and
``metrics/spacespan.json``. Any Spark master works: ``--master spark://host:7077`` or ``spacespan.master``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from proxy3d import tracking
from proxy3d.config import SpaceSpanParams, flat_dict
from proxy3d.io import write_json
from proxy3d.spacespan import assemble, get_spark, resolve_sources
from proxy3d.spacespan.job import check_out_dir
from proxy3d.spacespan.objects import load_rows
from proxy3d.stages._common import load_stage_params, stage_parser
from proxy3d.tracking import Tracker

log = logging.getLogger(__name__)


def run(p: SpaceSpanParams, data_root: Path, out_dir: Path, tracker: Tracker) -> dict[str, Any]:
    """Assemble SpaceSpan from ``data_root`` into ``out_dir``; logs counts and the quarantine to ``tracker``."""
    check_out_dir(out_dir, data_root)
    sources = resolve_sources(p, data_root)
    objects = load_rows(data_root)
    spark = get_spark(p.master, p.driver_memory, p.shuffle_partitions)
    metrics = assemble(spark, p, sources, objects, out_dir)
    tracker.log_metrics({"records": metrics["records"], "quarantined": metrics["quarantined"],
                         "duplicates_removed": metrics["duplicates_removed"], "seconds": metrics["seconds"],
                         **{f"records_stage{k}": v for k, v in metrics["records_by_stage"].items()},
                         **{f"records_{k}": v for k, v in metrics["records_by_split"].items()}})
    tracker.log_artifact(out_dir / "quarantine", "quarantine")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(
        "spacespan", "Assemble SpaceSpan with PySpark: read ScanRefer, Multi3DRefer, ScanQA, SQA3D, Scan2Cap, MMScan "
        "QA and VSI-Bench files in their public formats, quarantine bad records (with a reason), de-duplicate, split "
        "by scene, add curriculum stage 1-3 items, and write Parquet partitioned by curriculum_stage and split.",
        "sections 'data:' and 'spacespan:'", Path("metrics/spacespan.json"), "spacespan.val_fraction=0.2")
    ap.add_argument("--data", type=Path, default=None, help="data root (default: data.root from params)")
    ap.add_argument("--out", type=Path, default=Path("artifacts/spacespan"), help="output folder")
    ap.add_argument("--master", default=None, help="Spark master, e.g. local[4] or spark://host:7077 "
                    "(default: spacespan.master)")
    args = ap.parse_args(argv)
    params = load_stage_params(args, [f"spacespan.master={args.master}"] if args.master else [])
    root = args.data if args.data is not None else Path(params.data.root)
    with tracking.stage_run("spacespan", {**flat_dict(params.spacespan, "spacespan"), "data.root": str(root)},
                            params.tracking) as tr:
        metrics = run(params.spacespan, root, args.out, tr)
    write_json(args.metrics, metrics)
    log.info("spacespan: %d records (%s), %d quarantined, %d duplicates removed -> %s", metrics["records"],
             metrics["records_by_stage"], metrics["quarantined"], metrics["duplicates_removed"], args.out)
    return 0


if __name__ == "__main__":  # spark-submit proxy3d/stages/spacespan.py --master spark://host:7077
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
