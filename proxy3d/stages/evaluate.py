"""Stage ``evaluate``: the stage-4 model and its baselines on the val split of every task.

Writes ``metrics/eval.json`` (per variant and benchmark, the bootstrap ``comparisons`` and the ``vsi_probe``),
``reports/eval.md`` (tables like the paper's Tables 2-4 and the model-vs-baseline intervals), ``reports/eval/*.png``
and the generated texts ``reports/eval_predictions.json`` (probe answers under ``vsi_probe/<variant>``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from proxy3d import tracking
from proxy3d.config import EvaluateParams, ProxiesParams, flat_dict
from proxy3d.eval.evaluate import (
    FREQUENCY_TASKS,
    SceneInputs,
    build_variants,
    evaluate,
    flat_metrics,
    model_generate_fn,
    select_items,
)
from proxy3d.eval.records import load_gt_boxes
from proxy3d.eval.report import write_report
from proxy3d.eval.significance import compare, comparison_metrics
from proxy3d.eval.tasks import GROUNDING_TASKS
from proxy3d.io import spacespan_partition, write_json
from proxy3d.stages._common import load_stage_params, stage_parser
from proxy3d.tracking import Tracker

log = logging.getLogger(__name__)


def _clean(obj: object) -> object:
    """NaN -> None so the JSON is strict (DVC, browsers)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run(p: EvaluateParams, pp: ProxiesParams, ckpt_dir: Path, spacespan_dir: Path, proxies_dir: Path,
        triplets_dir: Path, md_path: Path, plots_dir: Path, tracker: Tracker,
        predictions_path: Path | None = None, blind_ckpt_dir: Path | None = None) -> dict:
    """``blind_ckpt_dir``: the blind-trained model (``proxy3d train --stage 4 --blind``), required when
    ``evaluate.baselines`` has ``blind``."""
    val_dir = spacespan_partition(spacespan_dir, 4, "val")
    if not val_dir.exists():
        raise FileNotFoundError(f"{val_dir}: no val split; run 'dvc repro spacespan' first")
    items = select_items(pd.read_parquet(val_dir).to_dict("records"), p.max_items_per_task, p.seed)
    train_dir = spacespan_partition(spacespan_dir, 4, "train")
    train = pd.read_parquet(train_dir).to_dict("records") if "frequency" in p.baselines and train_dir.exists() else []
    boxes = load_gt_boxes(Path(spacespan_dir) / "objects.parquet", {str(it["scene_id"]) for it in items})
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if p.device == "auto" else p.device
    variants = build_variants(p.budgets, p.baselines, pp.method, pp.budget)
    blind = None
    if "blind" in p.baselines:
        if blind_ckpt_dir is None or not (Path(blind_ckpt_dir) / "bundle.json").exists():
            raise FileNotFoundError(f"{blind_ckpt_dir}: no blind-trained model for the blind baseline; run `dvc repro "
                                    "train_blind` (proxy3d train --stage 4 --blind) or drop blind from evaluate.baselines")
        blind = model_generate_fn(Path(blind_ckpt_dir), device, p.batch_size)
    generate, scenes = model_generate_fn(Path(ckpt_dir), device, p.batch_size), SceneInputs(proxies_dir, triplets_dir, pp)
    results, texts = evaluate(items, boxes, variants, generate, scenes, p.batch_size, p.max_new_tokens,
                              seed=p.seed, meteor=p.meteor, train_items=train, blind_generate=blind,
                              box_source=p.box_source)
    model = f"{pp.method}@{pp.budget}"  # against every baseline (not against itself at other budgets)
    others = [v.name for v in variants if v.blind or v.kind != "model" or v.method != pp.method]
    scene_ids = sorted({str(it["scene_id"]) for it in items})
    named = {v.name: scenes.pred_boxes(v, scene_ids) for v in variants} if p.box_source == "proxies" else None
    comparisons = compare(items, texts, model, others, boxes, p.bootstrap, p.seed,
                          {"frequency": FREQUENCY_TASKS, "random_object": GROUNDING_TASKS}, named)
    probe_items, probe_results, probe_texts = [], {}, {}
    if p.spatial_probe > 0:
        probe_items, probe_results, probe_texts = _spatial_probe(p, Path(spacespan_dir), variants, model, generate,
                                                                 scenes, boxes, blind, train)
        for name, rows in compare(probe_items, probe_texts, model, [n for n in probe_texts if n != model], boxes,
                                  p.bootstrap, p.seed).items():
            comparisons.setdefault(name, {}).update({k.replace("vsibench.", "vsi_probe.", 1): r for k, r in rows.items()})
    paths = write_report(results, md_path, plots_dir, comparisons=comparisons, box_source=p.box_source)
    if predictions_path is not None:
        answered = ((items, texts, ""), (probe_items, probe_texts, "vsi_probe/"))
        write_json(predictions_path, {prefix + name: [{"id": str(it["id"]), "task": it["task"], "prediction": t}
                                                      for it, t in zip(its, ts, strict=True)]
                                      for its, by_name, prefix in answered for name, ts in by_name.items()})
        paths = [*paths, Path(predictions_path)]  # what every score came from, next to the report
    tracker.log_metrics({**flat_metrics(results), **comparison_metrics(comparisons),
                         **{f"vsi_probe.{k}": v for k, v in flat_metrics(probe_results).items()}})
    for path in paths:
        tracker.log_artifact(path, "reports")
    out = {"items": len(items), "variants": _clean(results), "comparisons": _clean(comparisons)}
    if p.spatial_probe > 0:
        out["vsi_probe"] = {"items": len(probe_items), "variants": _clean(
            {name: r["benchmarks"].get("vsibench", {}) for name, r in probe_results.items()})}
    return out


