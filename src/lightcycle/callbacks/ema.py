"""EMA of the weights (timm's `--model-ema`): Lightning's `WeightAveraging` with a warmed-up decay.

Lightning's callback does the work: it keeps an `AveragedModel` (parameters and buffers), updates
it after every optimizer step (so under gradient accumulation once per accumulated batch), swaps it
in for every validation epoch, copies it into the model when training ends, and saves it as the
checkpoint's `state_dict` — the raw weights go to `current_model_state`, the averaging state to
`averaging_state`, and resuming restores both. So everything that reads a checkpoint
(`VisionModule.load`, `Predictor`, `lightcycle-export`, `lightcycle-interpret`) gets the averaged
weights without knowing about EMA, and a checkpoint saved without EMA loads as before.

What lightcycle adds:
- the decay warms up like timm's `ModelEmaV3(use_warmup=True)`: min(decay, 1 - (1 + t)^(-2/3))
  after t updates, so a short fine-tune is not dominated by the initial weights (0.999 alone
  would keep 0.999^200 = 82 % of them after 200 steps);
- the average lives on the training device (Lightning would pick the device the model is on in
  `setup`, before the strategy has moved it);
- under DDP, parameters are identical on every rank, but BatchNorm statistics are each rank's own
  after its forward pass; the averaged buffers are taken from rank 0 before every use (validation,
  the end of training, snapshots), as DDP itself broadcasts rank 0's buffers, so every rank
  evaluates the same model; at the end the ranks check that their averages agree;
- `averaged_weights(trainer, module)`: the averaged weights swapped in for the duration of a block,
  so SnapshotEnsemble's weights-only snapshots hold them too (Lightning writes them only into full
  checkpoints);
- weights-only checkpoints (the best checkpoint, a recipe's `stage<k>-best-*`) hold the averaged
  weights too: Lightning calls callbacks' `on_save_checkpoint` only for full checkpoints, so every
  ModelCheckpoint of the fit that saves weights only writes them with the average swapped in; the
  best checkpoint then holds the model whose validation chose it.

Validation, the final metrics, TTA, snapshot ensembles and interpretation at the end of training all
see the averaged weights. Each recipe stage starts a new average from where the last stage ended.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from lightcycle.callbacks.interfaces import WeightAverager, find_callback
from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")


def warmed_decay(decay: float, updates: int, warmup: bool = True) -> float:
    """The decay of the update after `updates` earlier ones: timm ModelEmaV3's warmup (power 2/3)."""
    if not warmup:
        return float(decay)
    return min(float(decay), 1.0 - (1.0 + float(updates)) ** (-2.0 / 3.0))


class EMA(WeightAveraging, WeightAverager):
    """Exponential moving average of the weights, evaluated, checkpointed and served instead of them
    (a `callbacks.interfaces.WeightAverager`).

    Args:
        decay: the EMA decay per optimizer step (timm's train.py uses 0.9998 for ImageNet-length runs;
            0.999 to 0.99 suit runs of hundreds to thousands of steps).
        warmup: ramp the decay up as timm's ModelEmaV3 does (recommended for short fine-tunes).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if isinstance(decay, bool) or not 0.0 < float(decay) < 1.0:
            raise LightcycleError(f"ema.decay must be between 0 and 1 (e.g. 0.999; null = off), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        super().__init__(use_buffers=True, multi_avg_fn=self._average)

    def averaging_horizon(self) -> float:
        """About how many optimizer steps the average spans: 1 / (1 - decay)."""
        return 1.0 / (1.0 - self.decay)

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], updates: Any) -> None:
        decay = warmed_decay(self.decay, int(updates), self.warmup)
        get_ema_multi_avg_fn(decay)(averaged, current, updates)

    # --- where the average lives ------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._device = trainer.strategy.root_device
        with warnings.catch_warnings():  # VisionModule.configure_model only sets the memory format
            warnings.filterwarnings("ignore", message=".*WeightAveraging callback with a model that overrides")
            super().setup(trainer, pl_module, stage)
        if stage == "fit":
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    self._average_weights_only_saves(callback)

    def _average_weights_only_saves(self, checkpoint: ModelCheckpoint) -> None:
        """Make `checkpoint` write the averaged weights whenever it saves weights only (a full
        checkpoint gets them from `on_save_checkpoint`, with the training weights beside them)."""
        save = checkpoint._save_checkpoint
        if getattr(save, "averages", None) is not None:  # a callback reused by a later fit: rewrap for this EMA
            save = save.plain

        def averaged_save(trainer: L.Trainer, filepath: str) -> None:
            if checkpoint.save_weights_only and self._average_model is not None:
                with self.swapped_in(trainer, trainer.lightning_module):
                    return save(trainer, filepath)
            return save(trainer, filepath)

        averaged_save.averages = self  # type: ignore[attr-defined]
        averaged_save.plain = save  # type: ignore[attr-defined]
        checkpoint._save_checkpoint = averaged_save  # type: ignore[method-assign]

    # --- DDP: one average per rank, kept identical ----------------------------------------------------
    def _sync_buffers(self, trainer: L.Trainer) -> None:
        """Rank 0's averaged buffers (BatchNorm statistics) on every rank."""
        if self._average_model is None or trainer.world_size < 2 or not torch.distributed.is_initialized():
            return
        for buffer in self._average_model.module.buffers():
            torch.distributed.broadcast(buffer.data, src=0)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync_buffers(trainer)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync_buffers(trainer)
        super().on_train_end(trainer, pl_module)
        if trainer.world_size > 1:
            self._check_in_step(trainer, pl_module)

    def _check_in_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            total = sum(t.double().sum() for t in pl_module.state_dict().values() if t.is_floating_point())
            checksum = torch.as_tensor(total, dtype=torch.float64, device=trainer.strategy.root_device)
        sums = trainer.strategy.all_gather(checksum).flatten().tolist()
        if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
            raise LightcycleError(f"ema: the averaged weights differ between ranks (checksums {sums})")
        log.info("ema: averaged weights identical on %d ranks", len(sums))

    @contextlib.contextmanager
    def swapped_in(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[None]:
        """The averaged weights in `pl_module` for the block, the training weights back afterwards."""
        if self._average_model is None:
            yield
            return
        self._sync_buffers(trainer)
        self._swap_models(pl_module)
        try:
            yield
        finally:
            self._swap_models(pl_module)


def averaged_weights(trainer: L.Trainer, pl_module: L.LightningModule) -> contextlib.AbstractContextManager[None]:
    """The averaged weights swapped into `pl_module` for a block when a `WeightAverager` (EMA) is among
    the Trainer's callbacks, else nothing."""
    averager = find_callback(trainer, WeightAverager)
    return averager.swapped_in(trainer, pl_module) if averager is not None else contextlib.nullcontext()
