"""The predictions of a task: the interface and its defaults."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.data.framing import Window
from lightcycle.errors import LightcycleError
from lightcycle.predict.side_files import SideFiles
from lightcycle.tasks.base import Task
from lightcycle.tasks.per_task import PerTask


class TaskPredictions:
    """What a prediction is for one task; subclasses in this package register per task name."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def prediction(
        self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Window | None = None
    ) -> tuple[Any, Any]:
        """(label, index) for one image's activated output, in the frame of the original picture.

        `original_size` is the picture's (width, height), `input_size` the square side the model saw,
        `window` the part of the picture that input showed (data/framing.py; None = all of it, squished).
        """
        decoded = self.task.decode(activated[None])[0]
        return decoded, decoded

    def prediction_record(self, pred: Any, name: str, files: SideFiles) -> tuple[dict[str, Any], dict[str, Any]]:
        """(flat CSV row, structured JSON record) for one `Prediction` of the image called `name`.

        `files` writes side files beside the output (segmentation's mask PNGs) and names them relatively.
        """
        raise LightcycleError(f"no output format for task {self.task.name!r}")

    def served_record(self, pred: Any, name: str, files: SideFiles) -> dict[str, Any]:
        """The JSON answer `lightcycle-serve` gives for one image: `lightcycle-predict`'s record (with
        `files` putting side files such as masks inline), plus what a page needs to draw it."""
        return self.prediction_record(pred, name, files)[1]


def csv_number(value: float) -> str:
    """A probability or coordinate as CSV text: 6 significant digits, enough to rank and compare."""
    return f"{value:.6g}"


task_predictions: PerTask[TaskPredictions] = PerTask("lightcycle.predict.per_task", TaskPredictions)
