"""Stage ``proxies``: triplets -> proxy tokens per scene, plus the method × budget quality grid.

Writes ``<out>/<scene_id>.safetensors`` (configured ``proxies.method``/``budget``), ``metrics/proxies.json``
(tokens, time, and for every method × budget in ``eval_methods``/``eval_budgets``, clean and under the
label-noise model: purity, coverage, oracle grounding Acc@0.25/0.5) and ``reports/proxies_budget.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from proxy3d import tracking
from proxy3d.config import ProxiesParams, flat_dict
from proxy3d.io import write_json
from proxy3d.stages._common import load_stage_params, stage_parser
from proxy3d.tokenizer import ProxyTokenizer
from proxy3d.tokenizer.quality import evaluate_grid, has_gt_labels
from proxy3d.tokenizer.report import plot_budget
from proxy3d.tokenizer.tokenizer import check_unique_scenes
from proxy3d.tracking import Tracker
from proxy3d.types import load_triplets

log = logging.getLogger(__name__)


def run(p: ProxiesParams, triplets_dir: Path, out_dir: Path, plot_path: Path, tracker: Tracker) -> dict:
    """Tokenize every ``*.safetensors`` in ``triplets_dir``; evaluate the grid; return the metrics."""
    files = sorted(Path(triplets_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{triplets_dir}: no *.safetensors triplets; run 'proxy3d triplets' "
                                "(or 'dvc repro triplets') first, or pass --triplets")
    tok = ProxyTokenizer.from_params(p)
    check_unique_scenes(files)
    stats = [tok.tokenize_file(f, out_dir=out_dir) for f in tqdm(files, desc="proxies", unit="scene")]
    scenes, no_gt = [], []
    for f in files:  # the grid needs points, labels and boxes only: drop features to bound memory
        t = load_triplets(f)
        t.features = np.zeros((len(t), 0), dtype=np.float32)
        (scenes if has_gt_labels(t) else no_gt).append(t)
    if no_gt:
        log.warning("proxies: %d of %d scenes have %s labels, not ground truth: they are left out of the quality "
                    "grid (oracle metrics need perception.masks=gt)", len(no_gt), len(files),
                    ", ".join(sorted({str(t.meta.get("masks")) for t in no_gt})))
    grid = evaluate_grid(scenes, p) if scenes else {}
    key = str(p.budget)
    gap = {c: grid[c]["semantic"][key]["acc50"] - grid[c]["global_kmeans"][key]["acc50"]
           for c in grid if key in grid[c].get("semantic", {}) and key in grid[c].get("global_kmeans", {})}
    metrics = {"scenes": len(files), "grid_scenes": len(scenes), "method": p.method, "budget": p.budget,
               "tokens_per_scene": float(np.mean([s["tokens"] for s in stats])),
               "time_s_per_scene": float(np.mean([s["time_s"] for s in stats])),
               "nan_dropped": int(sum(s["nan_dropped"] for s in stats)),
               "unassigned": int(sum(s["unassigned"] for s in stats)),
               "semantic_minus_global_kmeans_acc50": gap, "grid": grid}
    plot_budget(grid, plot_path)
    tracker.log_metrics({k: v for k, v in metrics.items() if k != "method"})
    tracker.log_artifact(plot_path, "reports")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(
        "proxies", "Turn every scene's patch triplets into proxy tokens (semantic grouping, allocation, "
        "k-means, BFS order) and measure every method x budget: purity, coverage, oracle grounding, "
        "with ground-truth and noisy labels.", "section 'proxies:'", Path("metrics/proxies.json"),
        "proxies.budget=450")
    ap.add_argument("--triplets", type=Path, default=Path("artifacts/triplets"), help="folder of <scene>.safetensors triplets")
    ap.add_argument("--out", type=Path, default=Path("artifacts/proxies"), help="output folder for <scene>.safetensors proxies")
    ap.add_argument("--plot", type=Path, default=Path("reports/proxies_budget.png"), help="accuracy-vs-tokens PNG")
    args = ap.parse_args(argv)
    params = load_stage_params(args, outputs=("plot",))
    with tracking.stage_run("proxies", flat_dict(params.proxies, "proxies"), params.tracking) as tr:
        metrics = run(params.proxies, args.triplets, args.out, args.plot, tr)
    write_json(args.metrics, metrics)
    gap = metrics["semantic_minus_global_kmeans_acc50"]
    log.info("proxies: %d scenes, %.0f tokens/scene; semantic - global_kmeans Acc@0.5 at K=%d: %s",
             metrics["scenes"], metrics["tokens_per_scene"], metrics["budget"],
             ", ".join(f"{c} {v:+.1f}" for c, v in gap.items()))
    return 0
