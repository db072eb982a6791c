"""A points sample: the points on their picture, numbered by name (point 0 first)."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.data.show.base import TaskSamples, task_samples
from lightcycle.point_coords import unscale_points


@task_samples.register("points")
class PointsSamples(TaskSamples):
    def show_sample(self, ax: Any, image: Any, target: torch.Tensor) -> str:
        """The points on their picture, numbered (point 0 first)."""
        height, width = image.shape[:2]
        ax.imshow(image)
        points = unscale_points(target[:-1].float().numpy(), width, height)
        ax.scatter(points[:, 0], points[:, 1], s=50, facecolors="none", edgecolors="lime", linewidths=2)
        for i, (x, y) in enumerate(points):
            ax.annotate(self.task.point_names[i], (x, y), color="yellow", fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        return f"{len(points)} point(s)"
