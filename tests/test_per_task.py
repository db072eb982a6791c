"""A task defines its outputs; each consumer keeps its per-task behaviour in its own package, found
by the task's registered name, with the consumer's defaults for a task that has no file there."""

from __future__ import annotations

import pytest
import torch

from lightcycle.data.show import TaskSamples, task_samples
from lightcycle.errors import LightcycleError
from lightcycle.export.per_task import TaskExport, task_exports
from lightcycle.interpretation.per_task import TaskInterpretation, task_interpretation
from lightcycle.predict.per_task import TaskPredictions, task_predictions
from lightcycle.tasks import ClassificationTask, MultiLabelTask, PointsTask, SegmentationTask, Task
from lightcycle.tasks.per_task import PerTask

TASKS = [ClassificationTask(["cat", "dog"]), MultiLabelTask(["a", "b"]), SegmentationTask(["bg", "fg"]), PointsTask(2)]
CONSUMERS = [
    (task_interpretation, TaskInterpretation, "lightcycle.interpretation.per_task"),
    (task_predictions, TaskPredictions, "lightcycle.predict.per_task"),
    (task_exports, TaskExport, "lightcycle.export.per_task"),
    (task_samples, TaskSamples, "lightcycle.data.show"),
]
CONSUMER_METHODS = {  # what Task answered for before each consumer owned it
    "prediction", "prediction_record", "served_record", "interpretation_collector", "top_loss_rows",
    "interpretation_tables", "interpretation_figures", "inspection_views", "plot_top_losses", "draw_top_loss",
    "summary_lines", "heatmap_score", "heatmap_label", "show_sample", "target_text", "export_activation",
    "export_metadata", "top_losses_title",
}


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_every_consumer_finds_each_built_in_task_in_a_file_named_after_it(task):
    for registry, base, package in CONSUMERS:
        behaviour = registry(task)
        assert isinstance(behaviour, base) and behaviour.task is task
        assert type(behaviour) is not base and type(behaviour).__module__ == f"{package}.{task.name}"


def test_the_task_answers_only_for_its_outputs():
    assert not CONSUMER_METHODS & set(dir(Task))
    for task in TASKS:
        assert not CONSUMER_METHODS & set(dir(task))


class ToyTask(Task):
    """A task no consumer has a file for."""

    name = "toy_task_without_files"

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.round()


def test_a_task_without_files_gets_each_consumers_defaults():
    toy = ToyTask()
    assert type(task_interpretation(toy)) is TaskInterpretation
    assert task_interpretation(toy).interpretation_tables(None) == {}
    label, index = task_predictions(toy).prediction(torch.tensor([0.2, 0.7]), (10, 10), 8)
    assert label.tolist() == [0.0, 1.0] and index is label
    with pytest.raises(LightcycleError, match="no output format for task 'toy_task_without_files'"):
        task_predictions(toy).prediction_record(None, "a.jpg", None)
    with pytest.raises(LightcycleError, match="export: no activation description"):
        task_exports(toy).export_activation()
    with pytest.raises(LightcycleError, match="heatmaps: the toy_task_without_files task's outputs"):
        task_interpretation(toy).heatmap_score(torch.zeros(1, 2))
    assert task_samples(toy).target_text(torch.tensor([1, 2])) == "[1, 2]"


def test_a_consumer_registers_its_class_by_task_name():
    class Base:
        def __init__(self, task: Task) -> None:
            self.task = task

    registry: PerTask[Base] = PerTask("json", Base)  # json.<task name>: no such module

    @registry.register(ToyTask.name)
    class ToyBehaviour(Base):
        pass

    assert type(registry(ToyTask())) is ToyBehaviour
    assert type(registry(ClassificationTask(["a", "b"]))) is Base  # no json.classification: the defaults
