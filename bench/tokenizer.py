"""Tokenizer benchmark (issue 7 item 4): ratios measured in one process, one run.

(a) ProxyTokenizer time at L = 43,008 patches (32 frames x 32x42), C = 1280, K = 700, over the time of
    one read pass over the feature matrix (``F.sum(0)``) — goal <= 8x;
(b) time at 4L over time at L — goal <= 4.2;
(c) ProxyTokenizer over each baseline's time (should not be slower than global_kmeans), plus the
    per-group faiss backend and global k-means as faiss computes it (every point against every centroid);
(d) peak extra memory during tokenization (tracemalloc: numpy/scipy buffers) over the feature
    matrix's size — goal <= 10%.
Every time is the minimum of ``--repeat`` runs (the machine is shared). Usage:
``.venv/bin/python bench/tokenizer.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

from proxy3d import ProxyTokenizer
from proxy3d.tokenizer.synthetic import make_triplets


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=32 * 32 * 42, help="L, patches per scene (default 32 frames x 32x42)")
    ap.add_argument("--channels", type=int, default=1280, help="C, feature width (default 1280)")
    ap.add_argument("--budget", type=int, default=700, help="K, proxies per scene (default 700)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the fastest counts (default 3)")
    args = ap.parse_args()
    L, C, K, R = args.patches, args.channels, args.budget, args.repeat
    t = make_triplets(L, C, n_furniture=16, seed=0)
    F = t.features
    tok = ProxyTokenizer(K)
    runs = {"one read pass over F": lambda: F.sum(axis=0), "semantic (batched k-means)": lambda: tok.tokenize(t)}
    for label, tk in (("semantic (faiss per group)", ProxyTokenizer(K, kmeans_backend="faiss")),
                      *((m, ProxyTokenizer(K, method=m)) for m in ("global_kmeans", "uniform", "voxel", "fps")),
                      ("global_kmeans (faiss)", ProxyTokenizer(K, method="global_kmeans", kmeans_backend="faiss"))):
        runs[label] = lambda tk=tk: tk.tokenize(t)
    # round-robin so every entry sees the same mix of machine load; keep each one's fastest run
    times = {label: float("inf") for label in runs}
    for _ in range(R):
        for label, fn in runs.items():
            times[label] = min(times[label], best(fn, 1))
    pass_s = times.pop("one read pass over F")
    sem = times["semantic (batched k-means)"]
    rows = list(times.items())

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tok.tokenize(t)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()

    t4 = make_triplets(4 * L, C, n_furniture=16, seed=0)
    sem4 = best(lambda: tok.tokenize(t4), R)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; L={L} C={C} K={K}; "
          f"min of {R} runs")
    print(f"one read pass over F ({F.nbytes / 2**20:.0f} MiB): {pass_s * 1e3:.1f} ms")
    print(f"{'method':<30}{'time ms':>10}{'x pass':>10}{'semantic / this':>18}")
    for label, s in rows:
        print(f"{label:<30}{s * 1e3:>10.1f}{s / pass_s:>10.1f}{sem / s:>18.2f}")
    print(f"(a) semantic / one pass       = {sem / pass_s:.1f}x   (goal <= 8)")
    print(f"(b) time at 4L / time at L    = {sem4 / sem:.2f}    (goal <= 4.2; {sem4 * 1e3:.0f} ms at L={4 * L})")
    glob = dict(rows)["global_kmeans"]
    print(f"(c) semantic / global_kmeans  = {sem / glob:.2f}    (goal <= 1)")
    print(f"(d) peak extra memory         = {peak / 2**20:.1f} MiB = {100 * peak / F.nbytes:.1f}% of F (goal <= 10%)")


if __name__ == "__main__":
    main()
