"""Point regression's predictions: points in pixels of the original picture."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.data.framing import Window
from lightcycle.point_coords import unscale_points
from lightcycle.predict.per_task.base import (
    TaskPredictions,
    csv_number,
    task_predictions,
)
from lightcycle.predict.side_files import SideFiles


@task_predictions.register("points")
class PointsPredictions(TaskPredictions):
    """(x, y) of every point, exactly through any crop or padding."""

    def prediction(
        self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Window | None = None
    ) -> tuple[Any, Any]:
        """Points in pixels of the original picture, exactly through any crop or padding (`window`)."""
        window = window or Window(0, 0, *original_size)
        pixels = window.to_original(unscale_points(activated.double(), input_size, input_size), input_size).float()
        return pixels, pixels

    def prediction_record(self, pred: Any, name: str, files: SideFiles) -> tuple[dict[str, Any], dict[str, Any]]:
        points = pred.label.tolist()
        row = {"file": name}
        for i, (x, y) in enumerate(points):
            row[f"x{i}"], row[f"y{i}"] = csv_number(x), csv_number(y)
        return row, {"file": name, "points": points}
