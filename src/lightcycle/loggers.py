"""Lightning's TensorBoardLogger with a step offset, so the stages of a recipe share one timeline.

Each stage of a recipe is its own `Trainer.fit`, whose step count starts at 0; the recipe runner
adds every finished stage's steps to `step_offset`, and the curves continue instead of overlapping.
"""

from __future__ import annotations

from typing import Any, Mapping

from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger


class TensorBoardLogger(_TensorBoardLogger):
    """`lightning.pytorch.loggers.TensorBoardLogger` plus `step_offset` (0 = identical behaviour)."""

    def __init__(self, *args: Any, step_offset: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_offset = int(step_offset)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, None if step is None else step + self.step_offset)
