"""Training-step throughput (images/s) on in-memory tensors: lightcycle vs a plain PyTorch loop vs fastai.

All contenders train the very same network — lightcycle's VisionModule built with
`backbone=efficientnet_lite0, pretrained="bundled"` (timm body + fastai's head), a fresh copy per run —
on the same random tensors (size x size, 6 classes), batch size, AdamW settings (lr 3e-3, wd 0.01 off
norms and biases, betas (0.9, 0.99), eps 1e-5), cross-entropy and per-batch one-cycle schedule:

- lightcycle: the VisionModule in a Trainer built by lightcycle-train's own code (setups.lightcycle_trainer): TensorBoard logger,
  the layer-group LR and momentum monitor at `log_every_n_steps`, epoch log, divergence guard, no progress bar. No validation.
- lightning-bare: the same module in a Trainer without logger or callbacks (shows what the logging costs).
- plain: `nn.Sequential(backbone, head)`, `torch.optim.AdamW` over the same parameter groups,
  `torch.optim.lr_scheduler.OneCycleLR` with fastai's shape, `F.cross_entropy`. The physical limit.
- fastai: `Learner(..., opt_func=Adam).fit_one_cycle(1, 3e-3)` (fastai's own Adam; decoupled wd,
  none on norms and biases), progress bar off.

Timing: the window runs from the start of step `warmup` to the start of step `warmup + steps` (hooks that
fire right after the batch is fetched in every tool), so it covers `steps` complete iterations —
data fetch, forward, backward, optimizer, scheduler, logging — and no setup, warm-up or teardown.

    python bench/step_throughput.py --quick    # batch 16, 3 repeats of 2+6 steps (under 2 minutes, 2 cores)
    python bench/step_throughput.py            # 5 repeats of 5+30 steps
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import common  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before lightcycle imports albumentations)
import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask
from setups import lightcycle_trainer

CLASSES = [f"c{i}" for i in range(6)]
LR = 3e-3


def make_data(n: int, size: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, len(CLASSES), (n,), generator=g))


def make_module(seed: int = 0) -> VisionModule:
    torch.manual_seed(seed)
    return VisionModule(ClassificationTask(class_names=CLASSES), backbone=common.BACKBONE, pretrained="bundled", lr=LR)


def loader(ds: TensorDataset, batch_size: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0,
                      generator=torch.Generator().manual_seed(0))


class Window:
    """Start times of steps `first` .. `last`: the whole window and every step within it."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.starts: list[float] = []

    def at(self, step: int) -> None:
        if self.first <= step <= self.last:
            self.starts.append(time.perf_counter())

    def rates(self, batch_size: int) -> tuple[float, float]:
        """(images/s over the whole window, images/s of the median step). On a shared machine the
        median step shrugs off another process's bursts; the window mean also counts rare costs."""
        if len(self.starts) != self.last - self.first + 1:
            raise RuntimeError(f"timed {len(self.starts)} step starts, expected {self.last - self.first + 1}")
        steps = [b - a for a, b in zip(self.starts, self.starts[1:])]
        return len(steps) * batch_size / (self.starts[-1] - self.starts[0]), batch_size / common.median(steps)


class LightningWindow(L.Callback):
    def __init__(self, window: Window) -> None:
        self.window = window

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.window.at(batch_idx)


