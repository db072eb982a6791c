"""Point regression's export: the logits reshaped to points (through `sigmoid_range` for a ranged
pooled head), and how to read them in pixels of the original picture."""

from __future__ import annotations

from typing import Any

from lightcycle.export.per_task.base import TaskExport, task_exports

POINTS_NOTE = (
    "activated outputs are (x, y) in [-1, 1] of the size x size input, which shows the window "
    "(x0, y0, width, height) of the original picture (input.framing): "
    "x_px = x0 + ((x + 1) * size - 1) / 2 * width / size, likewise y with y0 and height"
)


@task_exports.register("points")
class PointsExport(TaskExport):
    def export_activation(self) -> dict[str, Any]:
        task = self.task
        reshape = [-1, task.num_points, 2]
        if task.ranged:
            lo, hi = task.y_range
            return {"name": "sigmoid_range", "low": lo, "high": hi, "reshape": reshape}
        return {"name": "identity", "reshape": reshape}

    def export_metadata(self) -> dict[str, Any]:
        return {"points": POINTS_NOTE}
