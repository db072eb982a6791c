"""What the pass over the validation set returns (`InterpretationResult`), and what it keeps per
batch (`Collector`: by default `KeepOutputs`, every activated output and target)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lightcycle.drawing import picture
from lightcycle.errors import LightcycleError
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
