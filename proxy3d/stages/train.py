"""Stage ``train_stage<N>``: one curriculum stage of the VLM under DeepSpeed (``proxy3d train --stage N``).

Reads the SpaceSpan subset, symbols (stage 1), proxies (stage 4) and the previous stage's checkpoint;
writes ``artifacts/checkpoints/stage<N>/`` and ``metrics/train_stage<N>.json``. A killed run resumes from
its last checkpoint in ``artifacts/checkpoints/stage<N>/ds``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from proxy3d import tracking
from proxy3d.config import Params, flat_dict, load_params
from proxy3d.io import write_json
from proxy3d.tracking import Tracker
from proxy3d.train.loop import StagePaths, stage_params, train_stage


def run(stage: int, params: Params, paths: StagePaths, tracker: Tracker) -> dict:
    return train_stage(stage, params, paths, tracker)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="proxy3d train", description="Train curriculum stage N (1-4) with DeepSpeed; "
                                 "each stage starts from the previous stage's checkpoint.")
    ap.add_argument("--stage", type=int, required=True, choices=[1, 2, 3, 4], help="curriculum stage")
    ap.add_argument("--params", default="params.yaml", help="params file (sections model, train, train_stage<N>)")
    ap.add_argument("--spacespan", type=Path, default=Path("artifacts/spacespan"), help="SpaceSpan output dir")
    ap.add_argument("--symbols", type=Path, default=Path("artifacts/symbols"), help="symbol/identifier maps dir")
    ap.add_argument("--proxies", type=Path, default=Path("artifacts/proxies"), help="proxies dir (stage 4)")
    ap.add_argument("--checkpoints", type=Path, default=Path("artifacts/checkpoints"), help="checkpoints root")
    ap.add_argument("--metrics", type=Path, default=None, help="metrics JSON (default metrics/train_stage<N>.json)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a param")
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".cache/torch_extensions").resolve()))
    params = load_params(args.params, args.set)
    name = f"train_stage{args.stage}"
    logged = {**flat_dict(params.model, "model"), **flat_dict(params.train, "train"),
              **flat_dict(stage_params(params, args.stage), name)}
    paths = StagePaths(args.spacespan, args.symbols, args.proxies, args.checkpoints)
    with tracking.stage_run(name, logged, params.tracking) as tracker:
        metrics = run(args.stage, params, paths, tracker)
        tracker.log_artifact(paths.checkpoints / f"stage{args.stage}" / "bundle.json", "checkpoint")
    write_json(args.metrics or Path("metrics") / f"{name}.json", metrics)
    print(f"stage {args.stage}: {metrics}")
    return 0
