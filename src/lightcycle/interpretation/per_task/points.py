"""Point regression, interpreted in original pixels: each image's mean error, and truth and
prediction drawn over the worst images."""

from __future__ import annotations

from typing import Any

from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import point_distances
from lightcycle.interpretation.per_task.base import (
    TaskInterpretation,
    task_interpretation,
)
from lightcycle.interpretation.result import InterpretationResult
from lightcycle.point_coords import unscale_points


@task_interpretation.register("points")
class PointsInterpretation(TaskInterpretation):
    """Distances in original pixels, truth and prediction drawn on the image."""

    top_losses_title = "Top losses (truth: green circles, predicted: red crosses)"

    def top_loss_rows(self, result: InterpretationResult, indices: list[int]) -> list[dict[str, Any]]:
        distances = point_distances(result)
        return [{"loss": float(result.losses[i]), "distance_px": float(distances[i])} for i in indices]

    def draw_top_loss(self, ax: Any, result: InterpretationResult, index: int, row: dict[str, Any]) -> str:
        x = result.dataset[index][0]
        height, width = x.shape[-2:]
        true = unscale_points(result.targets[index][:-1].float().numpy(), width, height)
        pred = unscale_points(result.outputs[index].reshape(-1, 2).float().numpy(), width, height)
        for (tx, ty), (px, py) in zip(true, pred):
            ax.plot([tx, px], [ty, py], color="yellow", linewidth=1)
        ax.scatter(true[:, 0], true[:, 1], s=60, facecolors="none", edgecolors="lime", linewidths=2, label="truth")
        ax.scatter(pred[:, 0], pred[:, 1], s=60, marker="x", color="red", linewidths=2, label="predicted")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        return f"{figures.short(result.files[index])}\nloss {row['loss']:.4f}  error {row['distance_px']:.1f}px"
