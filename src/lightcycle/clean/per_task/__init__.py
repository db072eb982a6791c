"""How the data cleaner lists each task's label and prediction, one file per task named after it.

`task_cleaning(task)` gives the task's `TaskCleaning`; a task without a file (segmentation, whose
truth is its mask file) lists neither.
"""

from lightcycle.clean.per_task.base import TaskCleaning, task_cleaning

__all__ = ["TaskCleaning", "task_cleaning"]
