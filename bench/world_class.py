"""`experiment=world_class` against fastai's own `fine_tune`, same folder, image size, weights and epoch budget, TTA on both.

Each side runs as its own process and is timed from start to exit (imports, data scanning, the
precompute cache, training, TTA, writing results): the wall time a user waits for.

- lightcycle: `lightcycle-train experiment=world_class data=folder data.root=DATA data.size=SIZE
  data.batch_size=BS data.num_workers=W recipe.epochs=EPOCHS` with an empty LIGHTCYCLE_CACHE, so the
  precompute cache is built inside the timed run. Reports val_* (final model), tta_* and ensemble_*.
- fastai: `ImageDataLoaders.from_folder(DATA, valid="valid", item_tfms=Resize(SIZE), batch_tfms=
  [*aug_transforms(size=SIZE), Normalize.from_stats(*imagenet_stats)], bs=BS, num_workers=W)`,
  `vision_learner(dls, "efficientnet_lite0")` with the same bundled ImageNet weights loaded into its timm
  body, `learn.fine_tune(EPOCHS - 1)` (1 frozen + EPOCHS-1 unfrozen epochs: the same budget), then
  `learn.tta()` (n=4, beta 0.25: the merge lightcycle's TTA uses).
Both use each tool's default augmentation (fastai's aug_transforms; lightcycle's side_on, the same
minus warp) and its default optimizer (Adam, fastai's defaults in both).

    python bench/world_class.py --quick                 # 480/180 demo images, 5 epochs, 1 repeat
    python bench/world_class.py                         # the demo (1440/360), 8 epochs
    python bench/world_class.py --data PATH --size 128  # any ImageNet-style folder with train/ and valid/
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent


def fastai_child(args: argparse.Namespace) -> None:
    """The fastai side (run in its own process by `run_fastai`): prints one JSON line of results."""
    common.quiet()
    from fastai.vision.all import (ImageDataLoaders, Normalize, Resize, aug_transforms, error_rate, imagenet_stats,
                                   vision_learner)

    dls = ImageDataLoaders.from_folder(args.data, train="train", valid="valid", item_tfms=Resize(args.size),
                                       batch_tfms=[*aug_transforms(size=args.size), Normalize.from_stats(*imagenet_stats)],
                                       bs=args.batch_size, num_workers=args.workers, device="cpu")
    learn = vision_learner(dls, common.BACKBONE, pretrained=False, normalize=False, metrics=error_rate)
    common.load_bundled(common.fastai_timm_body(learn))
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.epochs - 1)
        val_error = float(learn.validate()[1])
        preds, targets = learn.tta()
    tta_error = float(error_rate(preds, targets))
    print(json.dumps({"val_error_rate": val_error, "tta_error_rate": tta_error}), flush=True)


def run_fastai(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fastai-child", "--data", str(args.data),
           "--size", str(args.size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers)]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"fastai run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), **{k: round(v, 4) for k, v in result.items()}}


def run_lightcycle(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["lightcycle-train", "experiment=world_class", "data=folder", f"data.root={args.data}",
               f"data.size={args.size}", f"data.batch_size={args.batch_size}", f"data.num_workers={args.workers}",
               f"recipe.epochs={args.epochs}", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}/run"]
        env = {**os.environ, "LIGHTCYCLE_CACHE": f"{tmp}/cache"}  # cold: the cache is built inside the timed run
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"lightcycle run failed:\n{out.stderr[-3000:]}")
        metrics = json.loads(Path(tmp, "run", "metrics.json").read_text())
    keys = ("val_error_rate", "tta_error_rate", "ensemble_error_rate")
    return {"seconds": round(seconds, 1), **{k: round(metrics[k], 4) for k in keys if k in metrics}}


def demo_subset(root: Path, out: Path, train: int, valid: int) -> Path:
    """A smaller copy of an ImageNet-style folder (symlinks): every k-th image of each class."""
    for split, n in (("train", train), ("valid", valid)):
        classes = sorted(p for p in (root / split).iterdir() if p.is_dir())
        per_class = max(1, n // len(classes))
        for cls in classes:
            files = sorted(cls.iterdir())
            step = max(1, len(files) // per_class)
            (out / split / cls.name).mkdir(parents=True, exist_ok=True)
            for f in files[::step][:per_class]:
                (out / split / cls.name / f.name).symlink_to(f)
    return out


def demo_root() -> Path:
    from lightcycle.data import FolderDataModule

    dm = FolderDataModule(demo="classification", size=64, backbone=common.BACKBONE)
    dm.prepare_data()
    return Path(dm.resolve_root())


def main() -> None:
    parser = common.image_parser(__doc__, "480/180 demo images, 5 epochs, 1 repeat")
    parser.add_argument("--data", type=Path, default=None, help="ImageNet-style folder (train/, valid/); default: the demo")
    parser.add_argument("--epochs", type=int, default=None, help="the budget: every epoch of either recipe (default 8; quick 5)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--fastai-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fastai_child:
        common.use_all_cores()
        fastai_child(args)
        return
    common.prepare(args)
    args.epochs = args.epochs or (5 if args.quick else 8)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            args.data = demo_root()
            if args.quick:
                args.data = demo_subset(args.data, Path(tmp) / "demo", 480, 180)
        results = common.interleaved({"lightcycle": lambda: run_lightcycle(args), "fastai": lambda: run_fastai(args)},
                                     args.repeats)
    med = {name: {k: common.median([r[k] for r in runs]) for k in runs[0]} for name, runs in results.items()}
    common.report("world_class", {
        "data": str(args.data), "size": args.size, "epochs": args.epochs, "batch_size": args.batch_size,
        "workers": args.workers, "repeats": args.repeats, "runs": results,
        "wall_time_ratio_fastai_over_lightcycle": round(med["fastai"]["seconds"] / med["lightcycle"]["seconds"], 3),
        "tta_error_lightcycle_minus_fastai": round(med["lightcycle"]["tta_error_rate"] - med["fastai"]["tta_error_rate"], 4),
    })


if __name__ == "__main__":
    main()
