"""One readable line per epoch through `logging`, like fastai's results table.

A tqdm bar is unreadable in a log file (carriage returns, thousands of updates); this line reads the
same in a terminal, in Hydra's `train.log` and in CI output.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch

log = logging.getLogger("lightcycle")


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


class EpochLog(L.Callback):
    """Log epoch, losses, validation metrics, learning rate and wall time at the end of each epoch."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics: dict[str, Any] = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for key in sorted(metrics):
            if key.endswith("_step") or key == "train_loss" or key.startswith("lr-"):  # epoch means only
                continue
            value = metrics[key]
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                parts.append(f"{key.removesuffix('_epoch')} {_fmt(float(value))}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[-1]['lr']:.3g}")
        parts.append(f"{time.perf_counter() - self._start:.1f}s")
        log.info("  ".join(parts))

    def state_dict(self) -> dict[str, Any]:
        return {}
