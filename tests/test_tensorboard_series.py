"""TensorBoard after a run: one event file, one point per value at its real step. The final validation
re-validates the model the last epoch logged, so it adds no point; TTA sits at the last step; the HPARAMS
tab names the final metrics without a copy of them at step 0."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_train

TINY = ["data=folder", "data.size=32", "data.batch_size=8", "data.num_workers=0", "model.backbone=test_resnet",
        "model.pretrained=false", "trainer.accelerator=cpu", "interpret.top_k=0", "show_batch.n=0"]


def read_run(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    series: dict[str, list[tuple[int, float]]] = {}
    hparams_metrics: set[str] = set()
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        hparams_metrics |= hparams_metric_names(path)
    return files, series, hparams_metrics


def hparams_metric_names(path) -> set[str]:
    """The metrics TensorBoard's HPARAMS tab shows for this run (the experiment summary's metric infos)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    names = set()
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.tag == "_hparams_/experiment":
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                names |= {info.name.tag for info in data.experiment.metric_infos}
    return names


@pytest.mark.slow
def test_one_event_file_and_one_point_per_value_at_its_step(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    done = run_train([*TINY, f"data.root={image_folder}", "trainer.max_epochs=2", "tta=true"], run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    files, series, hparams_metrics = read_run(run_dir)
    assert len(files) == 1, [f.name for f in files]
    val_steps = [step for step, _ in series["val_loss"]]
    assert len(val_steps) == 2 and val_steps[0] > 0 and val_steps == sorted(set(val_steps)), series["val_loss"]
    last = val_steps[-1]
    for tag in ("val_loss", "val_accuracy", "val_error_rate"):
        assert [s for s, _ in series[tag]] == val_steps, (tag, series[tag])
    for tag in ("tta_loss", "tta_accuracy", "tta_error_rate"):
        assert [s for s, _ in series[tag]] == [last], (tag, series[tag])
    assert [s for s, _ in series["epoch"]] == val_steps
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert series["val_loss"][-1][1] == pytest.approx(metrics["val_loss"], rel=1e-5)
    assert hparams_metrics == set(metrics)


@pytest.mark.slow
def test_recipe_stages_continue_one_file(image_folder, tmp_path):
    run_dir = tmp_path / "ft"
    done = run_train([*TINY, f"data.root={image_folder}", "experiment=fine_tune", "model.lr=2e-3", "recipe.epochs=2"],
                     run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    files, series, _ = read_run(run_dir)
    assert len(files) == 1, [f.name for f in files]
    val_steps = [step for step, _ in series["val_loss"]]
    assert len(val_steps) == 3 and val_steps == sorted(set(val_steps)) and val_steps[0] > 0, series["val_loss"]  # 1 + 2 epochs
