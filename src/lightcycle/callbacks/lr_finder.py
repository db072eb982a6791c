"""LR range test (Leslie Smith's, with fastai's exact semantics) as a Lightning callback.

Why ours and not `lightning.pytorch.tuner.Tuner.lr_find`: fastai's test differs in ways that change
the answer — a debiased EMA of the loss (beta 0.98), stopping once the smoothed loss exceeds 4x the
best, suggestions taken after skipping the first `num_it // 10` and last 5 points, and the
longest-valley rule as the default suggestion. It must also leave *nothing* behind: weights,
optimizer state, BatchNorm statistics and every RNG are restored bit-exactly, in memory.

The sweep scales every parameter group's learning rate by the same factor, so discriminative
learning rates keep their ratios and frozen parameters (no gradient) are not touched. The reported
learning rate is the one of the group with the highest peak (the head in `VisionModule`), which is
what `model.lr` means.

Use it as a callback (`LRFinder()`: runs before the first training step and, by default, applies
its suggestion to the run) or from Python with `lr_find(model, datamodule)`.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import _TunerExitException
from torch.utils.data import DataLoader

from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")

Point = tuple[float, float]
Suggestion = tuple[float, Point]  # (suggested lr, (x, y) of the marker on the plot)


# --- suggestions: pure functions of the recorded curve (fastai's, same names and maths) ---------
def valley(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> Suggestion:
    """fastai's default: about 2/3 down the longest valley (longest decreasing subsequence).

    Reproduces fastai's loop literally, including where it updates the valley's start.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx]), (float(lrs[idx]), float(losses[idx]))


def steep(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> Suggestion:
    """The lr where the smoothed loss falls fastest against log(lr)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    lr_steep = float(lrs[int(np.argmin(grads))])
    loss_idx = losses[min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr_steep))]
    return lr_steep, (lr_steep, float(loss_idx))


def minimum(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> Suggestion:
    """One tenth of the lr at the minimum loss (the marker sits at the minimum itself)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    lr_min = float(lrs[int(np.argmin(losses))])
    loss_idx = losses[min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr_min))]
    return lr_min / 10, (lr_min, float(loss_idx))


