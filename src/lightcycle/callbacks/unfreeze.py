"""Gradual unfreezing with discriminative learning rates (fastai / ULMFiT).

Training starts with only the top layer group(s) trainable (the head, by default); at each milestone
epoch one more group, counted from the top, becomes trainable, and the last milestone unfreezes the
whole network (ULMFiT: `freeze_to(-1)`, `freeze_to(-2)`, `freeze_to(-3)`, then `unfreeze()`).

Example with resnet18 (6 groups: stem, 4 stages, head) and `milestones=[2, 4]`:
epochs 0-1 train the head, epochs 2-3 the head and stage 4, epochs 4+ everything.
With `last_unfreezes_all=False` every milestone adds exactly `per_milestone` groups.

The module's optimizer holds every parameter from the start (`VisionModule.param_groups`), so
unfreezing needs no new optimizer and the one per-batch schedule keeps driving all groups with their
geometric peaks (`lr / lr_mult ... lr`). Optimizer moments are *not* carried over or reset by hand:
AdamW creates a parameter's state at its first step with a gradient, and frozen parameters never get
one (Lightning zeroes grads with `set_to_none=True`), so a newly unfrozen group starts with fresh
moments and its own bias correction, exactly like fastai's fresh optimizer state after `unfreeze()`.

The callback talks to the module only through `layer_groups()`, `freeze_to(n)` and the `lr_mult`
hyperparameter, so any LightningModule with those works.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import lightning as L

from lightcycle.callbacks.interfaces import UnfreezingPlan
from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")


class GradualUnfreezing(L.Callback, UnfreezingPlan):
    """Unfreeze layer groups from the top at milestone epochs (the Trainer's `UnfreezingPlan`).

    Args:
        milestones: epochs (0-based, increasing) at which more groups become trainable.
        lr_mult: ratio of the head's to the first group's peak LR (fastai `slice(lr/lr_mult, lr)`);
            written into the module's `lr_mult` hyperparameter before the optimizer is built.
            None keeps the module's own value.
        initial_trainable: layer groups, counted from the head, trainable before the first milestone.
        per_milestone: groups added at each milestone.
        last_unfreezes_all: the last milestone unfreezes every group (fastai's `unfreeze()`).
    """

    def __init__(
        self,
        milestones: Sequence[int],
        lr_mult: float | None = 10.0,
        initial_trainable: int = 1,
        per_milestone: int = 1,
        last_unfreezes_all: bool = True,
    ) -> None:
        milestones = [int(m) for m in (milestones or [])]
        if not milestones:
            raise LightcycleError("unfreeze.milestones is empty: pass epochs like [2, 4], or null to switch it off")
        if milestones[0] < 0 or any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise LightcycleError(f"unfreeze.milestones must be increasing epochs >= 0, got {milestones}")
        if lr_mult is not None and float(lr_mult) < 1:
            raise LightcycleError(f"unfreeze.lr_mult must be >= 1, got {lr_mult}")
        if int(initial_trainable) < 1 or int(per_milestone) < 1:
            raise LightcycleError(
                f"unfreeze.initial_trainable and unfreeze.per_milestone must be >= 1, got {initial_trainable}, {per_milestone}"
            )
        self.milestones = milestones
        self.lr_mult = None if lr_mult is None else float(lr_mult)
        self.initial_trainable = int(initial_trainable)
        self.per_milestone = int(per_milestone)
        self.last_unfreezes_all = bool(last_unfreezes_all)
        self.frozen_to: int | None = None  # index of the first trainable group (freeze_to argument)
        self._loaded_frozen_to: int | None = None

    # --- the plan ---------------------------------------------------------------------------------
    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        """How many groups, counted from the head, train during `epoch`."""
        passed = sum(1 for m in self.milestones if m <= epoch)
        if self.last_unfreezes_all and passed == len(self.milestones):
            return n_groups
        return min(n_groups, self.initial_trainable + passed * self.per_milestone)

    def freeze_index(self, epoch: int, n_groups: int) -> int:
        """The `freeze_to` argument for `epoch`: groups before it are frozen."""
        return n_groups - self.trainable_groups(epoch, n_groups)

    def _apply(self, pl_module: L.LightningModule, index: int, why: str) -> None:
        if index != self.frozen_to:
            pl_module.freeze_to(index)
            n_groups = len(pl_module.layer_groups())
            if self.frozen_to is not None or index > 0:
                log.info("unfreeze: %s: groups %d-%d of %d trainable", why, index, n_groups - 1, n_groups)
        self.frozen_to = index

    # --- Lightning hooks --------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before the optimizer exists: put `lr_mult` where `group_lrs()` reads it."""
        for name in ("layer_groups", "freeze_to"):
            if not callable(getattr(pl_module, name, None)):
                raise LightcycleError(f"GradualUnfreezing needs a module with `{name}()`, like VisionModule")
        if stage != "fit":
            return
        if self.lr_mult is not None and "lr_mult" in pl_module.hparams:
            if float(pl_module.hparams.lr_mult) not in (1.0, self.lr_mult):
                log.warning("unfreeze.lr_mult=%g overrides model.lr_mult=%g", self.lr_mult, pl_module.hparams.lr_mult)
            pl_module.hparams.lr_mult = self.lr_mult
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0 and self.milestones[-1] >= max_epochs:
            late = [m for m in self.milestones if m >= max_epochs]
            log.warning("unfreeze.milestones %s are at or beyond max_epochs=%d and will never be reached", late, max_epochs)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run gets its checkpointed boundary back before anything else runs.
        n_groups = len(pl_module.layer_groups())
        index = self._loaded_frozen_to if self._loaded_frozen_to is not None else self.freeze_index(0, n_groups)
        self._apply(pl_module, min(index, n_groups), "start")
        self._loaded_frozen_to = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch is known only now on resume; the plan wins if the config changed since.
        self._sync(trainer, pl_module, "resume" if trainer.current_epoch else "start")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer, pl_module, f"epoch {trainer.current_epoch + 1}")  # counted from 1, as the epoch log

    def _sync(self, trainer: L.Trainer, pl_module: L.LightningModule, why: str) -> None:
        n_groups = len(pl_module.layer_groups())
        self._apply(pl_module, self.freeze_index(trainer.current_epoch, n_groups), why)

    def state_dict(self) -> dict[str, Any]:
        return {"frozen_to": self.frozen_to}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        value = state_dict.get("frozen_to")
        self._loaded_frozen_to = None if value is None else int(value)
        self.frozen_to = None  # forces freeze_to to run again on the (fresh) module
