"""Semantic segmentation's export: a softmax over the code axis, and the void code."""

from __future__ import annotations

from typing import Any

from lightcycle.export.per_task.base import TaskExport, task_exports


@task_exports.register("segmentation")
class SegmentationExport(TaskExport):
    def export_activation(self) -> dict[str, Any]:
        return {"name": "softmax", "axis": 1}

    def export_metadata(self) -> dict[str, Any]:
        return {"void_index": self.task.void_index}
