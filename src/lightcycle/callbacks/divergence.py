"""Stop a diverged run at once, with the reason, before a checkpoint is overwritten with NaN weights.

A learning rate that is too high sends the loss to inf or NaN within a few steps; after that every
step only spreads NaN through the weights, and the next periodic save would replace a good
`last.ckpt` with them. `DivergenceGuard` checks the training loss after every step and raises a
LightcycleError naming the loss, the step, the learning rate and the LR finder's suggestion when
one was computed. Lightning runs checkpoint callbacks after all others, so the step that diverged
is never saved; as a second line of defence a full checkpoint (last.ckpt, and the best one with
`checkpoints.save_optimizer=true`: Lightning calls `on_save_checkpoint` for those, not for
weights-only saves) whose weights are not all finite is refused (the error names the first such
tensor). A weights-only best checkpoint is written only when `val_loss` improves, which NaN never does.

Reading a loss on the host waits for the accelerator to finish the step, and under DDP the ranks'
verdicts are reduced, a collective of its own. So the check runs every step only where it costs
nothing (a CPU loss, one process); elsewhere each step's finiteness is folded into a flag on the
device, without waiting, and the flag is read (and reduced across ranks) every `check_every_n_steps`
steps (default: `trainer.log_every_n_steps`, where Lightning reads the loss for the logger anyway),
at the end of every epoch and before every checkpoint is written, so a checkpoint never follows a
step that diverged. The error then names the first step that diverged.

On by default in `lightcycle-train` (`callbacks.divergence=null` switches it off); from Python:
`L.Trainer(callbacks=[DivergenceGuard(), ...])`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from lightcycle.callbacks.lr_finder import LRFinder
from lightcycle.errors import LightcycleError


class DivergenceGuard(L.Callback):
    """Raise a one-line LightcycleError when the training loss stops being finite.

    Args:
        check_checkpoints: also refuse to save a checkpoint whose weights hold NaN or inf.
        check_every_n_steps: steps between reads of the device-side flag. None (default): a CPU
            loss in one process is read every step, elsewhere every `trainer.log_every_n_steps`.
    """

    def __init__(self, check_checkpoints: bool = True, check_every_n_steps: int | None = None) -> None:
        self.check_checkpoints = bool(check_checkpoints)
        self.check_every_n_steps = check_every_n_steps
        self.last_finite_step: int | None = None  # global step after the last step with a finite loss
        self.diverged_at: int | None = None
        self._first_bad: torch.Tensor | None = None  # device: global step after the first non-finite loss, or -1
        self._bad_loss: torch.Tensor | None = None  # device: that loss (NaN or inf)
        self._pending_until = 0  # global step after the last step folded into `_first_bad`

    # Lightning state: where the run was last known good, kept across resume.
    def state_dict(self) -> dict[str, Any]:
        return {"last_finite_step": self.last_finite_step, "diverged_at": self.diverged_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_finite_step = state_dict.get("last_finite_step")
        self.diverged_at = state_dict.get("diverged_at")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # manual optimization returning nothing: nothing to check
        loss = loss.detach()
        step = trainer.global_step
        free = loss.device.type == "cpu" and trainer.world_size == 1
        if free and self.check_every_n_steps is None and self._first_bad is None:
            if bool(torch.isfinite(loss).all()):  # free on a CPU: no wait, no collective
                self.last_finite_step = step
                return
            self.diverged_at = step
            raise LightcycleError(self.message(trainer, pl_module, float(loss.float().mean())))
        bad = ~torch.isfinite(loss).all()
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        first = bad & (self._first_bad < 0)
        self._first_bad = torch.where(first, step, self._first_bad)
        self._bad_loss = torch.where(first, loss.float().mean(), self._bad_loss)
        self._pending_until = step
        every = trainer.log_every_n_steps if self.check_every_n_steps is None else int(self.check_every_n_steps)
        if every > 0 and step % every == 0:  # 0: only at epoch ends and saves
            self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Read the steps folded on the device since the last check; raise if one of them diverged.

        Every rank calls it at the same points (step counts, epoch ends, saves), so the reduction
        across ranks lines up, and one rank's NaN stops every rank together.
        """
        if self._first_bad is None:
            return
        first_bad, until = self._first_bad, self._pending_until
        self._first_bad = None
        local = int(first_bad)  # the one wait for every step since the last check
        # one rank's NaN stops every rank together (a lone raise would leave the others waiting)
        diverged = trainer.strategy.reduce_boolean_decision(local >= 0, all=False)
        if not diverged:
            self.last_finite_step = until
            return
        self.diverged_at = local if local >= 0 else until
        self.last_finite_step = self.diverged_at - 1 if local >= 0 else self.last_finite_step
        loss = float(self._bad_loss) if local >= 0 else None
        raise LightcycleError(self.message(trainer, pl_module, loss, step=self.diverged_at))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.check(trainer, pl_module)  # steps since the last read: never save after a diverged one
        if not self.check_checkpoints:
            return
        tensors = [(n, t) for n, t in checkpoint.get("state_dict", {}).items()
                   if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not tensors:
            return
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for _, t in tensors:
            by_device.setdefault(t.device, []).append(torch.isfinite(t).all())
        if all(bool(torch.stack(flags).all()) for flags in by_device.values()):  # one wait per device
            return
        name = next(n for n, t in tensors if not bool(torch.isfinite(t).all()))
        self.diverged_at = trainer.global_step
        raise LightcycleError(
            self.message(trainer, pl_module, None, what=f"the weights are not finite ({name})")
            + " The checkpoint was not written."
        )

    # --- the message ---------------------------------------------------------------------------
    def message(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: float | None, what: str | None = None,
        step: int | None = None,
    ) -> str:
        what = what or f"the training loss is {_fmt_loss(loss)}"
        step = trainer.global_step if step is None else step
        parts = [f"training diverged at epoch {trainer.current_epoch}, step {step}: {what}."]
        lr_now = _current_lr(trainer)
        peak = _peak_lr(pl_module)
        lr_text = "The learning rate is too high"
        details = []
        if lr_now is not None:
            details.append(f"lr {lr_now:.3g} at this step")
        if peak is not None:
            details.append(f"model.lr={peak:.3g}")
        suggestion = _lr_finder_suggestion(trainer)
        if suggestion is not None:
            details.append(f"the LR finder suggested {suggestion:.3g}")
        if details:
            lr_text += f" ({', '.join(details)})"
        advice = "lower model.lr" + (f" (e.g. model.lr={suggestion:.2g})" if suggestion is not None else "") + \
            " or run the LR range test with model.lr=auto"
        parts.append(f"{lr_text}: {advice}.")
        if self.last_finite_step is not None:
            parts.append(f"Nothing was saved after step {self.last_finite_step}, the last with a finite loss.")
        return " ".join(parts)


def _fmt_loss(loss: float | None) -> str:
    if loss is None:
        return "not finite on another process"
    if math.isnan(loss):
        return "NaN"
    return "inf" if loss > 0 else "-inf"


def _current_lr(trainer: L.Trainer) -> float | None:
    try:
        groups = trainer.optimizers[0].param_groups
    except (IndexError, AttributeError):
        return None
    lrs = [float(g["lr"]) for g in groups if "lr" in g]
    return max(lrs) if lrs else None


def _peak_lr(pl_module: L.LightningModule) -> float | None:
    lr = getattr(pl_module, "hparams", {}).get("lr") if hasattr(pl_module, "hparams") else None
    try:
        return float(lr) if lr is not None else None
    except (TypeError, ValueError):
        return None


def _lr_finder_suggestion(trainer: L.Trainer) -> float | None:
    for callback in trainer.callbacks:
        if isinstance(callback, LRFinder) and callback.result is not None:
            return float(callback.result.suggestion)
    return None
