"""One small object per task: its head, loss, metrics, activation and how to describe itself.

`VisionModule` and the callbacks stay task-agnostic by asking the task. A task serialises to plain
data (`to_config`) so checkpoints keep class names and thresholds without pickled objects and can be
loaded with `weights_only=True`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightcycle.models.heads import ClassifierHead


class Task:
    """The interface every task implements."""

    name: ClassVar[str]
    monitor: ClassVar[str] = "val_loss"  # what "best" checkpoints optimise
    monitor_mode: ClassVar[str] = "min"

    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        """Map raw model outputs to what users consume (probabilities, coordinates)."""
        raise NotImplementedError

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss computed from activated outputs (probabilities, coordinates).

        TTA and snapshot ensembles merge activated outputs, so their loss must start from there.
        """
        raise NotImplementedError

    def unflip(self, output: torch.Tensor) -> torch.Tensor:
        """Map the output for a horizontally flipped input back to the unflipped frame (for TTA).

        Image-level outputs (classes, tags) do not move with a flip; dense and spatial tasks
        (masks, points) override this.
        """
        return output

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError


class ErrorRate(MulticlassAccuracy):
    """1 - accuracy, fastai's `error_rate`, synchronised across processes like any torchmetric."""

    def compute(self) -> torch.Tensor:
        return 1.0 - super().compute()


class ClassificationTask(Task):
    """Single-label classification: softmax over classes, cross-entropy, accuracy and error rate."""

    name = "classification"

    def __init__(self, class_names: list[str], label_smoothing: float = 0.0) -> None:
        if len(class_names) < 2:
            raise ValueError(f"classification needs at least 2 classes, got {class_names}")
        self.class_names = list(class_names)
        self.label_smoothing = float(label_smoothing)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        return ClassifierHead(num_features, self.num_classes, dropout=dropout)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(self.num_classes, average="micro"),
                "error_rate": ErrorRate(self.num_classes, average="micro"),
            }
        )

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return output.softmax(dim=-1)

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(activated.clamp_min(1e-8).log(), target)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "class_names": self.class_names, "label_smoothing": self.label_smoothing}


TASKS: dict[str, type[Task]] = {ClassificationTask.name: ClassificationTask}


def task_from_config(config: dict[str, Any] | Task) -> Task:
    """Rebuild a task from the plain data stored in a checkpoint."""
    if isinstance(config, Task):
        return config
    config = dict(config)
    name = config.pop("name", None)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name](**config)
