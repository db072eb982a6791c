"""What interpretation shows for each task, one file per task named after it (`classification.py`, ...).

`task_interpretation(task)` gives the task's `TaskInterpretation`: what the pass over the
validation set keeps, the top-loss columns and pictures, the task's tables and figures, the
course's inspection views, the summary lines and which output a heatmap explains. A task with no
file here gets the defaults (every output kept, the loss as the only column, no tables or views).
"""

from lightcycle.interpretation.per_task.base import (
    Table,
    TaskInterpretation,
    output_score,
    task_interpretation,
)

__all__ = ["Table", "TaskInterpretation", "output_score", "task_interpretation"]
