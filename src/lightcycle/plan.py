"""How long a fit is, decided in one place: epochs, optimizer steps of every epoch, SGDR cycles.

Two moments know enough to decide it:
- from the config, before a Trainer exists: `schedule_epochs` says how many epochs a fit with a
  schedule lasts (SGDR's cycles decide, fastai's fit_sgdr; otherwise max_epochs). The run sets
  trainer.max_epochs from it and recipes size their stages with it.
- once the Trainer knows its loaders, world size and accumulation: `plan_fit` gives the steps of
  every epoch. VisionModule calls it once per fit (configure_optimizers) and builds its schedule
  from the plan (`VisionModule.fit_plan`); SnapshotEnsemble reads the cycle ends from it. A callback
  that changes how many batches an epoch has (ProgressiveResize with scale_batch) says so through
  `planned_train_batches(trainer)`, so the plan counts them instead of being patched afterwards.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

from lightcycle.errors import LightcycleError
from lightcycle.schedules import SGDR, Schedule, build_schedule

log = logging.getLogger("lightcycle")


def schedule_params(schedule: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(name, parameters) of a schedule config; one-cycle when none is given."""
    params = dict(schedule or {"name": "one_cycle"})
    return str(params.pop("name", "one_cycle")), params


def sgdr_cycle_epochs(params: Mapping[str, Any]) -> list[int]:
    """Epochs of each SGDR cycle for these parameters (a setting error names `schedule=sgdr`)."""
    try:
        return SGDR(steps_per_epoch=1, **params).cycle_epochs()
    except (TypeError, ValueError) as exc:
        raise LightcycleError(f"schedule=sgdr: {exc}") from None


def schedule_epochs(schedule: Mapping[str, Any] | None, max_epochs: int | None = None) -> int | None:
    """Epochs of a fit with `schedule`: the sum of SGDR's cycles, else `max_epochs` unchanged."""
    name, params = schedule_params(schedule)
    if name == "sgdr":
        return sum(sgdr_cycle_epochs(params))
    return max_epochs


@runtime_checkable
class ChangesEpochLengths(Protocol):
    """A callback that changes the number of training batches from one epoch to the next."""

    def planned_train_batches(self, trainer: Any) -> list[int] | None:
        """Training batches (loader length, one process) of every epoch, or None when unchanged."""


