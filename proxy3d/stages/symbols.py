"""Stage ``symbols``: render symbol maps (Stable Diffusion) and identifier maps, with a manifest.

Outputs ``<out>/symbols/<cid:03d>.png``, ``<out>/identifiers/<id:03d>.png``, ``<out>/manifest.json``;
metrics to ``metrics/symbols.json``. Rerunning skips files whose hash matches the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from proxy3d import tracking
from proxy3d.config import SymbolsParams, flat_dict
from proxy3d.io import write_json
from proxy3d.stages._common import load_stage_params, stage_parser
from proxy3d.symbols import render_maps
from proxy3d.tracking import Tracker

log = logging.getLogger(__name__)


def run(p: SymbolsParams, out_dir: Path, tracker: Tracker) -> dict:
    """Render every map of ``p`` into ``out_dir``; log metrics and the manifest; return the metrics."""
    manifest, metrics = render_maps(p, out_dir)
    metrics["symbols"] = len(manifest["symbols"])
    metrics["identifiers"] = len(manifest["identifiers"])
    tracker.set_tags({"symbols.pipeline_kind": manifest["pipeline_kind"],
                      "symbols.glyph_blended": str(manifest["glyph_blended"])})
    tracker.log_metrics(metrics)
    tracker.log_artifact(out_dir / "manifest.json", "symbols")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(
        "symbols", "Render one icon per category with a Stable Diffusion pipeline (symbols.pipeline: 'tiny' "
        "random-init offline, or a local checkpoint folder) and the <OBJ000>..<OBJ099> numeral maps. "
        "Existing files whose sha256 matches the manifest are skipped.",
        "section 'symbols:'", Path("metrics/symbols.json"), "symbols.pipeline=/models/sd15")
    ap.add_argument("--out", type=Path, default=Path("artifacts/symbols"), help="output folder")
    args = ap.parse_args(argv)
    params = load_stage_params(args)
    with tracking.stage_run("symbols", flat_dict(params.symbols, "symbols"), params.tracking) as tr:
        metrics = run(params.symbols, args.out, tr)
    write_json(args.metrics, metrics)
    log.info("symbols: %d icons + %d identifiers in %s (%.1f s rendering)", metrics["symbols"],
             metrics["identifiers"], args.out, metrics["render_seconds"])
    return 0
