"""The pass over the validation set that every interpretation is built from.

`collect` runs the model once over the whole validation set, in dataset order, and keeps each
image's file and loss (`Task.per_sample_loss`); what else it keeps per batch is the task's choice
(`Task.interpretation_collector`): by default every activated output and target, for segmentation
a pixel confusion matrix and the worst masks only.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Sequence

import numpy as np
import torch

from lightcycle.errors import LightcycleError

if TYPE_CHECKING:  # tasks build on this module, so it only names them
    from lightcycle.tasks.base import Task


@dataclass
class InterpretationResult:
    """Everything the analyses need, one row per validation image in dataset order.

    `outputs`: activated outputs (class probabilities [N, C], tag probabilities [N, C], coordinates
    [N, K, 2]) with their `targets`, unless the task's collector keeps something else (segmentation:
    each image's pixel accuracy [N], no targets, and `extra` with the pixel `confusion` [C, C] and
    the `masks` {index: (predicted, true)} of the worst images).
    `dataset`: the validation dataset (item i = (input tensor, target)), used to show top-loss images.
    """

    task: "Task"
    files: list[Path]
    losses: torch.Tensor
    outputs: torch.Tensor
    targets: torch.Tensor
    dataset: Any = None
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def top_losses(self, k: int | None = None) -> list[int]:
        """Indices of the k highest losses, highest first (NaN losses, e.g. all-void masks, last)."""
        losses = torch.nan_to_num(self.losses.double(), nan=-math.inf)
        order = torch.argsort(losses, descending=True, stable=True).tolist()
        return order if k is None else order[: max(0, int(k))]

    def image(self, index: int) -> np.ndarray:
        """The input of validation image `index` as the model saw it, as HxWx3 uint8 (un-normalised
        when the dataset normalises in its workers)."""
        if self.dataset is None:
            raise LightcycleError("this interpretation has no dataset to show images from")
        from lightcycle.interpretation.figures import picture

        return picture(self.dataset[index][0], self.mean, self.std)


class Collector:
    """What `collect` keeps of each batch besides the losses; one per pass."""

    def add(self, activated: torch.Tensor, target: torch.Tensor, losses: torch.Tensor) -> None:
        """Take one batch: activated outputs, targets, and the per-sample losses of every image so far."""
        raise NotImplementedError

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(outputs [N, ...], targets [N, ...], extra) for the `InterpretationResult`."""
        raise NotImplementedError


class KeepOutputs(Collector):
    """Every activated output and target, on the CPU: what image-level and point analyses read."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def add(self, activated: torch.Tensor, target: torch.Tensor, losses: torch.Tensor) -> None:
        self.outputs.append(activated.float().cpu())
        self.targets.append(target.cpu())

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        return torch.cat(self.outputs), torch.cat(self.targets), {}


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
    collector = task.interpretation_collector(keep_masks)
    from lightcycle.data.base import batch_transform_of  # tasks import this module, data imports tasks

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
