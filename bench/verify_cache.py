"""The verified-files cache on a large folder: how long the pre-training check takes on the second run.

Builds a class-folder dataset of --files tiny JPEGs (10 classes), waits until they are settled
(files changed in the last 2 s are never listed), then times, each in a fresh process:

- `first`: `find_bad_images` with a cache that knows nothing (decodes every file, writes the cache);
- `second`: the same call again (every file unchanged: stats only);
- `no_cache`: the same call without a cache (what every run cost before);
- `setup_second`: the whole `FolderDataModule.setup()` of a second run (folder scan + cached check).

    python bench/verify_cache.py                  # 100,000 files
    python bench/verify_cache.py --files 20000    # quick

Prints one JSON object: the machine, the seconds of each step, the cache file's size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

STEP = """
import json, sys, time
from pathlib import Path
from lightcycle.data import FolderDataModule
from lightcycle.data.checks import find_bad_images, list_images
from lightcycle.data.verified import VerifiedFiles
root, cache, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
start = time.perf_counter()
if step == "setup_second":
    dm = FolderDataModule(root, cache_dir=cache, num_workers=0, valid_pct=0.1)
    dm.setup()
    n = len(dm.train_samples) + len(dm.valid_samples)
else:
    paths = list_images(root)
    start = time.perf_counter()  # the check alone, not the folder scan
    bad = find_bad_images(paths, cache=None if step == "no_cache" else VerifiedFiles(root, cache_dir=cache))
    assert not bad, bad[:3]
    n = len(paths)
print(json.dumps({"seconds": time.perf_counter() - start, "files": n}))
"""


def build(root: Path, n: int) -> None:
    """n copies of one tiny JPEG in 10 class folders (made once; a rerun reuses them)."""
    from PIL import Image

    if (root / ".complete").is_file():
        return
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(buf, "JPEG")
    data = buf.getvalue()
    for i in range(n):
        folder = root / f"class_{i % 10}"
        if i < 10:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").write_bytes(data)
    (root / ".complete").write_text(str(n))


def step(root: Path, cache: Path, name: str) -> dict:
    result = subprocess.run([sys.executable, "-c", STEP, str(root), str(cache), name], capture_output=True, text=True,
                            timeout=3600, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  {name}: {out}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folder", default=None, help="where the dataset is built (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.folder) if args.folder else Path(tmp) / "many"
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        build(root, args.files)
        built = time.perf_counter() - start
        time.sleep(2.5)  # settled: older than the cache's 2 s window for recent changes
        out = {"machine": common.machine(), "files": args.files, "build_seconds": round(built, 1)}
        for name in ("first", "second", "no_cache", "setup_second"):
            out[name] = round(step(root, cache, name)["seconds"], 3)
        (cache_file,) = (cache / "verified").iterdir()
        out["cache_file_mb"] = round(cache_file.stat().st_size / 1e6, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
