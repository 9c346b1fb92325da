"""Curriculum benchmark: wall time of the four training stages on the ``tiny`` preset and the stage-1/2
probes on val scenes, per seed, next to their trivial baselines.

    .venv/bin/python bench/curriculum.py --seeds 0 1 2          # all four stages, 3 seeds
    .venv/bin/python bench/curriculum.py --seeds 0 --stages 1 -S train.probe_every=100

Inputs: the pipeline's artifacts (``artifacts/spacespan``, ``artifacts/symbols``, ``artifacts/proxies``) where
present; otherwise a sandbox built from the ``data/`` scenes' object tables (+ drawn symbols, random-feature
proxies), so the benchmark runs before the upstream stages have. Targets (issue 8): four stages <= 12 min on
2 CPU cores; stage 1 >= 90% "What is <OBJ###>?" and >= 80% grounding; stage 2 nearest-object >= 2x chance and
distance MRA above the median-distance baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def inputs(work: Path, data: Path) -> tuple[object, str]:
    from proxy3d.train.loop import StagePaths
    from proxy3d.train.toy import objects_from_scenes, write_toy_inputs

    art = ROOT / "artifacts"
    if (art / "spacespan/objects.parquet").exists() and (art / "symbols/manifest.json").exists():
        proxies = art / "proxies" if any((art / "proxies").glob("*.safetensors")) else None
        sandbox = write_toy_inputs(work / "sandbox", table=__import__("pandas").read_parquet(art / "spacespan/objects.parquet"))
        return StagePaths(art / "spacespan", art / "symbols", proxies or sandbox.proxies, work / "checkpoints"), "artifacts"
    paths = write_toy_inputs(work / "sandbox", table=objects_from_scenes(data))
    return StagePaths(paths.spacespan, paths.symbols, paths.proxies, work / "checkpoints"), f"sandbox from {data}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (train.seed), one run each")
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4], help="curriculum stages to train, in order")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file (default: the repo's)")
    ap.add_argument("--data", type=Path, default=ROOT / "data",
                    help="synthetic data root, used when artifacts/ has no SpaceSpan output")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench_curriculum",
                    help="checkpoints go to <work>/seed<N>/, which is deleted first (default .cache/bench_curriculum)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: params' train.threads, 2; use 1 when another process busies a core)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args()
    args.work, args.data, args.params = args.work.resolve(), args.data.resolve(), str(Path(args.params).resolve())
    args.json = args.json.resolve() if args.json else None
    os.chdir(ROOT)  # params.yaml's relative paths (train.deepspeed_config) are relative to the repo root
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import shutil

    from proxy3d.config import load_params
    from proxy3d.tracking import NullTracker
    from proxy3d.train.loop import StagePaths, train_stage

    results = []
    for seed in args.seeds:
        work = args.work / f"seed{seed}"
        shutil.rmtree(work, ignore_errors=True)
        paths, source = inputs(work, args.data)
        params = load_params(args.params, [*args.set, f"train.seed={seed}", "train.device=cpu",
                                                  *([f"train.threads={args.threads}"] if args.threads is not None else [])])
        row: dict[str, object] = {"seed": seed, "inputs": source}
        total = 0.0
        for st in args.stages:
            t0 = time.perf_counter()
            m = train_stage(st, params, StagePaths(paths.spacespan, paths.symbols, paths.proxies, paths.checkpoints),
                            NullTracker())
            dt = time.perf_counter() - t0
            total += dt
            row[f"stage{st}"] = {"seconds": round(dt, 1), **{k: round(v, 4) for k, v in m.items()}}
        row["total_seconds"] = round(total, 1)
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
    print("\nseed | total s | " + " | ".join(f"stage{s} s" for s in args.stages) + " | what_is (majority) | grounding (chance) | closest (chance) | MRA (median) | where (median centre)")
    for r in results:
        s1, s2 = r.get("stage1", {}), r.get("stage2", {})
        print(f"{r['seed']} | {r['total_seconds']} | " + " | ".join(str(r[f'stage{s}']['seconds']) for s in args.stages)
              + f" | {s1.get('what_is_acc', '-')} ({s1.get('what_is_majority_baseline', '-')}) | "
              f"{s1.get('grounding_acc', '-')} ({s1.get('grounding_chance', '-')}) | {s2.get('closest_acc', '-')} "
              f"({s2.get('closest_chance', '-')}) | {s2.get('distance_mra', '-')} ({s2.get('distance_mra_median_baseline', '-')})"
              f" | {s2.get('where_acc', '-')} ({s2.get('where_median_baseline', '-')})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