def run_lightcycle(ds: TensorDataset, batch_size: int, warmup: int, steps: int, bare: bool = False) -> tuple[float, float]:
    window = Window(warmup, warmup + steps)
    model = make_module()
    with tempfile.TemporaryDirectory() as out:
        if bare:
            trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=warmup + steps + 1,
                                limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[LightningWindow(window)])
        else:
            trainer = lightcycle_trainer(out, [LightningWindow(window)], max_epochs=1, limit_train_batches=warmup + steps + 1,
                                         limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(model, train_dataloaders=loader(ds, batch_size))
    return window.rates(batch_size)


def run_plain(ds: TensorDataset, batch_size: int, warmup: int, steps: int) -> tuple[float, float]:
    window = Window(warmup, warmup + steps)
    module = make_module()
    model = nn.Sequential(module.backbone, module.head)
    groups = module.param_groups()  # the same groups lightcycle's optimizer gets (decay / no decay)
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.99), eps=1e-5)
    total = warmup + steps + 1
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=total, pct_start=0.25, anneal_strategy="cos",
        div_factor=25.0, final_div_factor=1e5 / 25.0, cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
    )
    model.train()
    for step, (x, y) in enumerate(loader(ds, batch_size)):
        if step == total:
            break
        window.at(step)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return window.rates(batch_size)


def run_fastai(ds: TensorDataset, batch_size: int, warmup: int, steps: int) -> tuple[float, float]:
    from fastai.vision.all import Adam, Callback, CrossEntropyLossFlat, DataLoaders, Learner
    from fastai.vision.all import DataLoader as FastaiDataLoader

    window = Window(warmup, warmup + steps)

    class FastaiWindow(Callback):
        order = -100

        def before_batch(self) -> None:
            if self.training:
                window.at(self.iter)

    module = make_module()
    model = nn.Sequential(module.backbone, module.head)
    total = warmup + steps + 1
    train = FastaiDataLoader(torch.utils.data.Subset(ds, range(total * batch_size)), bs=batch_size, shuffle=True,
                             drop_last=True, num_workers=0)
    valid = FastaiDataLoader(torch.utils.data.Subset(ds, range(batch_size)), bs=batch_size, num_workers=0)
    learn = Learner(DataLoaders(train, valid, device="cpu"), model, loss_func=CrossEntropyLossFlat(), opt_func=Adam,
                    wd=0.01, moms=(0.95, 0.85, 0.95), cbs=[FastaiWindow()])
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, LR, pct_start=0.25, div=25.0, div_final=1e5)
    return window.rates(batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, 3 repeats of 2 warm-up + 6 timed steps, no bare-Lightning run")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (quick: 16)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores nproc reports)")
    parser.add_argument("--only", nargs="*", default=None, help="contenders to run (default: all)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    warmup, steps = (2, 6) if args.quick else (5, 30)
    batch_size = args.batch_size or (16 if args.quick else 64)
    common.quiet()
    common.use_all_cores()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = make_data((warmup + steps + 1) * batch_size, args.size)
    runners = {
        "lightcycle": lambda: run_lightcycle(ds, batch_size, warmup, steps),
        "lightning_bare": lambda: run_lightcycle(ds, batch_size, warmup, steps, bare=True),
        "plain": lambda: run_plain(ds, batch_size, warmup, steps),
        "fastai": lambda: run_fastai(ds, batch_size, warmup, steps),
    }
    if args.only:
        runners = {k: v for k, v in runners.items() if k in args.only}
    elif args.quick:  # stays under 2 minutes on 2 cores; the bare-Lightning split is for full runs
        runners.pop("lightning_bare")
    results = common.interleaved(runners, repeats)
    data: dict[str, Any] = {"size": args.size, "batch_size": batch_size, "warmup_steps": warmup,
                            "timed_steps": steps, "repeats": repeats}
    for i, key in enumerate(("window", "median_step")):
        medians = {k: round(common.median([r[i] for r in v]), 2) for k, v in results.items()}
        data[f"images_per_s_{key}"] = medians
        data[f"images_per_s_{key}_all"] = {k: [round(r[i], 2) for r in v] for k, v in results.items()}
        if "plain" in medians:
            data[f"vs_plain_{key}"] = {k: round(v / medians["plain"], 3) for k, v in medians.items()}
            plain = [r[i] for r in results["plain"]]
            data[f"vs_plain_{key}_paired"] = {k: round(common.paired_ratio([r[i] for r in v], plain), 3)
                                              for k, v in results.items()}
    common.report("step_throughput", data)


if __name__ == "__main__":
    main()
