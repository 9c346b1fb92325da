"""Synthetic dataset generation time (issue 3: default dataset in <= 90 s on 2 cores).

Generates the dataset with the ``synth:`` params into a temporary folder and prints wall time, CPU time
(process time: what the run costs on an idle machine, as the bench host is shared) and where it goes:
world building, ray casting, and encoding/writing files. Usage:

    .venv/bin/python bench/synth.py                 # default params (12 scenes x 32 frames, 320x240)
    .venv/bin/python bench/synth.py --scenes 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from proxy3d.config import load_params  # noqa: E402
from proxy3d.scenes.synth import SynthConfig, build_world, generate_dataset  # noqa: E402
from proxy3d.scenes.synth.render import intrinsics, render  # noqa: E402

BUDGET_S = 90.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--scenes", type=int, help="override synth.scenes")
    args = ap.parse_args()
    s = load_params(args.params).synth
    cfg = SynthConfig(scenes=args.scenes or s.scenes, seed=s.seed, frames=s.frames, width=s.width, height=s.height,
                      val_fraction=s.val_fraction, min_objects=s.min_objects, max_objects=s.max_objects)
    w0, c0 = time.perf_counter(), time.process_time()
    worlds = [build_world(f"scene{i:04d}_00", "train", i, cfg.frames, cfg.min_objects, cfg.max_objects)
              for i in range(cfg.scenes)]
    w1, c1 = time.perf_counter(), time.process_time()
    K = intrinsics(cfg.width, cfg.height)
    for w in worlds:
        for pose in w.poses:
            render(pose=pose, K=K, width=cfg.width, height=cfg.height, **w.render_args())
    w2, c2 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(Path(tmp) / "data", cfg, progress=False)
    w3, c3 = time.perf_counter(), time.process_time()
    frames = cfg.scenes * cfg.frames
    print(f"dataset: {cfg.scenes} scenes x {cfg.frames} frames at {cfg.width}x{cfg.height}")
    print(f"  build worlds      wall {w1 - w0:6.2f} s  cpu {c1 - c0:6.2f} s")
    print(f"  ray casting       wall {w2 - w1:6.2f} s  cpu {c2 - c1:6.2f} s  ({1000 * (c2 - c1) / frames:.1f} ms cpu/frame)")
    print(f"  full generation   wall {w3 - w2:6.2f} s  cpu {c3 - c2:6.2f} s  (render + encode + write + annotations)")
    print(f"  budget {BUDGET_S:.0f} s: cpu/budget = {(c3 - c2) / BUDGET_S:.2f}, wall/budget = {(w3 - w2) / BUDGET_S:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
