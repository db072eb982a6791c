"""DDP on CPU (gloo, two processes) counts every validation image exactly once.

Lightning's default DistributedSampler pads the last shard by repeating images; on an odd-sized
validation set that repeated image would count twice in val/TTA/ensemble metrics. These runs
compare `trainer=ddp_cpu` with a single process through the real `lightcycle-train`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import command_here, make_image, run_train, train_here

TINY = ["data=folder", "data.size=32", "data.batch_size=4", "data.num_workers=0", "data.augment=none",
        "model.backbone=test_resnet", "model.pretrained=false", "~logger"]


@pytest.fixture
def odd_folder(image_folder: Path) -> Path:
    """13 validation images: shards of 7 and 6 on two ranks, one of them padded by Lightning's sampler."""
    make_image(image_folder / "valid" / "red" / "red_extra.jpg", 0, np.random.default_rng(7))
    return image_folder


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_cpu_evaluation_equals_single_process_on_odd_validation_set(odd_folder, tmp_path, monkeypatch):
    # No training steps: both runs evaluate the same seeded initial weights, so every number must agree.
    # (no end-of-run report: the metrics are what is compared)
    args = [*TINY, f"data.root={odd_folder}", "trainer.max_epochs=1", "+trainer.limit_train_batches=0", "tta.n=2",
            "interpret.top_k=0", "show_batch.n=0"]
    # the single-process reference through the entry point in this process; the DDP run as a user's shell starts it
    assert train_here([*args, "trainer=cpu"], tmp_path / "single", monkeypatch) == 0
    ddp = run_train([*args, "trainer=ddp_cpu", "trainer.devices=2"], tmp_path / "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = _metrics(tmp_path / "single"), _metrics(tmp_path / "ddp")
    assert set(one) == set(two) >= {"val_loss", "val_accuracy", "tta_loss", "tta_accuracy"}
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-5), key
    # 13 images: accuracy is a multiple of 1/13 (a repeated image would make it k/14)
    assert round(one["val_accuracy"] * 13, 4) == pytest.approx(round(one["val_accuracy"] * 13))


@pytest.mark.slow
def test_ddp_cpu_training_with_sgdr_snapshots_and_tta_finishes(odd_folder, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    result = run_train(
        [*TINY, f"data.root={odd_folder}", "trainer=ddp_cpu", "trainer.devices=2", "schedule=sgdr",
         "schedule.cycle_len=1", "schedule.cycle_mult=1", "schedule.n_cycles=2", "snapshots.keep=2", "tta.n=2"],
        run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _metrics(run_dir)
    assert {"val_accuracy", "tta_accuracy", "ensemble_accuracy", "ensemble_loss"} <= set(metrics)
    for key in ("val_accuracy", "tta_accuracy", "ensemble_accuracy"):
        assert round(metrics[key] * 13, 4) == pytest.approx(round(metrics[key] * 13)), key
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("snapshot-cycle*.ckpt")) == [
        "snapshot-cycle1.ckpt", "snapshot-cycle2.ckpt"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # predictions from the DDP run's snapshots over the 13 odd-sized validation images: each exactly once
    import csv

    from lightcycle.cli.predict import main as predict_main

    out = tmp_path / "preds.csv"  # lightcycle-predict's entry point in this process
    code = command_here(predict_main, ["lightcycle-predict", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
                                       f"inputs={odd_folder / 'valid'}", f"output={out}", "ensemble=true", "tta.n=2",
                                       "batch_size=4"], monkeypatch)
    assert code == 0, capsys.readouterr().err[-3000:]
    with open(out) as f:
        files = [row["file"] for row in csv.DictReader(f)]
    assert len(files) == len(set(files)) == 13


@pytest.mark.slow
def test_ddp_cpu_ema_keeps_one_average_per_rank_in_step(odd_folder, tmp_path):
    """Each rank averages its own copy; BatchNorm statistics (each rank's own after its forward pass)
    are taken from rank 0, so every rank validates the same averaged model and the ranks agree at the end."""
    import torch

    run_dir = tmp_path / "run"
    result = run_train(
        [*TINY, f"data.root={odd_folder}", "trainer=ddp_cpu", "trainer.devices=2", "trainer.max_epochs=1",
         "ema.decay=0.9", "mixup.alpha=0.4", "show_batch.n=0", "interpret.top_k=0"],
        run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = result.stdout + result.stderr + "".join(p.read_text() for p in run_dir.glob("*.log"))
    assert "ema: averaged weights identical on 2 ranks" in logs
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "current_model_state" in last and "averaging_state" in last
    metrics = _metrics(run_dir)
    assert round(metrics["val_accuracy"] * 13, 4) == pytest.approx(round(metrics["val_accuracy"] * 13))
