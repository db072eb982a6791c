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

On by default in `lightcycle-train` (`callbacks.divergence=null` switches it off); from Python:
`L.Trainer(callbacks=[DivergenceGuard(), ...])`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from lightcycle.errors import LightcycleError


class DivergenceGuard(L.Callback):
    """Raise a one-line LightcycleError when the training loss stops being finite.

    Args:
        check_checkpoints: also refuse to save a checkpoint whose weights hold NaN or inf.
    """

    def __init__(self, check_checkpoints: bool = True) -> None:
        self.check_checkpoints = bool(check_checkpoints)
        self.last_finite_step: int | None = None  # global step after the last step with a finite loss
        self.diverged_at: int | None = None

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
        finite = bool(torch.isfinite(loss.detach()).all())
        # one rank's NaN stops every rank together (a lone raise would leave the others waiting)
        diverged = trainer.strategy.reduce_boolean_decision(not finite, all=False)
        if not diverged:
            self.last_finite_step = trainer.global_step
            return
        self.diverged_at = trainer.global_step
        raise LightcycleError(self.message(trainer, pl_module, float(loss.detach().float().mean()) if not finite else None))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if not self.check_checkpoints:
            return
        for name, tensor in checkpoint.get("state_dict", {}).items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                self.diverged_at = trainer.global_step
                raise LightcycleError(
                    self.message(trainer, pl_module, None, what=f"the weights are not finite ({name})")
                    + " The checkpoint was not written."
                )

    # --- the message ---------------------------------------------------------------------------
    def message(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: float | None, what: str | None = None
    ) -> str:
        what = what or f"the training loss is {_fmt_loss(loss)}"
        parts = [f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: {what}."]
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
    from lightcycle.callbacks.lr_finder import LRFinder

    for callback in trainer.callbacks:
        if isinstance(callback, LRFinder) and callback.result is not None:
            return float(callback.result.suggestion)
    return None
