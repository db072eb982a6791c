"""The export description of a task: the interface and its defaults."""

from __future__ import annotations

from typing import Any

from lightcycle.errors import LightcycleError
from lightcycle.tasks.base import Task
from lightcycle.tasks.per_task import PerTask


class TaskExport:
    """What the exported model's JSON says for one task; subclasses in this package register per task name."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def export_activation(self) -> dict[str, Any]:
        """How a runtime turns the exported logits into what `activation` returns, as plain data."""
        raise LightcycleError(f"export: no activation description for task {self.task.name!r}")

    def export_metadata(self) -> dict[str, Any]:
        """Extra keys for the exported model's JSON (thresholds, void index, how to read points)."""
        return {}


task_exports: PerTask[TaskExport] = PerTask("lightcycle.export.per_task", TaskExport)
