"""Single-label classification (dogscats, ImageFolder, CSV labels): one class per image.

Softmax over the classes, cross-entropy (optionally label-smoothed), accuracy and error rate
(interpreted with fastai's confusion matrix, most-confused pairs and top losses in
interpretation/per_task/classification.py). MixUp/CutMix hand
the loss soft targets that timm's Mixup has already smoothed, so the loss does not smooth them again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightcycle.errors import LightcycleError
from lightcycle.models.heads import ClassifierHead
from lightcycle.tasks.base import Task, register_task


class ErrorRate(MulticlassAccuracy):
    """1 - accuracy, fastai's `error_rate`, synchronised across processes like any torchmetric."""

    def compute(self) -> torch.Tensor:
        return 1.0 - super().compute()


@register_task
class ClassificationTask(Task):
    """Single-label classification: softmax over classes, cross-entropy, accuracy and error rate."""

    name = "classification"

    def __init__(self, class_names: list[str], label_smoothing: float = 0.0) -> None:
        if len(class_names) < 2:
            raise LightcycleError(f"classification needs at least 2 classes, got {class_names}")
        self.check_output_count(len(class_names))
        self.class_names = list(class_names)
        self.label_smoothing = 0.0
        self.set_label_smoothing(label_smoothing)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        return ClassifierHead(num_features, self.num_classes, dropout=dropout)

    def set_label_smoothing(self, value: float) -> None:
        if not 0.0 <= float(value) < 1.0:
            raise LightcycleError(f"model.label_smoothing must be in [0, 1), got {value}")
        self.label_smoothing = float(value)

    def _smoothing(self, target: torch.Tensor) -> float:
        # Soft targets (MixUp/CutMix) come smoothed from the mixer: smoothing them again would double it.
        return 0.0 if target.is_floating_point() else self.label_smoothing

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self._smoothing(target))

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Unsmoothed, as validation measures it: smoothing would lift every confident right answer.
        return F.cross_entropy(output, target, reduction="none")

    def validation_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)  # unsmoothed, like tta_loss and ensemble_loss

    def mix_settings(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "label_smoothing": self.label_smoothing, "multi_label": False}

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

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.argmax(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "class_names": self.class_names, "label_smoothing": self.label_smoothing}
