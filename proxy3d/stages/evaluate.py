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
                              seed=p.seed, meteor=p.meteor, train_items=train, blind_generate=blind)
    model = f"{pp.method}@{pp.budget}"  # against every baseline (not against itself at other budgets)
    others = [v.name for v in variants if v.blind or v.kind != "model" or v.method != pp.method]
    comparisons = compare(items, texts, model, others, boxes, p.bootstrap, p.seed,
                          {"frequency": FREQUENCY_TASKS, "random_object": GROUNDING_TASKS})
    probe: dict = {}
    if p.spatial_probe > 0:
        probe, probe_texts = _spatial_probe(p, Path(spacespan_dir), variants, model, generate, scenes, blind, train)
        texts.update({f"vsi_probe/{name}": t for name, t in probe_texts.items()})
        for name, rows in compare(probe["items"], probe_texts, model, [n for n in probe_texts if n != model], boxes,
                                  p.bootstrap, p.seed).items():
            comparisons.setdefault(name, {}).update({k.replace("vsibench.", "vsi_probe.", 1): r for k, r in rows.items()})
    paths = write_report(results, md_path, plots_dir, comparisons=comparisons)
    if predictions_path is not None:
        write_json(predictions_path, {name: [{"id": str(it["id"]), "task": it["task"], "prediction": t} for it, t in
                                             zip(probe["items"] if name.startswith("vsi_probe/") else items, ts, strict=True)]
                                      for name, ts in texts.items()})
    tracker.log_metrics({**flat_metrics(results), **comparison_metrics(comparisons), **_probe_metrics(probe)})
    for path in paths:
        tracker.log_artifact(path, "reports")
    out = {"items": len(items), "variants": _clean(results), "comparisons": _clean(comparisons)}
    if probe:
        out["vsi_probe"] = {"items": len(probe["items"]), "variants": _clean(probe["variants"])}
    return out


def _spatial_probe(p: EvaluateParams, spacespan_dir: Path, variants: list, model: str, generate, scenes: SceneInputs,
                   blind, train: list[dict]) -> tuple[dict, dict[str, list[str]]]:
    """The VSI-Bench numeric probe (``evaluate.spatial_probe``): templated questions about every val object, asked
    to the model (default proxies), the blind model and the frequency baseline. Returns ({"items", "variants":
    {name: vsibench metrics}}, {name: texts})."""
    from proxy3d.eval.evaluate import spatial_probe_items
    from proxy3d.train.data import load_objects

    val = load_objects(spacespan_dir / "objects.parquet").get("val", {})
    items = spatial_probe_items(val, p.spatial_probe, p.seed)
    keep = [v for v in variants if v.name == model or v.blind or (v.kind == "frequency" and train)]
    if not items:
        log.warning("VSI-Bench numeric probe: no val scene in %s has a question to ask", spacespan_dir / "objects.parquet")
        return {"items": [], "variants": {}}, {}
    log.info("VSI-Bench numeric probe: %d templated questions on %d val scenes, variants %s", len(items), len(val),
             [v.name for v in keep])
    res, texts = evaluate(items, load_gt_boxes(spacespan_dir / "objects.parquet", set(val)), keep, generate, scenes,
                          p.batch_size, p.max_new_tokens, seed=p.seed, meteor=False, train_items=train,
                          blind_generate=blind)
    return {"items": items, "variants": {n: r["benchmarks"].get("vsibench", {}) for n, r in res.items()}}, texts


def _probe_metrics(probe: dict) -> dict[str, float]:
    """``vsi_probe.<variant>.<metric>`` -> value, for MLflow."""
    return {f"vsi_probe.{name}.{m}".replace("@", "_at_"): float(v) for name, ms in probe.get("variants", {}).items()
            for m, v in ms.items() if isinstance(v, (int, float)) and math.isfinite(v)}


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
    params = load_stage_params(args)
    with tracking.stage_run("evaluate", flat_dict(params.evaluate, "evaluate"), params.tracking) as tr:
        metrics = run(params.evaluate, params.proxies, args.checkpoint, args.spacespan, args.proxies, args.triplets,
                      args.report, args.plots, tr, args.predictions, args.blind_checkpoint)
    write_json(args.metrics, metrics)
    log.info("evaluate: %d items; report %s", metrics["items"], args.report)
    return 0