def slide(
    lrs: Sequence[float],
    losses: Sequence[float],
    num_it: int,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> Suggestion:
    """fastai's interval slide rule: walk left from the end until the loss gradient flattens.

    On curves shorter than `lr_diff` points (where fastai would fail) the interval shrinks to fit.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    lr_diff = min(lr_diff, len(losses) - 1)
    loss_grad = np.gradient(losses)
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while l_idx >= -len(losses) and abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh:
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    suggestion = float(local_min_lr) * adjust_value
    y = float(np.interp(np.log10(suggestion), np.log10(lrs), losses))
    return suggestion, (suggestion, y)


SUGGESTIONS: dict[str, Callable[..., Suggestion]] = {
    "valley": valley,
    "steep": steep,
    "minimum": minimum,
    "slide": slide,
}


def suggestion_window(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of the curve suggestions look at: skip the first num_it//10 and last 5 points, cut at the first NaN."""
    lrs = np.asarray(lrs, dtype=float)[num_it // 10 : -5]
    losses = np.asarray(losses, dtype=float)[num_it // 10 : -5]
    nan = np.flatnonzero(np.isnan(losses))
    if len(nan):
        lrs, losses = lrs[: nan[0]], losses[: nan[0]]
    return lrs, losses


def suggest(
    lrs: Sequence[float], losses: Sequence[float], num_it: int, methods: Sequence[str] = tuple(SUGGESTIONS)
) -> dict[str, Suggestion]:
    """Every requested suggestion for a recorded (lr, smoothed loss) curve, fastai-style."""
    unknown = [m for m in methods if m not in SUGGESTIONS]
    if unknown:
        raise LightcycleError(f"unknown LR suggestion {unknown[0]!r}; choose from {', '.join(SUGGESTIONS)}")
    w_lrs, w_losses = suggestion_window(lrs, losses, num_it)
    if len(w_lrs) < 2:
        raise LightcycleError(
            f"the LR range test recorded too few usable points ({len(lrs)} recorded, {len(w_lrs)} after skipping "
            f"the first {num_it // 10} and last 5 and cutting at NaN): the loss diverged almost at once; "
            "lower lr_find.start_lr or check the data and loss"
        )
    return {m: SUGGESTIONS[m](w_lrs, w_losses, num_it) for m in methods}


def sweep_lr(step: int, start_lr: float, end_lr: float, num_it: int) -> float:
    """Exponential sweep (fastai's SchedExp at pct = step / num_it): start_lr at step 0."""
    return start_lr * (end_lr / start_lr) ** (step / num_it)


class SmoothedLoss:
    """Debiased exponential moving average of the loss (fastai's AvgSmoothLoss)."""

    def __init__(self, beta: float = 0.98) -> None:
        self.beta, self.count, self.value = float(beta), 0, 0.0

    def update(self, loss: float) -> float:
        self.count += 1
        self.value = self.beta * self.value + (1 - self.beta) * loss
        return self.value / (1 - self.beta**self.count)


# --- result -----------------------------------------------------------------------------------
@dataclass
class LRFindResult:
    """The recorded curve and the suggestions; plain data, so it goes into checkpoints as is."""

    lrs: list[float]
    losses: list[float]
    num_it: int
    method: str = "valley"
    suggestions: dict[str, float] = field(default_factory=dict)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def suggestion(self) -> float:
        """The learning rate of the chosen method (`method`)."""
        return self.suggestions[self.method]

    @classmethod
    def from_curve(
        cls, lrs: Sequence[float], losses: Sequence[float], num_it: int, method: str = "valley"
    ) -> "LRFindResult":
        found = suggest(lrs, losses, num_it)
        if method not in found:
            raise LightcycleError(f"unknown LR suggestion {method!r}; choose from {', '.join(SUGGESTIONS)}")
        return cls(
            lrs=[float(x) for x in lrs],
            losses=[float(x) for x in losses],
            num_it=int(num_it),
            method=method,
            suggestions={k: v[0] for k, v in found.items()},
            points={k: v[1] for k, v in found.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "num_it": self.num_it,
            "method": self.method,
            "suggestions": dict(self.suggestions),
            "points": {k: list(v) for k, v in self.points.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LRFindResult":
        data = dict(data)
        data["points"] = {k: tuple(v) for k, v in data.get("points", {}).items()}
        return cls(**data)

    def figure(self, skip_end: int = 5) -> Any:
        """Loss vs learning rate (log x) with a marker per suggestion, as fastai's plot_lr_find."""
        from matplotlib.figure import Figure  # no pyplot: no global backend, works headless

        lrs = self.lrs[:-skip_end] if skip_end else self.lrs
        losses = self.losses[:-skip_end] if skip_end else self.losses
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(lrs, losses)
        ax.set_xscale("log")
        ax.set_xlabel("Learning Rate")
        ax.set_ylabel("Loss (smoothed)")
        colors = ["C1", "C2", "C3", "C4", "C5"]
        for (name, (x, y)), color in zip(self.points.items(), colors):
            label = f"{name}: {self.suggestions[name]:.2e}" + (" (used)" if name == self.method else "")
            ax.plot([x], [y], "o", c=color, label=label)
        ax.legend(loc="best")
        ax.set_title("LR range test")
        fig.tight_layout()
        return fig


# --- exact save / restore of everything the sweep touches -------------------------------------
def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def _training_state_restored(trainer: L.Trainer, module: L.LightningModule) -> Iterator[None]:
    """Run a block, then put weights, buffers, optimizers, schedulers, grad scaler, modes and RNG back."""
    weights = copy.deepcopy(module.state_dict())
    optimizers = [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]
    schedulers = [copy.deepcopy(cfg.scheduler.state_dict()) for cfg in trainer.lr_scheduler_configs]
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    scaler_state = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
    modes = {name: m.training for name, m in module.named_modules()}
    rng = _rng_state()
    try:
        yield
    finally:
        module.load_state_dict(weights)
        for opt, state in zip(trainer.optimizers, optimizers):
            opt.zero_grad(set_to_none=True)
            opt.load_state_dict(state)
        for cfg, state in zip(trainer.lr_scheduler_configs, schedulers):
            cfg.scheduler.load_state_dict(state)
        if scaler is not None and scaler_state is not None:
            scaler.load_state_dict(scaler_state)
        for name, m in module.named_modules():
            m.train(modes.get(name, m.training))
        _set_rng_state(rng)


@contextmanager
def _muted_logging(module: L.LightningModule) -> Iterator[None]:
    """`self.log` inside training_step would write into the real run's metrics; the sweep is not training."""
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.log
        del module.log_dict


def _peak_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]


def scale_learning_rates(trainer: L.Trainer, factor: float) -> None:
    """Multiply every group's current and peak lr (optimizer and schedulers) by the same factor."""
    for opt in trainer.optimizers:
        for group in opt.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
    for cfg in trainer.lr_scheduler_configs:
        sched = cfg.scheduler
        if hasattr(sched, "base_lrs"):
            sched.base_lrs = [b * factor for b in sched.base_lrs]
        if hasattr(sched, "_last_lr"):
            sched._last_lr = [b * factor for b in sched._last_lr]


# --- the callback -----------------------------------------------------------------------------
def _sweep_loader(loader: Any) -> Any:
    """A loader of its own over the training data, for the sweep.

    Iterating the trainer's loader would be wrong: with persistent workers a DataLoader keeps one
    iterator, so a second `iter()` resets the one the fit loop already holds and the first training
    epoch comes out empty. Shuffled like training; not sharded under DDP, which is harmless because
    the sweep averages the loss over ranks, so every rank still sees the same curve.
    """
    if loader is None:
        raise LightcycleError("the LR range test needs a training dataloader")
    if not isinstance(loader, DataLoader):
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=True,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )


class LRFinder(L.Callback):
    """Run the LR range test right before the first training step (and never again on resume).

    Args:
        start_lr, end_lr, num_it: the exponential sweep (fastai: 1e-7 -> 10 over 100 iterations);
            the train loader is cycled if it is shorter than `num_it`.
        stop_div: stop once the smoothed loss exceeds 4x the best seen (or is NaN).
        suggestion: valley | steep | minimum | slide — which suggestion `apply` uses.
        apply: set the suggestion as the run's peak lr (`hparams.lr` and every group, ratios kept).
        dirpath: where `lr_find.png` goes (default: the trainer's `default_root_dir`).
        plot: save `lr_find.png` and log the figure to TensorBoard when a TensorBoard logger is present.
        exit_after: end `fit` after the test (what `lr_find()` uses).
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        stop_div: bool = True,
        suggestion: str = "valley",
        apply: bool = True,
        dirpath: str | Path | None = None,
        plot: bool = True,
        exit_after: bool = False,
        beta: float = 0.98,
    ) -> None:
        if not (0 < float(start_lr) < float(end_lr)):
            raise LightcycleError(f"lr_find needs 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
        if suggestion not in SUGGESTIONS:
            raise LightcycleError(f"lr_find.suggestion must be one of {', '.join(SUGGESTIONS)}, got {suggestion!r}")
        self.start_lr, self.end_lr = float(start_lr), float(end_lr)
        self.num_it = max(6, int(num_it))  # fastai's minimum
        self.stop_div = bool(stop_div)
        self.suggestion = suggestion
        self.apply = bool(apply)
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.plot = bool(plot)
        self.exit_after = bool(exit_after)
        self.beta = float(beta)
        self.result: LRFindResult | None = None
        self.applied_lr: float | None = None

    # Lightning state: the result survives in checkpoints, so resuming never sweeps again.
    def state_dict(self) -> dict[str, Any]:
        return {"result": self.result.to_dict() if self.result else None, "applied_lr": self.applied_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        result = state_dict.get("result")
        self.result = LRFindResult.from_dict(result) if result else None
        self.applied_lr = state_dict.get("applied_lr")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After checkpoint restore, sanity check and the on_fit_start of other callbacks (freezing):
        # the sweep sees exactly the parameters and optimizer the training will use.
        if self.result is not None:
            if self.applied_lr is not None and "lr" in pl_module.hparams:
                pl_module.hparams.lr = self.applied_lr  # optimizer/scheduler state already carry it
            log.info("LR range test: reusing the stored result (lr %.3g), not sweeping again", self.result.suggestion)
            return
        if not trainer.optimizers:
            raise LightcycleError("the LR range test needs an optimizer (configure_optimizers returned none)")
        # Every rank sweeps (the steps are collective) and sees the same reduced losses; taking rank
        # 0's result makes the suggestion identical everywhere even if floating point disagreed.
        self.result = trainer.strategy.broadcast(self._sweep(trainer, pl_module), src=0)
        lr = self.result.suggestion
        others = ", ".join(f"{k} {v:.3g}" for k, v in self.result.suggestions.items() if k != self.suggestion)
        log.info(
            "LR range test: %d iterations, %s suggestion lr=%.3g (%s)",
            len(self.result.lrs), self.suggestion, lr, others,
        )
        if self.plot and trainer.is_global_zero:
            self._save_plot(trainer)
        if self.apply:
            current = max(_peak_lrs(trainer.optimizers[0]))
            scale_learning_rates(trainer, lr / current)
            if "lr" in pl_module.hparams:
                pl_module.hparams.lr = lr
            self.applied_lr = lr
            log.info("LR range test: using lr=%.3g (%s) as the peak learning rate, group ratios kept", lr, self.suggestion)
        if self.exit_after:
            raise _TunerExitException()

    # --- internals --------------------------------------------------------------------------------
    def _batches(self, trainer: L.Trainer) -> Iterator[Any]:
        loader = _sweep_loader(trainer.train_dataloader)
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise LightcycleError("the LR range test got an empty training dataloader")

    def _sweep(self, trainer: L.Trainer, pl_module: L.LightningModule) -> LRFindResult:
        optimizer = trainer.optimizers[0]
        strategy = trainer.strategy
        lrs: list[float] = []
        losses: list[float] = []
        with _training_state_restored(trainer, pl_module), _muted_logging(pl_module), torch.enable_grad():
            peaks = _peak_lrs(optimizer)
            ref = max(peaks)
            ratios = [p / ref for p in peaks]
            smoother = SmoothedLoss(self.beta)
            best = math.inf
            pl_module.train()
            batches = self._batches(trainer)
            for it in range(self.num_it):
                lr = sweep_lr(it, self.start_lr, self.end_lr, self.num_it)
                for group, ratio in zip(optimizer.param_groups, ratios):
                    group["lr"] = lr * ratio
                batch = strategy.batch_to_device(next(batches))
                loss_holder: list[torch.Tensor] = []

                def closure(batch: Any = batch, it: int = it) -> torch.Tensor:
                    optimizer.zero_grad(set_to_none=True)
                    out = strategy.training_step(batch, it)
                    loss = out["loss"] if isinstance(out, dict) else out
                    if not isinstance(loss, torch.Tensor):
                        raise LightcycleError("the LR range test needs training_step to return the loss")
                    strategy.backward(loss, optimizer)
                    loss_holder.append(loss.detach())
                    return loss

                strategy.optimizer_step(optimizer, closure, model=pl_module)
                raw = float(strategy.reduce(loss_holder[-1].float(), reduce_op="mean"))
                smooth = smoother.update(raw)
                lrs.append(lr)
                losses.append(smooth)
                if smooth < best:
                    best = smooth
                if self.stop_div and (smooth > 4 * best or math.isnan(smooth)):
                    break
            optimizer.zero_grad(set_to_none=True)
        return LRFindResult.from_curve(lrs, losses, self.num_it, self.suggestion)

    def _save_plot(self, trainer: L.Trainer) -> None:
        assert self.result is not None
        fig = self.result.figure()
        dirpath = self.dirpath or Path(trainer.default_root_dir)
        dirpath.mkdir(parents=True, exist_ok=True)
        path = dirpath / "lr_find.png"
        fig.savefig(path)
        log.info("LR range test plot: %s", path)
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("lr_find", fig, global_step=0)
                logger.experiment.add_scalar("lr_find/suggestion", self.result.suggestion, 0)


def lr_find(
    model: L.LightningModule,
    datamodule: L.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    *,
    apply: bool = False,
    trainer_kwargs: dict[str, Any] | None = None,
    **finder_kwargs: Any,
) -> LRFindResult:
    """Run the LR range test from Python (fastai's `learn.lr_find()`) and return the curve and suggestions.

    The model comes back exactly as it was (weights, BatchNorm statistics, RNG); only the parameters
    that currently require grad are swept, so call it again after unfreezing. With `apply=True`
    `model.hparams.lr` becomes the suggestion, which the next `Trainer.fit` picks up.
    `finder_kwargs` go to `LRFinder` (start_lr, end_lr, num_it, suggestion, dirpath, plot, ...);
    `trainer_kwargs` to the short-lived Trainer that runs it (accelerator, precision, ...).
    """
    finder_kwargs.setdefault("plot", finder_kwargs.get("dirpath") is not None)
    finder = LRFinder(apply=False, exit_after=True, **finder_kwargs)
    kwargs: dict[str, Any] = dict(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    kwargs.update(trainer_kwargs or {})
    trainer = L.Trainer(callbacks=[finder], **kwargs)
    trainer.fit(model, datamodule=datamodule, train_dataloaders=train_dataloaders)
    if finder.result is None:
        raise LightcycleError("the LR range test did not run (was the training dataloader empty?)")
    if apply and "lr" in model.hparams:
        model.hparams.lr = finder.result.suggestion
    return finder.result
