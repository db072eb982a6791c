"""One object per task (its head, loss, metrics, predictions, report and export), one file each.

`base.py` holds the interface every caller relies on and the registry checkpoints are loaded
through; the task files below register themselves.
"""

from lightcycle.tasks.base import TASKS, Task, register_task, task_from_config
from lightcycle.tasks.classification import ClassificationTask, ErrorRate
from lightcycle.tasks.multilabel import MultiLabelTask
from lightcycle.tasks.points import PointsTask
from lightcycle.tasks.segmentation import (
    SEGMENTATION_LOSSES,
    SegmentationTask,
    dice_loss,
)

__all__ = [
    "TASKS",
    "ClassificationTask",
    "ErrorRate",
    "MultiLabelTask",
    "PointsTask",
    "SEGMENTATION_LOSSES",
    "SegmentationTask",
    "Task",
    "dice_loss",
    "register_task",
    "task_from_config",
]
