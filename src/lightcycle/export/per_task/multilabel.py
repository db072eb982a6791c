"""Multi-label classification's export: a sigmoid per tag, and each tag's decision threshold."""

from __future__ import annotations

from typing import Any

from lightcycle.export.per_task.base import TaskExport, task_exports


@task_exports.register("multilabel")
class MultiLabelExport(TaskExport):
    def export_activation(self) -> dict[str, Any]:
        return {"name": "sigmoid"}

    def export_metadata(self) -> dict[str, Any]:
        return {"thresholds": self.task.decision_thresholds}
