"""The LR range test (Leslie Smith's, with fastai's exact semantics): the sweep and the curve maths.

Why ours and not `lightning.pytorch.tuner.Tuner.lr_find`: fastai's test differs in ways that change
the answer — a debiased EMA of the loss (beta 0.98), stopping once the smoothed loss exceeds 4x the
best, suggestions taken after skipping the first `num_it // 10` and last 5 points, and the
longest-valley rule as the default suggestion. It must also leave *nothing* behind: weights,
optimizer state, BatchNorm statistics and every RNG are restored bit-exactly, in memory.

The sweep scales every parameter group's learning rate by the same factor, so discriminative
learning rates keep their ratios and frozen parameters (no gradient) are not touched. The reported
learning rate is the one of the group with the highest peak (the head in `VisionModule`), which is
what `model.lr` means. `range_test` runs it inside a fit; the `LRFinder` callback
(lightcycle.callbacks.lr_finder) decides when, and what to do with the result.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightcycle.data.streams import AugmentingLoader, streams_restored
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
        # deferred: matplotlib loads only when the plot is drawn; no pyplot: no global backend, works headless
        from matplotlib.figure import Figure

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


def peak_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
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


# --- the sweep --------------------------------------------------------------------------------
def sweep_loader(loader: Any) -> Any:
    """A loader of its own over the training data, for the sweep.

    Iterating the trainer's loader would be wrong: with persistent workers a DataLoader keeps one
    iterator, so a second `iter()` resets the one the fit loop already holds and the first training
    epoch comes out empty. Shuffled like training; not sharded under DDP, which is harmless because
    the sweep averages the loss over ranks, so every rank still sees the same curve. Its augmentation
    is seeded like training's (data/streams.py).
    """
    if loader is None:
        raise LightcycleError("the LR range test needs a training dataloader")
    if not isinstance(loader, DataLoader):
        return loader
    return AugmentingLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=True,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )


def range_test(
    trainer: L.Trainer,
    module: L.LightningModule,
    batches: Iterator[Any],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    stop_div: bool = True,
    beta: float = 0.98,
    method: str = "valley",
    accumulate: int = 1,
    datasets: Sequence[Any] = (),
) -> LRFindResult:
    """Sweep the trainer's first optimizer from start_lr to end_lr over `batches`, then restore everything.

    Each iteration is a real optimizer step through the strategy (precision, DDP); the recorded
    loss is averaged over ranks, so every rank sees the same curve. With `accumulate` > 1
    (`trainer.accumulate_grad_batches`) an iteration is one optimizer step of `accumulate` batches,
    as in training: the test sweeps the effective batch that training steps with, `num_it` counts
    optimizer steps like every schedule does, and its loss is the mean over those batches.
    `datasets`: the datasets `batches` draws from; their augmentation streams are restored too.
    """
    optimizer = trainer.optimizers[0]
    strategy = trainer.strategy
    accumulate = max(1, int(accumulate))
    lrs: list[float] = []
    losses: list[float] = []
    with _training_state_restored(trainer, module), streams_restored(*datasets), _muted_logging(module), \
            torch.enable_grad():
        peaks = peak_lrs(optimizer)
        ref = max(peaks)
        ratios = [p / ref for p in peaks]
        smoother = SmoothedLoss(beta)
        best = math.inf
        module.train()
        for it in range(num_it):
            lr = sweep_lr(it, start_lr, end_lr, num_it)
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            micro_batches = [strategy.batch_to_device(next(batches)) for _ in range(accumulate)]
            loss_holder: list[torch.Tensor] = []

            def closure(micro_batches: list[Any] = micro_batches, it: int = it) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                for batch in micro_batches:
                    out = strategy.training_step(batch, it)
                    loss = out["loss"] if isinstance(out, dict) else out
                    if not isinstance(loss, torch.Tensor):
                        raise LightcycleError("the LR range test needs training_step to return the loss")
                    strategy.backward(loss / accumulate, optimizer)  # Lightning's scaling of accumulated losses
                    loss_holder.append(loss.detach())
                return torch.stack(loss_holder[-accumulate:]).mean()

            strategy.optimizer_step(optimizer, closure, model=module)
            raw = float(strategy.reduce(torch.stack(loss_holder[-accumulate:]).float().mean(), reduce_op="mean"))
            smooth = smoother.update(raw)
            lrs.append(lr)
            losses.append(smooth)
            if smooth < best:
                best = smooth
            if stop_div and (smooth > 4 * best or math.isnan(smooth)):
                break
        optimizer.zero_grad(set_to_none=True)
    return LRFindResult.from_curve(lrs, losses, num_it, method)
