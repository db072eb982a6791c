"""`seed=` makes a run repeat: two CPU runs with the same seed and `trainer.deterministic=true` (one
DataLoader worker) write the same metrics.json and the same training loss curve;
another seed gives other ones."""

from __future__ import annotations

import pytest

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import make_classification, run_train


def loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    """Every (step, value) of train_loss_step in the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "train_loss_step" in acc.Tags()["scalars"]:
            points += [(e.step, e.value) for e in acc.Scalars("train_loss_step")]
    return points


@pytest.mark.slow
def test_the_same_seed_repeats_a_run_and_another_seed_does_not(tmp_path):
    data = make_classification(tmp_path / "data")
    args = ["data=folder", f"data.root={data}", "data.size=32", "data.num_workers=1", "model.backbone=test_resnet",
            "model.pretrained=false", "trainer.accelerator=cpu", "trainer.max_epochs=2", "trainer.deterministic=true",
            "trainer.log_every_n_steps=1", "interpret.top_k=0", "show_batch.n=0"]
    runs = {"first": "seed=7", "again": "seed=7", "other": "seed=8"}
    with ThreadPoolExecutor(len(runs)) as pool:
        done = dict(zip(runs, pool.map(lambda name: run_train([*args, runs[name]], tmp_path / name, timeout=600), runs)))
    for name, result in done.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in runs}
    curves = {name: loss_curve(tmp_path / name) for name in runs}
    assert len(curves["first"]) >= 4
    assert metrics["first"] == metrics["again"]
    assert curves["first"] == curves["again"]
    assert curves["first"] != curves["other"]
    assert metrics["first"] != metrics["other"]