def _spatial_probe(p: EvaluateParams, spacespan_dir: Path, variants: list, model: str, generate, scenes: SceneInputs,
                   boxes, blind, train: list[dict]) -> tuple[list[dict], dict, dict[str, list[str]]]:
    """The VSI-Bench numeric probe (``evaluate.spatial_probe``): templated questions about every val object, asked
    to the model (default proxies), the blind model and the frequency baseline. Returns (items, results and texts
    per variant as :func:`evaluate` gives them)."""
    from proxy3d.eval.evaluate import spatial_probe_items
    from proxy3d.train.data import load_objects

    table = spacespan_dir / "objects.parquet"
    val = load_objects(table).get("val", {})
    items = spatial_probe_items(val, p.spatial_probe, p.seed)
    keep = [v for v in variants if v.name == model or v.blind or (v.kind == "frequency" and train)]
    if not items:
        log.warning("VSI-Bench numeric probe: no val scene in %s has a question to ask", table)
        return [], {}, {}
    log.info("VSI-Bench numeric probe: %d templated questions on %d val scenes, variants %s", len(items), len(val),
             [v.name for v in keep])
    # numeric VSI-Bench items are scored from the answer text alone: ``boxes`` is passed through, never read
    res, texts = evaluate(items, boxes, keep, generate, scenes, p.batch_size, p.max_new_tokens, seed=p.seed,
                          meteor=False, train_items=train, blind_generate=blind)
    return items, res, texts


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser(
        "evaluate", "Evaluate the stage-4 model on the val split of every task (batched greedy generation), "
        "with baselines (blind, random object, frequency, global k-means proxies) and token budgets in one table, "
        "paired-bootstrap intervals against each baseline (evaluate.bootstrap) and a VSI-Bench numeric probe "
        "on every val object (evaluate.spatial_probe).",
        "sections 'evaluate:', 'proxies:'", Path("metrics/eval.json"), "evaluate.max_items_per_task=50")
    ap.add_argument("--checkpoint", type=Path, default=Path("artifacts/checkpoints/stage4"), help="stage-4 model dir")
    ap.add_argument("--blind-checkpoint", type=Path, default=Path("artifacts/checkpoints/stage4_blind"),
                    help="blind-trained model dir (proxy3d train --stage 4 --blind), for the blind baseline")
    ap.add_argument("--spacespan", type=Path, default=Path("artifacts/spacespan"), help="SpaceSpan output dir")
    ap.add_argument("--proxies", type=Path, default=Path("artifacts/proxies"), help="proxies of the default method/budget")
    ap.add_argument("--triplets", type=Path, default=Path("artifacts/triplets"), help="triplets (other methods/budgets)")
    ap.add_argument("--report", type=Path, default=Path("reports/eval.md"), help="Markdown report to write")
    ap.add_argument("--plots", type=Path, default=Path("reports/eval"), help="folder for the PNG plots")
    ap.add_argument("--predictions", type=Path, default=Path("reports/eval_predictions.json"),
                    help="generated texts of every variant (JSON)")
    args = ap.parse_args(argv)
    params = load_stage_params(args, outputs=("report", "predictions"))
    if args.plots.exists() and not args.plots.is_dir():
        raise ValueError(f"--plots {args.plots} is a file; give a folder for the PNG plots")
    with tracking.stage_run("evaluate", {**flat_dict(params.evaluate, "evaluate"),
                                                **flat_dict(params.proxies, "proxies")}, params.tracking) as tr:
        metrics = run(params.evaluate, params.proxies, args.checkpoint, args.spacespan, args.proxies, args.triplets,
                      args.report, args.plots, tr, args.predictions, args.blind_checkpoint)
    write_json(args.metrics, metrics)
    log.info("evaluate: %d items; report %s", metrics["items"], args.report)
    return 0
