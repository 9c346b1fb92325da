"""Training threads: wall time of the same stage-1 steps with ``train.threads`` 1 and 2, alternating in one run
(this machine is noisy), and the ratio per pair.

    .venv/bin/python bench/threads.py                 # 100 stage-1 steps, 1 vs 2 threads, 2 pairs
    .venv/bin/python bench/threads.py --busy          # the same with a busy-loop process on one core

Each measurement is a separate ``proxy3d train --stage 1`` process (torch's thread pool is per process) on the
pipeline's inputs (``artifacts/``: run ``dvc repro train_stage1`` or ``make demo`` first) with tracking off, into a
temporary checkpoint directory; the time is the stage's ``train_seconds`` (the loop, not start-up). ``--busy``
shows why ``train.threads`` 1 is the setting for a shared machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spin() -> None:
    while True:
        pass


def run_stage1(threads: int, steps: int, work: Path) -> float:
    metrics = work / f"m{threads}.json"
    cmd = [sys.executable, "-m", "proxy3d.cli", "train", "--stage", "1", "--checkpoints", str(work / f"ck{threads}"),
           "--metrics", str(metrics), "-S", f"train_stage1.steps={steps}", "-S", f"train.threads={threads}",
           "-S", "tracking.enabled=false", "-S", f"train.checkpoint_every={steps + 1}"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    return float(json.loads(metrics.read_text())["train_seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="stage-1 steps per measurement")
    ap.add_argument("--pairs", type=int, default=2, help="(1 thread, 2 threads) pairs, alternating")
    ap.add_argument("--busy", action="store_true", help="keep one core busy with another process meanwhile")
    args = ap.parse_args()
    if not (ROOT / "artifacts/spacespan/objects.parquet").exists():
        sys.exit("bench/threads.py: artifacts/spacespan/objects.parquet is missing; run `dvc repro train_stage1` first")
    spinner = mp.Process(target=_spin, daemon=True) if args.busy else None
    if spinner:
        spinner.start()
    try:
        print(f"stage-1 steps={args.steps} busy_core={args.busy} cpus={os.cpu_count()}")
        print("| pair | 1 thread s | 2 threads s | 1 / 2 |")
        print("|---:|---:|---:|---:|")
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.pairs):
                one, two = run_stage1(1, args.steps, Path(tmp)), run_stage1(2, args.steps, Path(tmp))
                print(f"| {i} | {one:.1f} | {two:.1f} | {one / two:.2f}x |", flush=True)
    finally:
        if spinner:
            spinner.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
