"""End-to-end epoch time (train + validation) from the demo JPEG ImageFolder: lightcycle vs fastai.

Same files and split, 64 px, batch 64, the same DataLoader workers (one per core beyond the first), the
same augmentation (flip + rotate +-10 + zoom 1-1.1 + lighting 0.2; see setups.py), the same network and
bundled ImageNet weights, one-cycle at lr 3e-3 over all layers. lightcycle runs in the Trainer that
lightcycle-train builds (checkpointing included: it writes last.ckpt and the best one every epoch, as a
user's run does); fastai runs `fit_one_cycle` with its defaults (Recorder, accuracy metric, no bar).
An epoch is timed from its start to the end of its validation; the first epoch (worker start-up,
lazy initialisation) is excluded, the median of the rest is reported.

    python bench/epoch_time.py --quick    # 256 train / 128 valid images, 2 epochs, 3 repeats (~2 min, 2 cores)
    python bench/epoch_time.py            # the whole demo (1440 / 360 images), 3 epochs, 3 repeats
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import common
import lightning as L

import setups


class EpochTimer(L.Callback):
    """Train-epoch start to train-epoch end; Lightning validates inside the train epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def run_lightcycle(args: argparse.Namespace) -> float:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    model = setups.lightcycle_model(dm)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        trainer = setups.lightcycle_trainer(out, [timer], checkpoints=True, max_epochs=args.epochs,
                                            num_sanity_val_steps=0)
        trainer.fit(model, datamodule=dm)
    return common.median(timer.seconds[1:])


def run_fastai(args: argparse.Namespace) -> float:
    from fastai.vision.all import Callback

    seconds: list[float] = []

    class FastaiEpochTimer(Callback):
        def before_epoch(self) -> None:
            self._start = time.perf_counter()

        def after_epoch(self) -> None:
            seconds.append(time.perf_counter() - self._start)

    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    learn = setups.fastai_learner(setups.fastai_dls(dm))
    with learn.no_bar():
        learn.fit_one_cycle(args.epochs, setups.LR, cbs=[FastaiEpochTimer()])
    return common.median(seconds[1:])


def main() -> None:
    parser = common.image_parser(__doc__, "256/128 images, 2 epochs, 3 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    common.prepare(args)
    args.train_images, args.valid_images, args.epochs = (256, 128, 2) if args.quick else (None, None, 3)
    results = common.interleaved({"lightcycle": lambda: run_lightcycle(args), "fastai": lambda: run_fastai(args)},
                                 args.repeats)
    medians = {k: round(common.median(v), 2) for k, v in results.items()}
    data: dict[str, Any] = {
        "size": args.size, "batch_size": args.batch_size, "workers": args.workers, "epochs": args.epochs,
        "train_images": args.train_images or "all", "valid_images": args.valid_images or "all",
        "repeats": args.repeats, "epoch_s_median": medians,
        "epoch_s_all": {k: [round(x, 2) for x in v] for k, v in results.items()},
        "speedup_vs_fastai": round(medians["fastai"] / medians["lightcycle"], 3),
    }
    common.report("epoch_time", data)


if __name__ == "__main__":
    main()
