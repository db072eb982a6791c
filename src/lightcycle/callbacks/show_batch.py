"""A look at the training batch when training starts (fastai's `show_batch`), in TensorBoard and as a PNG.

Rank 0 draws `n` augmented training samples (lightcycle.data.show: masks and points drawn the task's
way) right before the first training step, logs the figure to every logger that takes figures
(TensorBoard: `data/train_batch`) and writes `<output_dir>/train_batch.png` when `output_dir` is set.
A picture is a report, not training: a failure is a warning, and a resumed run does not draw again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L

from lightcycle.atomic import save_figure
from lightcycle.data.show import show_batch
from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")


class ShowBatch(L.Callback):
    """Draw augmented training samples once, when training starts.

    Args:
        n: how many samples (0 = off).
        output_dir: also write `train_batch.png` here (None = loggers only).
        seed: which samples and which augmentation.
    """

    def __init__(self, n: int = 9, output_dir: str | os.PathLike | None = None, seed: int = 0) -> None:
        if isinstance(n, bool) or int(n) != n or int(n) < 0:
            raise LightcycleError(f"show_batch.n must be a whole number >= 0 (0 = off), got {n!r}")
        self.n = int(n)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.seed = int(seed)
        self.path: Path | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.n == 0 or not trainer.is_global_zero or trainer.global_step > 0:
            return
        try:
            self._draw(trainer, pl_module)
        except Exception as exc:  # a picture must never stop a training run
            log.warning("show_batch skipped: %s: %s", type(exc).__name__, exc)

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "train_samples"):
            raise LightcycleError("needs the Trainer to be fitted with a lightcycle DataModule")
        fig = show_batch(datamodule, self.n, self.seed, task=getattr(pl_module, "task", None))
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):
                experiment.add_figure("data/train_batch", fig, global_step=trainer.global_step, close=False)
        if self.output_dir is not None:
            self.path = save_figure(self.output_dir / "train_batch.png", fig)
            log.info("show_batch: %d training samples in %s", min(self.n, len(datamodule.train_samples)), self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the picture is drawn once, at the start of a fresh run."""
