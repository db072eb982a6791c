"""What a prediction is for each task, one file per task named after it (`classification.py`, ...).

`task_predictions(task)` gives the task's `TaskPredictions`: the answer for one image in the frame
of the original picture, the CSV row and JSON record `lightcycle-predict` writes for it (and side
files such as mask PNGs), and the JSON answer `lightcycle-serve` gives.
"""

from lightcycle.predict.per_task.base import (
    TaskPredictions,
    csv_number,
    task_predictions,
)

__all__ = ["TaskPredictions", "csv_number", "task_predictions"]
