"""Multi-label classification's predictions: the tags over their thresholds, and every tag's probability."""

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


@task_predictions.register("multilabel")
class MultiLabelPredictions(TaskPredictions):
    """The tags whose probability passes their threshold (tuned in training, else `thresh`)."""

    def prediction(
        self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Window | None = None
    ) -> tuple[Any, Any]:
        decisions = self.task.decode(activated[None])[0]
        return [name for name, on in zip(self.task.class_names, decisions.tolist()) if on], decisions

    def prediction_record(self, pred: Any, name: str, files: SideFiles) -> tuple[dict[str, Any], dict[str, Any]]:
        names = self.task.class_names
        probs = pred.probs.tolist()
        row = {"file": name, "tags": " ".join(pred.label), **{f"prob_{c}": csv_number(p) for c, p in zip(names, probs)}}
        return row, {"file": name, "tags": list(pred.label), "probabilities": dict(zip(names, probs))}

    def served_record(self, pred: Any, name: str, files: SideFiles) -> dict[str, Any]:
        """Also each tag's decision threshold (tuned in training, else `thresh`)."""
        record = self.prediction_record(pred, name, files)[1]
        return {**record, "thresholds": dict(zip(self.task.class_names, self.task.decision_thresholds))}
