"""``proxy3d synth data``: generate the deterministic synthetic ScanNet-layout dataset.

Defaults come from the ``synth:`` section of params.yaml; the same seed gives byte-identical files.
Writes OUT/scenes/<scene_id>/ (ScanNet export layout), OUT/splits/ and OUT/annotations/<source>/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from proxy3d.config import load_params
from proxy3d.scenes.synth.dataset import SynthConfig, generate_dataset
from proxy3d.stages._common import params_file

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="proxy3d synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="data")
    d = sub.add_parser("data", help="generate the dataset", description=__doc__)
    d.add_argument("--scenes", type=int, help="number of scenes (default: synth.scenes)")
    d.add_argument("--seed", type=int, help="random seed (default: synth.seed)")
    d.add_argument("--frames", type=int, help="frames per scene (default: synth.frames)")
    d.add_argument("--out", type=Path, help="output data root (default: data.root)")
    d.add_argument("--params", type=Path, default=None,
                   help="params file (default: ./params.yaml, or the built-in defaults without one)")
    d.add_argument("--force", action="store_true", help="replace OUT when it exists")
    d.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes rendering scenes in parallel; output is identical for any value (default: %(default)s)")
    args = p.parse_args(argv)
    params = load_params(params_file(args.params))
    s = params.synth
    cfg = SynthConfig(scenes=s.scenes if args.scenes is None else args.scenes,
                      seed=s.seed if args.seed is None else args.seed,
                      frames=s.frames if args.frames is None else args.frames, width=s.width, height=s.height,
                      val_fraction=s.val_fraction, min_objects=s.min_objects, max_objects=s.max_objects)
    out = args.out or Path(params.data.root)
    t0 = time.perf_counter()
    try:
        scenes = generate_dataset(out, cfg, force=args.force, workers=max(1, args.workers))
    except FileExistsError as e:
        print(f"proxy3d synth data: error: {e}", file=sys.stderr)
        return 1
    n_val = sum(sc.split == "val" for sc in scenes)
    print(f"synth data: {len(scenes)} scenes ({len(scenes) - n_val} train, {n_val} val) x {cfg.frames} frames "
          f"-> {out} in {time.perf_counter() - t0:.1f} s")
    return 0
