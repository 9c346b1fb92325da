"""Stage ``train_stage<N>``: one curriculum stage of the VLM under DeepSpeed (``proxy3d train --stage N``).

Reads the SpaceSpan subset, symbols (stage 1), proxies (stage 4) and the previous stage's checkpoint;
writes ``artifacts/checkpoints/stage<N>/`` and ``metrics/train_stage<N>.json``. A killed run resumes from
its last checkpoint in ``artifacts/checkpoints/stage<N>/ds``. ``--blind`` (stage ``train_blind``) trains stage 4
again with no visual tokens into ``artifacts/checkpoints/stage4_blind/``: the evaluation's blind baseline.
"""

from __future__ import annotations

import os
from pathlib import Path

from proxy3d import tracking
from proxy3d.config import Params, flat_dict
from proxy3d.io import write_json
from proxy3d.stages._common import load_stage_params, stage_parser
from proxy3d.tracking import Tracker
from proxy3d.train.loop import StagePaths, stage_dir, stage_params, train_stage


def run(stage: int, params: Params, paths: StagePaths, tracker: Tracker, blind: bool = False) -> dict:
    return train_stage(stage, params, paths, tracker, blind=blind)


def main(argv: list[str] | None = None) -> int:
    ap = stage_parser("train", "Train curriculum stage N (1-4) with DeepSpeed; each stage starts from the previous "
                      "stage's checkpoint.", "sections model, train, train_stage<N>", None, "train.seed=1",
                      metrics_help="metrics JSON (default metrics/train_stage<N>.json)", metavar="SECTION.KEY=VALUE")
    ap.add_argument("--stage", type=int, required=True, choices=[1, 2, 3, 4], help="curriculum stage")
    ap.add_argument("--spacespan", type=Path, default=Path("artifacts/spacespan"), help="SpaceSpan output dir")
    ap.add_argument("--symbols", type=Path, default=Path("artifacts/symbols"), help="symbol/identifier maps dir")
    ap.add_argument("--proxies", type=Path, default=Path("artifacts/proxies"), help="proxies dir (stage 4)")
    ap.add_argument("--checkpoints", type=Path, default=Path("artifacts/checkpoints"), help="checkpoints root")
    ap.add_argument("--blind", action="store_true",
                    help="stage 4 with no visual tokens, into <checkpoints>/stage4_blind and metrics/train_blind.json: "
                         "the evaluation's blind baseline (DVC stage train_blind)")
    args = ap.parse_args(argv)
    if args.blind and args.stage != 4:
        ap.error(f"--blind trains the blind baseline of stage 4; got --stage {args.stage}")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".cache/torch_extensions").resolve()))
    params = load_stage_params(args)
    name = "train_blind" if args.blind else f"train_stage{args.stage}"
    logged = {**flat_dict(params.model, "model"), **flat_dict(params.train, "train"),
              **flat_dict(stage_params(params, args.stage), f"train_stage{args.stage}")}
    paths = StagePaths(args.spacespan, args.symbols, args.proxies, args.checkpoints)
    with tracking.stage_run(name, logged, params.tracking) as tracker:
        metrics = run(args.stage, params, paths, tracker, blind=args.blind)
        tracker.log_artifact(stage_dir(paths.checkpoints, args.stage, args.blind) / "bundle.json", "checkpoint")
    write_json(args.metrics or Path("metrics") / f"{name}.json", metrics)
    print(f"stage {args.stage}: {metrics}")
    return 0
