"""Lightning's TensorBoardLogger with a step offset and one event per `log_metrics` call.

Each stage of a recipe is its own `Trainer.fit`, whose step count starts at 0; the recipe runner
adds every finished stage's steps to `step_offset`, and the curves continue instead of overlapping.

Lightning writes every scalar as an event of its own (`SummaryWriter.add_scalar`); the learning rate
and momentum of nine layer groups then cost about 0.7 ms a point on a CPU core. Here the scalars of
one call share one event (a TensorBoard summary holds any number of tagged values; TensorBoard reads
each as its own series), about 0.1 ms for the same eighteen values (docs/benchmarks.md).

One run, one event file, one point per value: Lightning closes the writer at the end of every fit
(a recipe's stages, the final validation and the hparams each opened a new file); here `finalize`
only flushes and `close` ends the file when the run is done. The hparams summary names the final
metrics without logging them again at step 0 (TensorBoard's HPARAMS tab reads each series' last
point), and end-of-training metrics (TTA) go at the step of the last validation, `logged_step`.
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning as L
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


def logged_step(trainer: L.Trainer) -> int:
    """The step Lightning logs an epoch's validation at: the last optimizer step taken (`global_step`
    counts completed steps). End-of-training results belong at that step, not one after it."""
    return max(int(trainer.global_step) - 1, 0)


class TensorBoardLogger(_TensorBoardLogger):
    """`lightning.pytorch.loggers.TensorBoardLogger` plus `step_offset` (0 = Lightning's steps)."""

    def __init__(self, *args: Any, step_offset: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_offset = int(step_offset)
        self._last_epoch_point: tuple[int | None, Any] | None = None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        step = None if step is None else step + self.step_offset
        if "epoch" in metrics:  # Lightning adds `epoch` to the training and the validation call of each epoch end
            point = (step, float(metrics["epoch"]))
            if point == self._last_epoch_point:
                metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            self._last_epoch_point = point
        writer = self.experiment
        file_writer = getattr(writer, "_get_file_writer", None)
        if file_writer is None or any(isinstance(v, dict) for v in metrics.values()):
            super().log_metrics(metrics, step)  # another SummaryWriter, or grouped scalars: Lightning's way
            return
        # deferred: tensorboard's protobuf modules load only when grouped scalars are written
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

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Mapping[str, Any] | None = None, step: int | None = None) -> None:
        """Lightning's, except that `metrics` only names the series the HPARAMS tab shows: their values
        are already logged at their real steps, and a second point at step 0 would draw a model that is
        accurate from the start."""
        if not metrics:
            super().log_hyperparams(params, metrics, step)
            return
        super().log_hyperparams(params)  # hparams.yaml (default_hp_metric=false: no placeholder series)
        # deferred: torch's tensorboard writer loads only when hyperparameters are logged
        from torch.utils.tensorboard.summary import hparams

        flat = self._sanitize_params(_flatten_dict(_convert_params(params)))
        writer = self.experiment._get_file_writer()
        for summary in hparams(flat, dict(metrics)):
            writer.add_summary(summary)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End of one fit or validation: flush and save hparams.yaml, but keep writing the same file."""
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()

    @rank_zero_only
    def close(self) -> None:
        """End of the run: flush and close the event file."""
        if self._experiment is not None:
            self.experiment.flush()
            self.experiment.close()
