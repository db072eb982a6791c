"""What an exported model's JSON says for each task, one file per task named after it.

`task_exports(task)` gives the task's `TaskExport`: how a runtime turns the exported logits into
what the task's `activation` returns, and the extra keys it needs (thresholds, the void code, how
to read points).
"""

from lightcycle.export.per_task.base import TaskExport, task_exports

__all__ = ["TaskExport", "task_exports"]
