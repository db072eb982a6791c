"""Precompute speed-up: head-training epoch time with and without cached activations, same data.

Both runs train only the head of a frozen, ImageNet-pretrained EfficientNet-Lite0 (the bundled
weights) on the demo classification data without augmentation, with the same batch size, workers and
epochs. "without" runs the frozen backbone forward (and, with fastai's train_bn, the backward through
its BatchNorm layers) every epoch; "with" computes the activations once (reported separately as the
one-off cost) and then trains on the cache. Epoch times are medians over the epochs after the first.

    python bench/precompute.py --quick     # 256 images: under 2 minutes on 2 quiet CPU cores
    python bench/precompute.py             # full: more epochs and repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lightcycle.callbacks import Precompute  # noqa: E402
from lightcycle.data import FolderDataModule  # noqa: E402
from lightcycle.module import VisionModule  # noqa: E402


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(time.perf_counter() - self._start)


def run(precompute: bool, epochs: int, size: int, batch_size: int, workers: int, cache: str, images: int | None) -> dict[str, float]:
    L.seed_everything(0)
    dm = FolderDataModule(demo="classification", size=size, batch_size=batch_size, num_workers=workers,
                          augment="none", backbone="efficientnet_lite0")
    dm.prepare_data()
    dm.setup("fit")
    if images:  # the same subset for both runs
        dm.train_samples = dm.train_samples[:images]
    model = VisionModule(dm.make_task(), backbone="efficientnet_lite0", pretrained="bundled", lr=3e-3)
    model.freeze_to(-1)
    timer = EpochTimer()
    callbacks: list[L.Callback] = [timer]
    pre = None
    if precompute:
        pre = Precompute(cache_dir=cache)
        callbacks.insert(0, pre)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    return {"epoch_s": statistics.median(timer.seconds[1:]), "cache_s": pre.seconds_computing if pre else 0.0,
            "images": len(dm.train_samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 images, 3 repeats of 3 epochs (under 2 minutes)")
    parser.add_argument("--images", type=int, default=None, help="train on the first N demo images (default: all)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    repeats, epochs = (3, 3) if args.quick else (3, 5)
    images = args.images or (256 if args.quick else None)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = {"without": [], "with": []}
    cache_s = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as cache:  # a cold cache every repeat: the one-off cost is real
            rows["without"].append(run(False, epochs, args.size, args.batch_size, args.workers, cache, images)["epoch_s"])
            result = run(True, epochs, args.size, args.batch_size, args.workers, cache, images)
            rows["with"].append(result["epoch_s"])
            cache_s.append(result["cache_s"])
    without, with_cache = statistics.median(rows["without"]), statistics.median(rows["with"])
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "images": result["images"], "size": args.size, "batch_size": args.batch_size, "repeats": repeats,
        "epochs": epochs, "epoch_s_without": round(without, 3), "epoch_s_with": round(with_cache, 4),
        "one_off_cache_s": round(statistics.median(cache_s), 2), "speedup": round(without / with_cache, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
