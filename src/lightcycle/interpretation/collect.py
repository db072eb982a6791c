"""The pass over the validation set that every interpretation is built from.

`collect` runs the model once over the whole validation set, in dataset order, and keeps each
image's file and loss (`Task.per_sample_loss`); what else it keeps per batch is the task's choice
(`per_task/`: `interpretation_collector`): by default every activated output and target, for segmentation
a pixel confusion matrix and the worst masks only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from lightcycle.data.base import batch_transform_of
from lightcycle.errors import LightcycleError
from lightcycle.interpretation.per_task import task_interpretation
from lightcycle.interpretation.result import (
    Collector,
    InterpretationResult,
    KeepOutputs,
)
from lightcycle.tasks.base import Task

__all__ = ["Collector", "InterpretationResult", "KeepOutputs", "collect"]


def _sequential_loader(datamodule: Any) -> Any:
    """Every validation sample once, in order, whatever the process group (not `val_dataloader()`)."""
    if not hasattr(datamodule, "eval_loader"):  # not an ImageDataModule: trust its loader to be in order
        return datamodule.val_dataloader()
    return datamodule.eval_loader("valid", sharded=False)


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise LightcycleError("interpretation needs a validation loader of (image, target) batches")
    return batch[0], batch[1]


@torch.no_grad()
def collect(
    model: torch.nn.Module,
    datamodule: Any,
    task: "Task | None" = None,
    device: str | torch.device | None = None,
    context: Callable[[], ContextManager[Any]] | None = None,
    keep_masks: int = 9,
) -> InterpretationResult:
    """Run `model` over the DataModule's validation loader; per-sample losses, outputs and targets.

    Row i is `datamodule.valid_samples[i]`: the pass uses its own sequential loader over the whole
    validation set (under DDP `val_dataloader()` is a shard; the callback runs this on rank 0 only).
    `context`: a factory of a context manager around each forward (the Trainer's autocast under
    mixed precision). `keep_masks`: how many top-loss images the report shows (segmentation keeps
    the masks of this many worst images).
    """
    task = task if task is not None else getattr(model, "task", None)
    if task is None:
        raise LightcycleError("interpretation needs the model's task (a VisionModule has one)")
    datamodule.setup("validate")
    files = [Path(s.path) for s in datamodule.valid_samples]
    loader = _sequential_loader(datamodule)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses: list[torch.Tensor] = []
    collector = task_interpretation(task).interpretation_collector(keep_masks)
    prepare = batch_transform_of(datamodule)  # uint8 pixels normalised on the device
    try:
        for batch in loader:
            x, y = _split(batch)
            x, y = prepare(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
            with (context or contextlib.nullcontext)():
                raw = model(x)
            raw = raw.float()
            losses.append(task.per_sample_loss(raw, y).float().cpu())
            collector.add(task.activation(raw), y, torch.cat(losses))
    finally:
        model.train(was_training)
    if not losses:
        raise LightcycleError("interpretation: the validation loader yielded no images")
    outputs, targets, extra = collector.finish()
    result = InterpretationResult(
        task=task, files=files, losses=torch.cat(losses), outputs=outputs, targets=targets,
        dataset=getattr(loader, "dataset", None), extra=extra,
    )
    if len(result.losses) != len(files):
        raise LightcycleError(
            f"interpretation: the validation loader gave {len(result.losses)} images for {len(files)} files"
        )
    norm = getattr(datamodule, "normalization", None)
    if norm is not None:
        result.mean, result.std = tuple(norm.mean), tuple(norm.std)
    return result
