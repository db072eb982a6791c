"""Single-label classification's predictions: the class name, its index and the probabilities."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.data.framing import Window
from lightcycle.predict.per_task.base import (
    TaskPredictions,
    csv_number,
    task_predictions,
)
from lightcycle.predict.side_files import SideFiles


@task_predictions.register("classification")
class ClassificationPredictions(TaskPredictions):
    """The most probable class, and every class's probability."""

    def prediction(
        self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Window | None = None
    ) -> tuple[Any, Any]:
        index = int(activated.argmax())
        return self.task.class_names[index], index

    def prediction_record(self, pred: Any, name: str, files: SideFiles) -> tuple[dict[str, Any], dict[str, Any]]:
        names = self.task.class_names
        probs = pred.probs.tolist()
        row = {"file": name, "label": pred.label, **{f"prob_{c}": csv_number(p) for c, p in zip(names, probs)}}
        return row, {"file": name, "label": pred.label, "probabilities": dict(zip(names, probs))}
