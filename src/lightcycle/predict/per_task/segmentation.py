"""Semantic segmentation's predictions: the mask at the original size, written as a PNG beside the table."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lightcycle.data.framing import Window
from lightcycle.errors import LightcycleError
from lightcycle.predict.per_task.base import TaskPredictions, task_predictions
from lightcycle.predict.side_files import SideFiles


@task_predictions.register("segmentation")
class SegmentationPredictions(TaskPredictions):
    """A code per pixel of the original picture."""

    def prediction(
        self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Window | None = None
    ) -> tuple[Any, Any]:
        """The mask at the original size: the input upsampled to its window, the padding cut off."""
        width, height = original_size
        window = window or Window(0, 0, width, height)
        if not window.covers(width, height):
            raise LightcycleError(f"the {width}x{height} picture's input shows only {window}: its mask cannot be predicted")
        probs = F.interpolate(activated[None], size=(window.height, window.width), mode="bilinear", align_corners=False)[0]
        probs = probs[:, -window.y0 : height - window.y0, -window.x0 : width - window.x0]
        mask = probs.argmax(0)
        return mask, mask

    def prediction_record(self, pred: Any, name: str, files: SideFiles) -> tuple[dict[str, Any], dict[str, Any]]:
        mask_file = files.mask(name, pred.label, self.task.num_classes)
        return {"file": name, "mask": mask_file}, {"file": name, "mask": mask_file}

    def served_record(self, pred: Any, name: str, files: SideFiles) -> dict[str, Any]:
        """Also the codes in mask order and each code's share of the picture's pixels."""
        names = self.task.class_names
        record = self.prediction_record(pred, name, files)[1]
        counts = torch.bincount(pred.label.flatten().long(), minlength=len(names)).double()
        shares = (counts / max(1, pred.label.numel())).tolist()
        return {**record, "codes": names, "shares": dict(zip(names, shares))}
