"""Triplets throughput and memory per encoder on CPU: frames/s and peak RSS for a 32-frame scene.

Each setting runs in a fresh subprocess (so peak RSS is that setting's own): build the encoder, depth
geometry and GT masks, warm up on 2 frames, then stream one scene through ``TripletBuilder``. Reports
wall and CPU (process) frames/s for the whole triplet build and for the encoder alone, peak RSS, RSS
after model load, and the output arrays' size. The 96-frame row shows that memory grows with frames
only by the output arrays (streaming). Frames: a scene of ``--data`` (ScanNet layout) when given, else
the analytic toy world rendered on the fly at 240x320 (its rendering time is excluded; reading and
decoding a dataset's files is included).

    .venv/bin/python bench/triplets.py                        # toy world, both encoders, 1 thread
    .venv/bin/python bench/triplets.py --data data --scene scene0000_00 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = (("efficientnet_lite0", 32), ("efficientnet_lite0", 96), ("qwen2_5_vl", 32))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(encoder: str, frames: int, threads: int, data: str, scene: str) -> dict:
    import numpy as np
    import torch

    from proxy3d.perception.encoders import build_encoder
    from proxy3d.perception.geometry import DepthGeometry
    from proxy3d.perception.masks import GTMasks
    from proxy3d.perception.toy import toy_boxes, toy_frames
    from proxy3d.perception.triplets import TripletBuilder

    torch.set_num_threads(threads)
    source_time = [0.0, 0.0]  # wall, CPU seconds spent producing toy frames
    if data:
        from proxy3d.scenes.scannet import open_scene

        opened = open_scene(Path(data) / "scenes", scene, frames=frames)
        objects, n = opened.objects, len(opened)

        def stream():
            return opened.frames()
    else:
        boxes = toy_boxes(8)
        objects, n = [b.scene_object() for b in boxes], frames

        def stream():  # rendering time is measured and excluded (not part of the stage)
            it = toy_frames(boxes, frames, (240, 320))
            while True:
                t, c = time.perf_counter(), time.process_time()
                frame = next(it, None)
                source_time[0] += time.perf_counter() - t
                source_time[1] += time.process_time() - c
                if frame is None:
                    return
                yield frame
    enc = build_encoder(encoder, (240, 320), "cpu", batch_size=8)
    builder = TripletBuilder(enc, DepthGeometry(), GTMasks(), batch_size=8)
    warm = [f for _, f in zip(range(2), stream(), strict=False)]
    builder.build("warmup", warm, progress=False)
    enc.encode(warm)
    rss_loaded = _rss_mb()
    del warm
    source_time[:] = [0.0, 0.0]
    t, c = time.perf_counter(), time.process_time()
    trip = builder.build("bench", stream(), objects, n_frames=n, progress=False)
    wall, cpu = time.perf_counter() - t - source_time[0], time.process_time() - c - source_time[1]
    frames_list = [f for _, f in zip(range(16), stream(), strict=False)]  # encoder alone, frames in memory
    t, c = time.perf_counter(), time.process_time()
    enc.encode(frames_list)
    enc_wall, enc_cpu = time.perf_counter() - t, time.process_time() - c
    out_mb = sum(a.nbytes for a in (trip.features, trip.points, trip.labels, trip.valid, trip.frame)) / 2**20
    return {"encoder": encoder, "frames": n, "patches": len(trip), "feature_dim": enc.dim,
            "grid": list(enc.grid_size), "threads": threads,
            "triplets_fps_wall": n / wall, "triplets_fps_cpu": n / cpu,
            "encoder_fps_wall": len(frames_list) / enc_wall, "encoder_fps_cpu": len(frames_list) / enc_cpu,
            "rss_after_load_mb": rss_loaded, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "outputs_mb": out_mb, "valid_pct": float(100 * np.mean(trip.valid))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--data", default="", help="data root with scenes/ (default: the analytic toy world)")
    ap.add_argument("--scene", default="scene0000_00", help="scene id under --data")
    ap.add_argument("--child", nargs=2, metavar=("ENCODER", "FRAMES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.threads, args.data, args.scene)))
        return 0
    rows = []
    for encoder, frames in SETTINGS:
        cmd = [sys.executable, __file__, "--child", encoder, str(frames), "--threads", str(args.threads),
               "--data", args.data, "--scene", args.scene]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    print(f"source: {'toy world 240x320' if not args.data else args.data + '/' + args.scene}, CPU, "
          f"{args.threads} thread(s); fps = frames per second (wall | CPU time)")
    print(f"{'encoder':<20}{'frames':>7}{'C':>6}{'grid':>8}{'triplets fps':>18}{'encoder fps':>18}"
          f"{'RSS load MB':>13}{'peak RSS MB':>13}{'outputs MB':>12}")
    for r in rows:
        print(f"{r['encoder']:<20}{r['frames']:>7}{r['feature_dim']:>6}{'x'.join(map(str, r['grid'])):>8}"
              f"{r['triplets_fps_wall']:>9.2f} |{r['triplets_fps_cpu']:>6.2f}{r['encoder_fps_wall']:>11.2f} |"
              f"{r['encoder_fps_cpu']:>6.2f}{r['rss_after_load_mb']:>13.0f}{r['peak_rss_mb']:>13.0f}{r['outputs_mb']:>12.1f}")
    e32, e96 = rows[0], rows[1]
    if e96["frames"] > e32["frames"]:
        print(f"peak RSS growth {e32['frames']} -> {e96['frames']} frames: {e96['peak_rss_mb'] - e32['peak_rss_mb']:.0f} MB "
              f"(output arrays grew {e96['outputs_mb'] - e32['outputs_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
