"""Time to a target validation accuracy on the demo classification data, each tool's default recipe.

- lightcycle: what `lightcycle-train` runs by default — the VisionModule (efficientnet_lite0, bundled
  ImageNet weights, lr 3e-3, all layers trainable) with one-cycle over 8 epochs, side_on augmentation,
  in the Trainer lightcycle-train builds (checkpoints, TensorBoard, sanity validation step).
- fastai: `vision_learner(...).fine_tune(7)` (fastai's default recipe: 1 frozen epoch at 2e-3, then 7
  unfrozen epochs at slice(1e-5, 1e-3)) on the same network, weights, files, 64 px, batch 64, workers
  and augmentation (setups.py): also 8 epochs in all.

The clock starts when training is called (`trainer.fit` / `learn.fine_tune`; data scanning, model
creation and weight loading are excluded for both) and stops at the end of the first validation whose
accuracy reaches the target; the run then stops. A run that never reaches it reports its total time
and "not reached".

    python bench/time_to_accuracy.py --quick   # 480/180 images, target 0.8, at most 3 epochs, 1 repeat
    python bench/time_to_accuracy.py           # the whole demo, target 0.95, 8 epochs, 3 repeats
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from typing import Any

import common
import lightning as L

import setups


class Target(L.Callback):
    """Record the time and epoch at which val_accuracy first reaches `target`, then stop training."""

    def __init__(self, target: float) -> None:
        self.target = target
        self.start = time.perf_counter()
        self.reached: tuple[float, int, float] | None = None  # (seconds, epochs, accuracy)
        self.best = 0.0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.reached:
            return
        acc = float(trainer.callback_metrics["val_accuracy"])
        self.best = max(self.best, acc)
        if acc >= self.target:
            self.reached = (time.perf_counter() - self.start, trainer.current_epoch + 1, acc)
            trainer.should_stop = True


def run_lightcycle(args: argparse.Namespace) -> dict[str, Any]:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    model = setups.lightcycle_model(dm)  # default recipe: lr 3e-3, one-cycle, everything trainable
    with tempfile.TemporaryDirectory() as out:
        target = Target(args.target)
        trainer = setups.lightcycle_trainer(out, [target], checkpoints=True, max_epochs=args.epochs)
        target.start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        total = time.perf_counter() - target.start
    return outcome(target.reached, total, target.best)


def run_fastai(args: argparse.Namespace) -> dict[str, Any]:
    from fastai.vision.all import Callback, CancelFitException

    state: dict[str, Any] = {"reached": None, "best": 0.0, "epochs": 0}

    class FastaiTarget(Callback):
        order = 60  # after the Recorder has stored this epoch's metrics

        def before_fit(self) -> None:
            if state["reached"]:  # fine_tune's second fit after the target was hit in the frozen one
                raise CancelFitException()

        def after_epoch(self) -> None:
            names = self.learn.recorder.metric_names[1:-1]  # train_loss, valid_loss, accuracy
            acc = float(self.learn.recorder.values[-1][names.index("accuracy")])
            state["best"] = max(state["best"], acc)
            state["epochs"] += 1
            if acc >= args.target and not state["reached"]:
                state["reached"] = (time.perf_counter() - start, state["epochs"], acc)
                raise CancelFitException()

    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    learn = setups.fastai_learner(setups.fastai_dls(dm))
    learn.add_cb(FastaiTarget())
    start = time.perf_counter()
    with learn.no_bar():
        learn.fine_tune(args.epochs - 1)  # + 1 frozen epoch: the same epoch count as lightcycle's
    total = time.perf_counter() - start
    return outcome(state["reached"], total, state["best"])


def outcome(reached: tuple[float, int, float] | None, total: float, best: float) -> dict[str, Any]:
    if reached is None:
        return {"seconds": None, "epochs": None, "accuracy": round(best, 4), "total_s": round(total, 1)}
    return {"seconds": round(reached[0], 1), "epochs": reached[1], "accuracy": round(reached[2], 4),
            "total_s": round(total, 1)}


def main() -> None:
    parser = common.image_parser(__doc__, "480/180 images, target 0.8, 3 epochs, 1 repeat")
    parser.add_argument("--target", type=float, default=None, help="validation accuracy (default 0.95; quick 0.8)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    common.prepare(args)
    if args.quick:
        args.train_images, args.valid_images, args.epochs, default_target, default_repeats = 480, 180, 3, 0.8, 1
    else:
        args.train_images, args.valid_images, args.epochs, default_target, default_repeats = None, None, 8, 0.95, 3
    args.target = args.target or default_target
    args.repeats = args.repeats or default_repeats
    results = common.interleaved({"lightcycle": lambda: run_lightcycle(args), "fastai": lambda: run_fastai(args)},
                                 args.repeats)
    medians = {k: common.median([math.inf if r["seconds"] is None else r["seconds"] for r in v])
               for k, v in results.items()}
    data: dict[str, Any] = {
        "target": args.target, "size": args.size, "batch_size": args.batch_size, "workers": args.workers,
        "max_epochs": args.epochs, "train_images": args.train_images or "all",
        "valid_images": args.valid_images or "all", "repeats": args.repeats,
        "seconds_to_target_median": {k: (round(v, 1) if math.isfinite(v) else "not reached") for k, v in medians.items()},
        "runs": results,
    }
    if all(math.isfinite(v) for v in medians.values()):
        data["speedup_vs_fastai"] = round(medians["fastai"] / medians["lightcycle"], 3)
    common.report("time_to_accuracy", data)


if __name__ == "__main__":
    main()
