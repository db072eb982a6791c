"""What callbacks ask of one another, named as interfaces.

A callback that needs another one finds it by what it does, `find_callback(trainer, Interface)`,
never by its class: any callback implementing the interface serves (a user's own EMA, a different
unfreezing plan), and the provider says in its class which interfaces it offers.

| interface | offered by | asked by |
|---|---|---|
| `UnfreezingPlan` | `GradualUnfreezing` | `Precompute` (precompute while only the head trains) |
| `WeightAverager` | `EMA` | `SnapshotEnsemble` (snapshots hold the average), `averaged_weights` |
| `SuggestsLearningRate` | `LRFinder` | `DivergenceGuard` (its message names the suggestion) |
| `ReportsFinalMetrics` | `TTA`, `SnapshotEnsemble` | the run (metrics.json) |

`lightcycle.plan.ChangesEpochLengths` (`ProgressiveResize`) is the same idea one layer down: the
fit's plan asks for it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, TypeVar, runtime_checkable

import lightning as L

T = TypeVar("T")


@runtime_checkable
class UnfreezingPlan(Protocol):
    """Decides how many layer groups, counted from the head, train in each epoch."""

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        """Groups trainable during `epoch` of a module with `n_groups` layer groups."""
        ...


@runtime_checkable
class WeightAverager(Protocol):
    """Keeps an average of the weights that evaluation and checkpoints use instead of the weights."""

    def averaging_horizon(self) -> float:
        """About how many optimizer steps the average spans."""
        ...

    def swapped_in(self, trainer: L.Trainer, pl_module: L.LightningModule) -> contextlib.AbstractContextManager[None]:
        """The averaged weights in `pl_module` for a block, the training weights back afterwards."""
        ...


@runtime_checkable
class SuggestsLearningRate(Protocol):
    """Chose this fit's learning rate (the LR range test)."""

    def suggested_lr(self) -> float | None:
        """The learning rate chosen, or None while none was."""
        ...


@runtime_checkable
class ReportsFinalMetrics(Protocol):
    """Evaluates something when training ends; the run merges `final_metrics` into metrics.json."""

    final_metrics: dict[str, float]


def find_callback(trainer: Any, interface: type[T]) -> T | None:
    """The first of `trainer.callbacks` that implements `interface`, or None."""
    return next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, interface)), None)


def position(trainer: Any, callback: Any) -> int:
    """Where `callback` runs among the trainer's callbacks (Lightning calls hooks in list order)."""
    return [id(c) for c in trainer.callbacks].index(id(callback))
