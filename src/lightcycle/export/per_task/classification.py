"""Single-label classification's export: a softmax over the last axis."""

from __future__ import annotations

from typing import Any

from lightcycle.export.per_task.base import TaskExport, task_exports


@task_exports.register("classification")
class ClassificationExport(TaskExport):
    def export_activation(self) -> dict[str, Any]:
        return {"name": "softmax", "axis": -1}
