"""Time and memory of the cleaner's most-similar pairs (`lightcycle.clean.similar.top_pairs`) as the
dataset grows: the top k cosine pairs of n random d-dimensional features, a block of rows at a time.

Each size runs in a fresh process, so its peak resident memory (`ru_maxrss`) is its own; reported
beside the features' own size and the n x n matrix the blocks avoid. One thread (a shared machine:
CPU seconds are the process's own, wall seconds include waiting for a core).

    python bench/clean_similar.py --quick   # n = 10^4 and 3 * 10^4, d = 256
    python bench/clean_similar.py           # + n = 10^5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int, d: int, k: int) -> dict[str, float]:
    import torch

    from lightcycle.clean.similar import top_pairs

    torch.set_num_threads(1)
    features = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    pairs = top_pairs(features, k)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert len(pairs) == k
    return {"n": n, "d": d, "k": k, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "features_mb": round(n * d * 4 / 2**20, 1),
            "peak_growth_mb": round((peak - before) / 1024, 1), "full_matrix_mb": round(n * n * 4 / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    sizes = [10_000, 30_000] + ([] if args.quick else [100_000])
    print("| n | d | k | wall s | CPU s | features (MB) | peak memory growth (MB) | n x n matrix (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "256", "200"], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['seconds']} | {r['cpu_seconds']} | {r['features_mb']} | {r['peak_growth_mb']} | {r['full_matrix_mb']:,} |")


if __name__ == "__main__":
    main()
