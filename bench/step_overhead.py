"""Framework cost per training step: lightcycle's default Trainer against bare Lightning, at a tiny step.

At a tiny step (efficientnet_lite0, 32 px, batch 4: tens of milliseconds on a CPU, like a GPU step of a
real model) whatever a Trainer adds per step shows up in milliseconds. Contenders, the same module
and in-memory tensors, interleaved (A B C A B C ...):

- `lightcycle`: the Trainer lightcycle-train builds from its default config (TensorBoard logger with
  `log_every_n_steps` from conf/trainer/default.yaml, the layer-group LR/momentum monitor, epoch log,
  divergence guard; checkpoints (Lightning's implicit one too) and progress bar off, as in every step
  benchmark);
- `lightcycle_every_step`: the same with `trainer.log_every_n_steps=1` (a point every step);
- `lightcycle_before`: the same with what the default was before: Lightning's `LearningRateMonitor`
  (every parameter group's lr and momentum every step) and Lightning's own TensorBoardLogger at
  `log_every_n_steps=1`;
- `bare`: `L.Trainer(logger=False)`, no callbacks: what Lightning itself costs.

Two measurements of the overhead (lightcycle minus bare, ms per step):
1. *wall*: every step's duration (batch start to next batch start) over `--steps` steps after a warm-up;
   per repeat the median step; the overhead is the median over rounds of the paired difference;
2. *direct*: inside the lightcycle runs, the time spent in the callbacks' hooks and the logger's
   `log_metrics` (wrapped with timers), per step: machine noise cannot inflate it, but it misses
   Lightning's own work for the logger (building the metrics dict at each logging step).

    python bench/step_overhead.py --quick    # 3 repeats of 150 steps
    python bench/step_overhead.py            # 7 repeats of 400 steps
    python bench/step_overhead.py --backbone test_resnet --size 32 --batch-size 4   # a ~3 ms step
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from typing import Any

import common
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask
from setups import lightcycle_trainer

CLASSES = [f"c{i}" for i in range(6)]
HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
         "on_before_optimizer_step", "on_before_zero_grad", "on_train_epoch_start", "on_train_epoch_end")


class StepTimes(L.Callback):
    """Start time of every training batch; durations of the steps after the warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.starts.append(time.perf_counter())

    def durations_ms(self) -> list[float]:
        return [1e3 * (b - a) for a, b in zip(self.starts, self.starts[1:])]


class HookClock:
    """Wrap the hooks of callbacks and the loggers' `log_metrics` with a clock (seconds in total)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, obj: Any, name: str) -> None:
        original = getattr(obj, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(obj, name, timed)


def make_module(backbone: str) -> VisionModule:
    torch.manual_seed(0)
    pretrained = "bundled" if backbone == common.BACKBONE else False
    return VisionModule(ClassificationTask(class_names=CLASSES), backbone=backbone, pretrained=pretrained, lr=3e-3)


def run(kind: str, args: argparse.Namespace) -> tuple[float, float | None, dict[str, float]]:
    """(median step ms, in-hook ms per step or None, in-hook ms per step of each callback and logger)
    of one fit of `warmup + steps + 1` batches."""
    n = args.warmup + args.steps + 1
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n * args.batch_size, 3, args.size, args.size, generator=g),
                       torch.randint(0, len(CLASSES), (n * args.batch_size,), generator=g))
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, drop_last=True, num_workers=0)
    model = make_module(args.backbone)
    times = StepTimes(args.warmup)
    # no checkpoints for any contender: Lightning adds a ModelCheckpoint unless told not to, and its save at
    # the epoch's end (a per-epoch cost, which a bare Trainer with checkpoints pays alike) is no step cost
    limits = dict(max_epochs=1, limit_train_batches=n, limit_val_batches=0, num_sanity_val_steps=0,
                  enable_checkpointing=False)
    clocks: dict[str, HookClock] = {}
    with tempfile.TemporaryDirectory() as out:
        if kind == "bare":
            trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                                enable_model_summary=False, callbacks=[times], **limits)
        else:
            overrides = {"log_every_n_steps": 1} if kind in ("lightcycle_every_step", "lightcycle_before") else {}
            trainer = lightcycle_trainer(out, [times], **limits, **overrides)
            if kind == "lightcycle_before":
                before(trainer, out)
            for cb in trainer.callbacks:
                if cb is not times:
                    clock = clocks.setdefault(type(cb).__name__, HookClock())
                    for hook in HOOKS:
                        clock.wrap(cb, hook)
            for logger in trainer.loggers:
                clocks.setdefault(f"logger {type(logger).__name__}", HookClock()).wrap(logger, "log_metrics")
        trainer.fit(model, train_dataloaders=loader)
    steps = times.durations_ms()
    per_step = {name: 1e3 * clock.seconds / n for name, clock in clocks.items()}
    return common.median(steps), (sum(per_step.values()) if clocks else None), per_step


def before(trainer: L.Trainer, out: str) -> None:
    """The previous default: Lightning's LearningRateMonitor every step, Lightning's logger per scalar."""
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightcycle.callbacks import LayerGroupLRMonitor

    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, LayerGroupLRMonitor)]
    trainer.callbacks.append(LearningRateMonitor(logging_interval="step", log_momentum=True))
    trainer.loggers = [TensorBoardLogger(out, name="before", default_hp_metric=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats of 150 steps")
    parser.add_argument("--backbone", default=common.BACKBONE)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.steps = args.steps or (150 if args.quick else 400)
    common.quiet()
    common.use_all_cores()
    kinds = args.only or ["lightcycle", "lightcycle_every_step", "lightcycle_before", "bare"]
    results = common.interleaved({k: (lambda k=k: run(k, args)) for k in kinds}, args.repeats)
    median_step = {k: [round(r[0], 3) for r in v] for k, v in results.items()}
    data: dict[str, Any] = {"backbone": args.backbone, "size": args.size, "batch_size": args.batch_size,
                            "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats,
                            "median_step_ms": {k: round(common.median(v), 3) for k, v in median_step.items()},
                            "median_step_ms_all": median_step}
    if "bare" in results:
        bare = median_step["bare"]
        data["overhead_ms_wall_paired"] = {
            k: round(common.median([a - b for a, b in zip(v, bare)]), 3) for k, v in median_step.items() if k != "bare"}
    data["overhead_ms_direct"] = {k: round(common.median([r[1] for r in v]), 4) for k, v in results.items()
                                  if v[0][1] is not None}
    data["overhead_ms_direct_by_callback"] = {
        k: {name: round(common.median([r[2][name] for r in v]), 4) for name in v[0][2]}
        for k, v in results.items() if v[0][2]}
    common.report("step_overhead", data)


if __name__ == "__main__":
    main()
