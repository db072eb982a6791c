"""Lightning's TensorBoardLogger with a step offset and one event per `log_metrics` call.

Each stage of a recipe is its own `Trainer.fit`, whose step count starts at 0; the recipe runner
adds every finished stage's steps to `step_offset`, and the curves continue instead of overlapping.

Lightning writes every scalar as an event of its own (`SummaryWriter.add_scalar`); the learning rate
and momentum of nine layer groups then cost about 0.7 ms a point on a CPU core. Here the scalars of
one call share one event (a TensorBoard summary holds any number of tagged values; TensorBoard reads
each as its own series), about 0.1 ms for the same eighteen values (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any, Mapping

from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


class TensorBoardLogger(_TensorBoardLogger):
    """`lightning.pytorch.loggers.TensorBoardLogger` plus `step_offset` (0 = Lightning's steps)."""

    def __init__(self, *args: Any, step_offset: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_offset = int(step_offset)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        step = None if step is None else step + self.step_offset
        writer = self.experiment
        file_writer = getattr(writer, "_get_file_writer", None)
        if file_writer is None or any(isinstance(v, dict) for v in metrics.values()):
            super().log_metrics(metrics, step)  # another SummaryWriter, or grouped scalars: Lightning's way
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = []
        for key, value in metrics.items():
            tag = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key
            try:
                number = float(value.item() if isinstance(value, Tensor) else value)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f"\n you tried to log {value} which is currently not supported. Try a scalar/tensor.") from exc
            values.append(Summary.Value(tag=tag, simple_value=number))
        if values:
            file_writer().add_summary(Summary(value=values), step)
