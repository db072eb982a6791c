"""End-to-end runs of `lightcycle-train` as a user runs it: a subprocess with Hydra overrides."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import run_train


@pytest.mark.slow
def test_train_on_image_folder_writes_every_output(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        ["data=folder", f"data.root={image_folder}", "data.size=32", "data.batch_size=8",
         "data.num_workers=0", "trainer.max_epochs=2", "trainer.accelerator=cpu",
         "trainer.log_every_n_steps=1"],  # 10 steps in all: the default interval (10) would log no step point
        run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"val_loss", "val_accuracy", "val_error_rate"}
    assert metrics["val_accuracy"] + metrics["val_error_rate"] == pytest.approx(1.0)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    log_text = (run_dir / "train.log").read_text()
    assert "epoch 2/2" in log_text and "final metrics" in log_text
    assert "\r" not in log_text  # readable in a file: no progress-bar carriage returns

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in events:
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train_loss_step", "val_loss", "val_accuracy"} <= tags
    assert any(t.startswith("lr-AdamW/group0") for t in tags)  # per-step LR of every group

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["task"]["class_names"] == ["blue", "green", "red"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, args, message",
    [
        ("missing root", ["data=folder", "data.root=/nonexistent/data"], "data.root /nonexistent/data does not exist"),
        ("unset root", ["data=folder"], "data.root is not set"),
        ("unknown backbone", ["model.backbone=resnet19"], "unknown timm model 'resnet19'"),
        ("bad weights", ["model.pretrained=WEIGHTS"], "cannot read weights file"),
    ],
)
def test_user_errors_are_one_line_not_a_traceback(case, args, message, image_folder, tmp_path):
    weights = tmp_path / "bad.pth"
    weights.write_text("garbage")
    args = [a.replace("WEIGHTS", str(weights)) for a in args]
    if "data=folder" not in args:
        args = ["data=folder", f"data.root={image_folder}", *args]
    result = run_train(args, tmp_path / "run", timeout=120)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("lightcycle-train: error:")]
    assert len(error_lines) == 1
