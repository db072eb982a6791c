"""The LR range test as a Lightning callback: when it runs, and what happens to its suggestion.

The sweep and the curve maths live in lightcycle.lr_range (fastai's semantics, tested there);
`LRFinder` runs it right before the first training step and, by default, applies the suggestion to
the run; `lr_find(model, datamodule)` runs it from Python, like fastai's `learn.lr_find()`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import _TunerExitException

from lightcycle.atomic import save_figure
from lightcycle.callbacks.interfaces import SuggestsLearningRate
from lightcycle.errors import LightcycleError
from lightcycle.lr_range import (
    SUGGESTIONS,
    LRFindResult,
    peak_lrs,
    range_test,
    scale_learning_rates,
    sweep_loader,
)

log = logging.getLogger("lightcycle")


# --- how long the test may be: bounded by the training it precedes ------------------------------------
def bounded_num_it(num_it: int, fit_steps: int | None, max_share: float | None, min_num_it: int) -> int:
    """Iterations for a range test that should cost at most `max_share` of the `fit_steps` optimizer
    steps it precedes: `num_it` cut to that share, but never below `min_num_it` (a floor under which
    the curve has too few points for a suggestion) and never above `num_it`. No bound when either
    `max_share` or `fit_steps` is None."""
    if max_share is None or fit_steps is None:
        return int(num_it)
    return min(int(num_it), max(int(min_num_it), math.floor(float(max_share) * int(fit_steps))))


def shortened_beta(beta: float, num_it: int, planned_num_it: int) -> float:
    """The loss average for a sweep of `num_it` iterations instead of `planned_num_it`: `1 - beta` grows
    by their ratio, so the average spans the same share of the sweep (fastai's 0.98 over 100
    iterations is about 0.93 over 30) instead of lagging over most of a short curve."""
    if num_it >= planned_num_it:
        return float(beta)
    return max(0.0, 1.0 - (1.0 - float(beta)) * planned_num_it / max(1, num_it))


class LRFinder(L.Callback, SuggestsLearningRate):
    """Run the LR range test right before the first training step (and never again on resume).

    Args:
        start_lr, end_lr, num_it: the exponential sweep (fastai: 1e-7 -> 10 over 100 iterations);
            the train loader is cycled if it is shorter than `num_it`. An iteration is one optimizer
            step: with `trainer.accumulate_grad_batches=N`, N batches (the sweep runs the
            accumulated batch that training steps with).
        stop_div: stop once the smoothed loss exceeds 4x the best seen (or is NaN).
        suggestion: valley | steep | minimum | slide — which suggestion `apply` uses.
        apply: set the suggestion as the run's peak lr (`hparams.lr` and every group, ratios kept).
        dirpath: where `lr_find.png` goes (default: the trainer's `default_root_dir`).
        plot: save `lr_find.png` and log the figure to TensorBoard when a TensorBoard logger is present.
        exit_after: end `fit` after the test (what `lr_find()` uses).
        beta: the loss average (fastai's 0.98).
        max_share: bound the test by the training it precedes: at most this share of the fit's
            optimizer steps (None = always `num_it`, as `lr_find()` without `fit_steps`). On a small
            dataset fastai's 100 iterations cost several times the whole fit; a shortened test says
            so in the log, and its loss average spans the same share of the sweep
            (`lr_range.shortened_beta`).
        min_num_it: the fewest iterations a bounded test runs (docs/benchmarks.md, 10: 50 kept the valley
            suggestion within 2x of the 100-iteration test's on the demo; 30 did not).
        fit_steps: the optimizer steps of that training (default: the current fit's plan).
        skip_share: run the test only if its `num_it` iterations are at most this share of the fit's
            optimizer steps, else keep the module's lr (a recipe stage's `lr_find_share`: on a small
            dataset a sweep of the whole network costs several of its epochs). None = always run.
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
        max_share: float | None = 0.5,
        min_num_it: int = 50,
        fit_steps: int | None = None,
        skip_share: float | None = None,
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
        if max_share is not None and not float(max_share) > 0:
            raise LightcycleError(f"lr_find.max_share must be > 0 (or null: no bound), got {max_share!r}")
        if int(min_num_it) < 6:
            raise LightcycleError(f"lr_find.min_num_it must be at least 6 (fastai's minimum), got {min_num_it!r}")
        self.max_share = None if max_share is None else float(max_share)
        self.min_num_it = int(min_num_it)
        self.fit_steps = None if fit_steps is None else int(fit_steps)
        if skip_share is not None and not float(skip_share) > 0:
            raise LightcycleError(f"lr_find.skip_share must be > 0 (or null: always run), got {skip_share!r}")
        self.skip_share = None if skip_share is None else float(skip_share)
        self.result: LRFindResult | None = None
        self.applied_lr: float | None = None

    # Lightning state: the result survives in checkpoints, so resuming never sweeps again.
    def state_dict(self) -> dict[str, Any]:
        return {"result": self.result.to_dict() if self.result else None, "applied_lr": self.applied_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        result = state_dict.get("result")
        self.result = LRFindResult.from_dict(result) if result else None
        self.applied_lr = state_dict.get("applied_lr")

    def suggested_lr(self) -> float | None:
        """The range test's suggestion (a `callbacks.interfaces.SuggestsLearningRate`); None before it ran."""
        return float(self.result.suggestion) if self.result is not None else None

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
        steps = self._fit_steps(trainer, pl_module)
        if self.too_costly(steps):
            log.info(
                "no LR range test: its %d iterations would be more than %.0f%% of the fit's %d optimizer steps; "
                "keeping lr %.3g", self.num_it, 100 * float(self.skip_share), steps, max(peak_lrs(trainer.optimizers[0])),
            )
            return
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
            current = max(peak_lrs(trainer.optimizers[0]))
            scale_learning_rates(trainer, lr / current)
            if "lr" in pl_module.hparams:
                pl_module.hparams.lr = lr
            self.applied_lr = lr
            log.info("LR range test: using lr=%.3g (%s) as the peak learning rate, group ratios kept", lr, self.suggestion)
        if self.exit_after:
            raise _TunerExitException()

    # --- internals --------------------------------------------------------------------------------
    @staticmethod
    def _loader(trainer: L.Trainer) -> Any:
        # What the epochs will train on: a callback may have just asked the DataModule to serve something
        # else (Precompute's cached activations), which the fit loop's current loader does not know yet.
        dm = trainer.datamodule
        return sweep_loader(dm.train_dataloader() if dm is not None else trainer.train_dataloader)

    @staticmethod
    def _batches(loader: Any) -> Iterator[Any]:
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise LightcycleError("the LR range test got an empty training dataloader")

    def _sweep(self, trainer: L.Trainer, pl_module: L.LightningModule) -> LRFindResult:
        num_it, beta = self._budget(trainer, pl_module)
        loader = self._loader(trainer)
        return range_test(
            trainer, pl_module, self._batches(loader), start_lr=self.start_lr, end_lr=self.end_lr,
            num_it=num_it, stop_div=self.stop_div, beta=beta, method=self.suggestion,
            accumulate=trainer.accumulate_grad_batches, datasets=[getattr(loader, "dataset", None)],
        )

    def too_costly(self, fit_steps: int) -> bool:
        """Whether `skip_share` says a fit of `fit_steps` optimizer steps keeps its lr without a test."""
        return self.skip_share is not None and self.num_it > self.skip_share * int(fit_steps)

    def _fit_steps(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        """The optimizer steps of the fit this test precedes: `fit_steps`, else the fit's plan
        (lightcycle.plan: per process, after gradient accumulation, every epoch's length)."""
        if self.fit_steps is not None:
            return self.fit_steps
        plan = getattr(pl_module, "fit_plan", None)  # VisionModule's plan of this fit
        return plan.total_steps if plan is not None else int(trainer.estimated_stepping_batches)

    def _budget(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[int, float]:
        """(iterations, loss average) of this test: `num_it`, or fewer when `max_share` bounds it."""
        steps = self._fit_steps(trainer, pl_module) if self.max_share is not None else self.fit_steps
        num_it = bounded_num_it(self.num_it, steps, self.max_share, self.min_num_it)
        if num_it >= self.num_it:
            return self.num_it, self.beta
        beta = shortened_beta(self.beta, num_it, self.num_it)
        log.info(
            "LR range test: %d iterations instead of lr_find.num_it=%d, because the training it precedes has only %d "
            "optimizer steps and the test may take at most %.0f%% of them (lr_find.max_share=%g; never fewer than "
            "lr_find.min_num_it=%d); loss average beta %.3f instead of %g over the shorter sweep",
            num_it, self.num_it, steps, 100 * self.max_share, self.max_share, self.min_num_it, beta, self.beta,
        )
        return num_it, beta

    def _save_plot(self, trainer: L.Trainer) -> None:
        assert self.result is not None
        fig = self.result.figure()
        dirpath = self.dirpath or Path(trainer.default_root_dir)
        path = save_figure(dirpath / "lr_find.png", fig)
        log.info("LR range test plot: %s", path)

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
    `finder_kwargs` go to `LRFinder` (start_lr, end_lr, num_it, suggestion, dirpath, plot, max_share with
    fit_steps, ...);
    `trainer_kwargs` to the short-lived Trainer that runs it (accelerator, precision, ...).
    """
    finder_kwargs.setdefault("plot", finder_kwargs.get("dirpath") is not None)
    if finder_kwargs.get("fit_steps") is None:  # no training to bound the test by: fastai's full sweep
        if finder_kwargs.get("max_share") is not None:
            raise LightcycleError("lr_find(max_share=...) bounds the test by the training it precedes: pass fit_steps=<its optimizer steps>")
        finder_kwargs["max_share"] = None
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
