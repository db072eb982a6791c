"""What MixUp, label smoothing and EMA of the weights do to the final and TTA error and to the time per
epoch, side by side with the plain run, on the demo and on a real-photo folder (bench/photos.py).

Every variant is one `lightcycle-train` process with the default recipe (efficientnet_lite0 with the
bundled ImageNet weights, one-cycle, `tta.n=4`) plus its overrides:

    plain            (nothing)
    mixup            mixup.alpha=0.4
    label_smoothing  model.label_smoothing=0.1
    ema              ema.decay=0.999
    all              mixup.alpha=0.4 model.label_smoothing=0.1 ema.decay=0.99 trainer.accumulate_grad_batches=2
                     model.drop_path=0.05

From each run: `val_error_rate` and `tta_error_rate` of metrics.json (the final model: with EMA the
averaged weights) and the median seconds per epoch (training + validation, from the run's epoch log).

    python bench/toolbox_extras.py --quick     # plain and all only, 480/180 demo images, 12/6 photos per class, 3 epochs
    python bench/toolbox_extras.py             # the whole demo (1440/360), 40/15 photos per class, 8 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import common

VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "mixup": ["mixup.alpha=0.4"],
    "label_smoothing": ["model.label_smoothing=0.1"],
    "ema": ["ema.decay=0.999"],
    "all": ["mixup.alpha=0.4", "model.label_smoothing=0.1", "ema.decay=0.99", "trainer.accumulate_grad_batches=2",
            "model.drop_path=0.05"],
}
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) .*?(\d+(?:\.\d+)?)s\s*$")


def run(data_args: list[str], overrides: list[str], args: argparse.Namespace, tmp: Path, name: str) -> dict[str, Any]:
    run_dir = tmp / name
    cmd = ["lightcycle-train", *data_args, f"trainer.max_epochs={args.epochs}", f"data.num_workers={args.workers}",
           "tta.n=4", "interpret.top_k=0", "show_batch.n=0", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={run_dir}", *overrides]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LIGHTCYCLE_CACHE": args.cache})
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else out.stdout + out.stderr
    epochs = [float(m.group(3)) for m in map(EPOCH_LINE.search, log.splitlines()) if m]
    return {
        "val_error_rate": round(metrics["val_error_rate"], 4),
        "tta_error_rate": round(metrics["tta_error_rate"], 4),
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "seconds_per_epoch": round(statistics.median(epochs), 2) if epochs else None,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = common.image_parser(__doc__, "plain and all only, 480/180 demo images, 12/6 photos per class, 3 epochs")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default 8; quick 3)")
    parser.add_argument("--photo-size", type=int, default=96, help="data.size on the photo folder")
    parser.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS), help="default: all (quick: plain, all)")
    parser.add_argument("--datasets", nargs="*", default=["demo", "photos"], choices=["demo", "photos"])
    args = parser.parse_args()
    common.prepare(args)
    args.epochs = args.epochs or (3 if args.quick else 8)
    args.variants = args.variants or (["plain", "all"] if args.quick else list(VARIANTS))
    import photos
    from world_class import demo_root, demo_subset

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        args.cache = os.environ.get("LIGHTCYCLE_CACHE") or str(tmp / "cache")
        datasets: dict[str, list[str]] = {}
        if "demo" in args.datasets:
            if args.quick:
                root = demo_subset(demo_root(), tmp / "demo", 480, 180)
                datasets["demo"] = ["data=folder", f"data.root={root}", f"data.size={args.size}"]
            else:
                datasets["demo"] = ["data.batch_size=64"]  # the whole demo, data.size=64, batch 64 as measured
        if "photos" in args.datasets:
            n_train, n_valid = (12, 6) if args.quick else (40, 15)
            root = photos.write_folder(tmp / "photos", n_train, n_valid, 320, 240, seed=0)
            datasets["photos"] = ["data=folder", f"data.root={root}", f"data.size={args.photo_size}",
                                  "data.batch_size=32"]
        for data_name, data_args in datasets.items():
            results[data_name] = {}
            for variant in args.variants:
                result = run(data_args, VARIANTS[variant], args, tmp, f"{data_name}-{variant}")
                results[data_name][variant] = result
                print(f"  {data_name} {variant}: {result}", flush=True)
    common.report("toolbox_extras", {"epochs": args.epochs, "workers": args.workers, "quick": args.quick,
                                     "overrides": VARIANTS, "results": results})


if __name__ == "__main__":
    main()