@dataclass(frozen=True)
class FitPlan:
    """The length of one fit; the schedule and the snapshots read it from here.

    `epoch_steps`: optimizer steps of every epoch. `total_steps`: the steps the schedule spans
    (one-cycle anneals over them). `steps_per_epoch`: the unit SGDR counts its cycles in, an epoch
    as Lightning estimates it (the first epoch's loader); every epoch has it unless a callback
    changes epoch lengths.
    """

    schedule: Mapping[str, Any]
    epoch_steps: tuple[int, ...]
    total_steps: int
    steps_per_epoch: int

    @classmethod
    def uniform(cls, schedule: Mapping[str, Any] | None, total_steps: int, epochs: int) -> "FitPlan":
        """Every epoch alike: `total_steps` spread over `epochs` (what Lightning estimates)."""
        total = max(1, int(total_steps))
        epochs = max(1, int(epochs))
        per_epoch = max(1, total // epochs)
        return cls(dict(schedule or {"name": "one_cycle"}), (per_epoch,) * epochs, total, per_epoch)

    @property
    def name(self) -> str:
        return schedule_params(self.schedule)[0]

    @property
    def epochs(self) -> int:
        return len(self.epoch_steps)

    def build_schedule(self) -> Schedule:
        """The step -> multiplier schedule this plan describes."""
        return build_schedule(dict(self.schedule), total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch)

    def cycle_epochs(self) -> list[int]:
        """Epochs of each SGDR cycle; empty for other schedules."""
        schedule = self.build_schedule()
        return schedule.cycle_epochs() if isinstance(schedule, SGDR) else []

    def cycle_end_steps(self) -> list[int]:
        """The last optimizer step (0-based) of every SGDR cycle: where snapshots are taken."""
        schedule = self.build_schedule()
        return schedule.cycle_end_steps() if isinstance(schedule, SGDR) else []

    def restart_epochs(self) -> list[int]:
        """Epochs (0-based) at which a new SGDR cycle starts, the first one excluded."""
        schedule = self.build_schedule()
        return schedule.restart_epochs() if isinstance(schedule, SGDR) else []


def optimizer_steps(trainer: Any, batches: int) -> int:
    """Optimizer steps of an epoch of `batches` loader batches, as Lightning counts them:
    per process, cut by limit_train_batches, divided by gradient accumulation."""
    batches = math.ceil(batches / max(1, trainer.world_size))
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    return math.ceil(batches / max(1, trainer.accumulate_grad_batches))


def plan_fit(trainer: Any, schedule: Mapping[str, Any] | None) -> FitPlan:
    """The plan of the fit `trainer` is about to run (call it where configure_optimizers runs)."""
    plan = FitPlan.uniform(schedule, int(trainer.estimated_stepping_batches), int(trainer.max_epochs or 1))
    lengths = _planned_train_batches(trainer)
    if lengths is None:
        return plan
    steps = tuple(optimizer_steps(trainer, n) for n in lengths)
    total = sum(steps)
    if trainer.max_steps is not None and trainer.max_steps != -1:
        total = min(total, trainer.max_steps)
    spans = plan.total_steps
    if total != spans and plan.name == "one_cycle":
        spans = max(1, total)
        log.info("resize.scale_batch: one-cycle planned over %d steps", spans)
    elif total != spans and plan.name == "sgdr":
        log.warning(
            "resize.scale_batch: SGDR counts epochs in steps of the first size; with changing batch sizes "
            "its cycle boundaries drift from epoch boundaries"
        )
    return FitPlan(plan.schedule, steps, spans, plan.steps_per_epoch)


def _planned_train_batches(trainer: Any) -> list[int] | None:
    max_epochs = trainer.max_epochs
    if not max_epochs or max_epochs < 1:
        return None
    for callback in trainer.callbacks:
        if isinstance(callback, ChangesEpochLengths):
            lengths = callback.planned_train_batches(trainer)
            if lengths is not None:
                return list(lengths)
    return None


# --- is the fit long enough to learn? ------------------------------------------------------------------
# Fewer optimizer steps than this in a whole run rarely give a usable model, whatever the learning
# rate: from ImageNet weights the demo classifier needs 66-88 steps to reach 0.95 accuracy
# (docs/benchmarks.md, 5), one-cycle spends its first quarter warming up, and fastai's own LR range
# test takes 100 steps to see the loss respond. Every built-in demo trains 176-640 steps.
MIN_LEARNING_STEPS = 100
_SMALLEST_SUGGESTED_BATCH = 8


def few_steps_warning(
    steps: int,
    epochs: int,
    images: int | None = None,
    batch_size: int | None = None,
    epochs_key: str = "trainer.max_epochs",
    minimum: int = MIN_LEARNING_STEPS,
) -> str | None:
    """The warning for a run of `steps` optimizer steps in `epochs` epochs, or None when they suffice.

    It says what to change: more epochs (`epochs_key`), or smaller batches (`data.batch_size`, when
    `batch_size` is known), each with about how many steps it gives.
    """
    steps, epochs = int(steps), max(1, int(epochs))
    if steps >= minimum:
        return None
    per_epoch = steps / epochs
    seen = f"{epochs} epoch{'s' if epochs > 1 else ''} of {per_epoch:.3g} steps"
    if images is not None and batch_size is not None:
        seen += f": {images} training images in batches of {batch_size}"
    fixes = []
    if per_epoch > 0:
        need = math.ceil(minimum / per_epoch)
        fixes.append(f"more epochs ({need} in all, about {round(need * per_epoch)} steps: {epochs_key})")
    if batch_size is not None and batch_size > _SMALLEST_SUGGESTED_BATCH:
        smaller = batch_size
        while smaller // 2 >= _SMALLEST_SUGGESTED_BATCH and steps * batch_size / smaller < minimum:
            smaller //= 2
        fixes.append(f"smaller batches (data.batch_size={smaller}: about {round(steps * batch_size / smaller)} steps)")
    advice = "; train " + " or with ".join(fixes) if fixes else ""
    return (
        f"this run has only {steps} optimizer steps ({seen}); with fewer than {minimum} a model usually ends far "
        f"short of what it would reach{advice}"
    )


def warn_few_steps(
    trainer: Any, steps: int, epochs: int, epochs_key: str = "trainer.max_epochs", datamodule: Any = None
) -> str | None:
    """Log `few_steps_warning` once (rank 0) for a run of `steps` steps on `datamodule` (default: the
    trainer's); returns the message."""
    datamodule = datamodule if datamodule is not None else getattr(trainer, "datamodule", None)
    samples = getattr(datamodule, "train_samples", None)
    images = len(samples) if samples is not None else None
    batch_size = getattr(datamodule, "batch_size", None)
    message = few_steps_warning(steps, epochs, images, batch_size, epochs_key)
    if message and getattr(trainer, "is_global_zero", True):
        log.warning("%s", message)
    return message
