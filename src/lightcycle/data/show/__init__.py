"""A look at the batch before training (fastai's `show_batch`): augmented training samples in a grid.

The samples come from the DataModule's own training dataset, so they are what the model trains on:
framed, augmented and encoded exactly like a training batch (masks and points moved with the
image), then un-normalised for display. How a target is drawn is decided per task, one file per
task in this package named after it (`task_samples(task).show_sample`: the class or tags as the
title, the mask over the picture, the points on it).
The picks and the augmentation are seeded, so the same settings always draw the same grid.
`lightcycle-train` logs the grid to TensorBoard (`data/train_batch`) and writes `<run dir>/train_batch.png`
(the `ShowBatch` callback); `lightcycle-data show data=...` draws it without training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightcycle import drawing
from lightcycle.data.show.base import TaskSamples, task_samples
from lightcycle.errors import LightcycleError

__all__ = ["TaskSamples", "show_batch", "task_samples"]


def show_batch(datamodule: Any, n: int = 9, seed: int = 0, task: Any = None) -> Any:
    """A matplotlib Figure of `n` augmented training samples of an ImageDataModule (after `setup`)."""
    if int(n) < 1:
        raise LightcycleError(f"show_batch: n must be at least 1, got {n}")
    datamodule.setup("fit")
    task = task if task is not None else datamodule.make_task()
    samples = list(datamodule.train_samples)
    if not samples:
        raise LightcycleError("show_batch: the DataModule has no training samples")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(samples), size=min(int(n), len(samples)), replace=False).tolist()
    dataset = datamodule.dataset(samples, train=True)
    if hasattr(dataset.transform, "set_random_seed"):
        dataset.transform.set_random_seed(int(seed))
    norm = datamodule.normalization
    rows, cols = drawing.grid(len(picks))
    fig = drawing.figure(2.6 * cols, 2.9 * rows)
    fig.suptitle(f"Training samples as the model sees them ({datamodule.size} px, augment={datamodule.augment})")
    samples_of_task = task_samples(task)
    for k, index in enumerate(picks):
        x, target = dataset[index]
        ax = fig.add_subplot(rows, cols, k + 1)
        title = samples_of_task.show_sample(ax, drawing.picture(x, norm.mean, norm.std), target)
        ax.set_title(f"{drawing.short(samples[index].path, 22)}\n{title}", fontsize=7)
        ax.axis("off")
    return fig
