"""The pre-training image check: peak memory on huge bilevel scans, and time on the demo JPEGs.

`find_bad_images` decodes every file once before training. Two cases, each in a fresh child
process (so peak RSS is that process's own `ru_maxrss`):

- `bilevel`: 8 PNGs of 9400x9400 1-bit pixels (about 10 KB each on disk, each just under PIL's pixel
  limit, the default `data.max_pixels`): what a folder of scanned documents looks like. Decoding
  them all to RGB at once costs gigabytes although the files are tiny.
- `demo`: the 1800 JPEGs of the demo classification data (64 px), the first check of a run.

    python bench/check_images.py                      # both cases, the library's default threads
    python bench/check_images.py --case bilevel --workers 8
    PYTHONPATH=/path/to/other/checkout/src python bench/check_images.py   # another version of lightcycle

Prints one JSON object: the machine, and per case peak RSS (MB) and seconds (median of --repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common

SIDE = 9400  # 88.36 Mpixel: just under PIL's 89.48 Mpixel limit


def bilevel_folder(folder: Path, n: int = 8) -> list[Path]:
    """n large 1-bit PNGs with a little content each (ruled lines, a box), made once."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"scan_{i}.png"
        if not path.is_file():
            img = Image.new("1", (SIDE, SIDE), 1)
            draw = ImageDraw.Draw(img)
            for y in range(200 + 40 * i, SIDE, 1200):
                draw.line([(300, y), (SIDE - 300, y)], fill=0, width=3)
            draw.rectangle([500 + i * 100, 500, 3000 + i * 100, 2500], outline=0, width=9)
            img.save(path, optimize=True)
        paths.append(path)
    return paths


CHILD = """
import json, resource, sys, time
from pathlib import Path
from lightcycle.data.checks import find_bad_images
rss_mb = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
imported_mb = rss_mb()  # torch, lightning, albumentations: the floor of any lightcycle process
job = json.loads(sys.stdin.read())
paths, workers = [Path(p) for p in job["paths"]], job["workers"]
start = time.perf_counter()
bad = find_bad_images(paths) if workers is None else find_bad_images(paths, workers=workers)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_import_mb": imported_mb,
                  "bad": len(bad)}))
"""


def run_child(paths: list[Path], workers: int | None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], input=json.dumps({"paths": [str(p) for p in paths], "workers": workers}),
        capture_output=True, text=True, timeout=1800,
    )
    if result.returncode:
        raise SystemExit(f"child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(paths: list[Path], workers: int | None, repeats: int) -> dict:
    runs = [run_child(paths, workers) for _ in range(repeats)]
    for r in runs:
        print(f"  {len(paths)} files: {r}", file=sys.stderr, flush=True)
    return {"files": len(paths), "workers": workers or "default", "bad": runs[0]["bad"],
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
            "rss_after_import_mb": round(runs[0]["rss_after_import_mb"]),
            "seconds": round(common.median([r["seconds"] for r in runs]), 3), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["bilevel", "demo", "both"], default="both")
    parser.add_argument("--workers", type=int, default=None, help="check threads (default: the library's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where the bilevel PNGs are made (default: a temp folder)")
    args = parser.parse_args()
    import lightcycle

    out: dict = {"machine": common.machine(), "lightcycle": str(Path(lightcycle.__file__).parent)}
    if args.case in ("bilevel", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.folder) if args.folder else Path(tmp) / "scans"
            paths = bilevel_folder(folder)
            out["bilevel"] = {"file_kb": [round(p.stat().st_size / 1024, 1) for p in paths],
                              **measure(paths, args.workers, args.repeats)}
    if args.case in ("demo", "both"):
        from lightcycle.data.checks import list_images
        from lightcycle.data.demo import demo_root

        paths = list_images(demo_root("classification"))
        out["demo"] = measure(paths, args.workers, args.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
