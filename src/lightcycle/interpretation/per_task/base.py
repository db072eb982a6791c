"""The interpretation of a task: the interface and its defaults (suited to an image-level task)."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import InspectionView
from lightcycle.interpretation.result import (
    Collector,
    InterpretationResult,
    KeepOutputs,
)
from lightcycle.tasks.base import Task
from lightcycle.tasks.per_task import PerTask

Table = tuple[list[dict[str, Any]], "list[str] | None"]  # rows, column order (None: the first row's keys)


class TaskInterpretation:
    """What interpretation shows for one task; subclasses in this package register per task name."""

    top_losses_title: str = "Top losses"

    def __init__(self, task: Task) -> None:
        self.task = task

    def interpretation_collector(self, keep: int) -> Collector:
        """What the pass over the validation set keeps per batch (default: every output and target).

        `keep`: how many top-loss images the report will show (a collector may keep only those).
        """
        return KeepOutputs()

    def top_loss_rows(self, result: InterpretationResult, indices: list[int]) -> list[dict[str, Any]]:
        """The `top_losses.csv` columns after `file` for each image in `indices` (worst first)."""
        return [{"loss": float(result.losses[i])} for i in indices]

    def interpretation_tables(self, result: InterpretationResult) -> dict[str, Table]:
        """The task's tables besides `top_losses`: name -> (rows, columns), written as `<name>.csv`."""
        return {}

    def interpretation_figures(self, result: InterpretationResult) -> dict[str, Any]:
        """The task's figures besides `top_losses`: name -> matplotlib Figure."""
        return {}

    def inspection_views(self, result: InterpretationResult, k: int, seed: int) -> dict[str, InspectionView]:
        """fastai's course views (`analyses.VIEW_NAMES`: random correct / incorrect, most correct, most
        incorrect and most uncertain of each class), `k` images each (per class or tag), the random
        ones drawn with `seed`. Empty for tasks without a right-or-wrong answer per image."""
        return {}

    def plot_top_losses(self, result: InterpretationResult, indices: list[int]) -> Any:
        """The worst images in a grid, each drawn and titled by `draw_top_loss`."""
        rows = dict(zip(indices, self.top_loss_rows(result, indices)))
        return figures.image_grid(result, indices, self.top_losses_title, lambda ax, i: self.draw_top_loss(ax, result, i, rows[i]))

    def draw_top_loss(self, ax: Any, result: InterpretationResult, index: int, row: dict[str, Any]) -> str:
        """Draw on top of image `index` (already shown in `ax`) and return its title."""
        return f"{figures.short(result.files[index])}\nloss {row['loss']:.3f}"

    def summary_lines(self, result: InterpretationResult, limit: int) -> list[str]:
        """A few human lines about what the model gets wrong (printed before the worst files)."""
        return []

    def heatmap_score(self, output: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """The score [N] a class activation map explains: output `index` of each image, or the
        predicted one. Only image-level tasks have one; outputs tied to positions refuse."""
        raise LightcycleError(
            f"heatmaps: the {self.task.name} task's outputs are already positions in the picture; class activation "
            "maps explain image-level outputs (classification, multilabel)"
        )

    def heatmap_label(self, output: torch.Tensor, index: int | None = None) -> str:
        """The name of the output a heatmap of raw `output` [C] explains (for figure titles)."""
        names = self.task.output_names
        i = int(output.argmax()) if index is None else int(index)
        return names[i] if i < len(names) else str(i)


def output_score(output: torch.Tensor, index: int | None = None) -> torch.Tensor:
    """Output `index` of every row of raw `output` [N, C] (default: each row's largest): the score a
    class activation map of an image-level task explains."""
    chosen = output.argmax(-1) if index is None else torch.full((len(output),), int(index), device=output.device)
    return output.gather(-1, chosen[:, None])[:, 0]


task_interpretation: PerTask[TaskInterpretation] = PerTask("lightcycle.interpretation.per_task", TaskInterpretation)
