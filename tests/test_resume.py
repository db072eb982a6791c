"""Resuming from last.ckpt continues the schedule where it stopped: LR at global step k as if never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightcycle.callbacks.lr_finder import LRFinder
from lightcycle.data import FolderDataModule
from lightcycle.module import VisionModule
from lightcycle.schedules import SGDR as SGDR_SCHEDULE

SGDR = {"name": "sgdr", "cycle_len": 1, "cycle_mult": 2, "n_cycles": 2, "lr_min": 0.0, "warmup_steps": 0}
ONE_CYCLE = {"name": "one_cycle"}


class LRTrace(L.Callback):
    """global step -> lr of every parameter group, at the start of every training batch."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step] = [g["lr"] for g in trainer.optimizers[0].param_groups]


class Crash(L.Callback):
    """Die like a killed process (no checkpoint on the way out) before the given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise _Killed()


class _Killed(Exception):
    pass


def _fit(root, schedule, callbacks, ckpt_path=None, default_root_dir=None):
    L.seed_everything(0, workers=True)
    # augment=none and squish framing: albumentations draws its augmentation and random crops from its
    # own unseeded generator, which would make the two runs' range tests (and so their peak lr) differ
    dm = FolderDataModule(root=root, size=32, batch_size=8, num_workers=0, backbone="test_resnet", augment="none",
                          resize="squish", min_scale=1.0)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3, lr_mult=10, schedule=schedule)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1, callbacks=callbacks, default_root_dir=default_root_dir,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize(
    "schedule, every_n_steps, crash_step",
    [(SGDR, None, 4), (ONE_CYCLE, 2, 6)],
    ids=["sgdr-epoch-end-checkpoint", "one-cycle-mid-epoch-checkpoint"],
)
def test_resume_gives_the_uninterrupted_lr_trace(image_folder, tmp_path, schedule, every_n_steps, crash_step):
    # 36 images / batch 8 = 4 steps per epoch, 3 epochs; model.lr=auto's range test runs first
    full = LRTrace()
    finder_full = LRFinder(num_it=12, plot=False)
    _fit(image_folder, schedule, [finder_full, full], default_root_dir=tmp_path)
    assert sorted(full.lrs) == list(range(12))

    ckpt_dir = tmp_path / "ckpt"

    def checkpoint():
        if every_n_steps:
            return ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=every_n_steps)
        # as conf/callbacks/default.yaml: best by val_loss plus last.ckpt at every epoch end
        return ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_top_k=1, save_last=True)

    first = LRTrace()
    finder = LRFinder(num_it=12, plot=False)
    with pytest.raises(_Killed):
        _fit(image_folder, schedule, [finder, Crash(crash_step), first, checkpoint()])
    assert finder.result is not None and finder.applied_lr == pytest.approx(finder_full.applied_lr)
    saved = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert saved["global_step"] == crash_step

    second = LRTrace()
    again = LRFinder(num_it=12, plot=False)
    again._sweep = lambda *a, **k: pytest.fail("the LR range test ran again on resume")  # type: ignore[method-assign]
    resumed = _fit(image_folder, schedule, [again, second, checkpoint()], ckpt_path=ckpt_dir / "last.ckpt")
    assert resumed.hparams.lr == pytest.approx(finder.applied_lr)

    assert sorted(first.lrs) == list(range(crash_step))
    assert sorted(second.lrs) == list(range(crash_step, 12))
    stitched = {**first.lrs, **second.lrs}
    for step in range(12):
        assert stitched[step] == pytest.approx(full.lrs[step], rel=1e-12), step


def _lr_log(tensorboard_dir: Path) -> dict[str, dict[int, float]]:
    """Learning rates logged by the last process that wrote to `tensorboard_dir`: tag -> {step: lr}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(tensorboard_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
    pid = files[-1].name.split(".")[-2]  # events.out.tfevents.<time>.<host>.<pid>.<n>
    logged: dict[str, dict[int, float]] = {}
    for path in files:
        if path.name.split(".")[-2] != pid:
            continue
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith("lr-") and "momentum" not in tag:
                logged.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
    return logged


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_true(image_folder, tmp_path):
    """A real `lightcycle-train` killed with SIGKILL mid-epoch resumes to completion in the same run dir,
    at the same place in the SGDR schedule, with the range test's result and the snapshots kept."""
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    args = [
        sys.executable, "-m", "lightcycle.cli.train", f"hydra.run.dir={run_dir}", "data=folder",
        f"data.root={image_folder}", "data.size=32", "data.batch_size=8", "data.num_workers=0",
        "model.backbone=test_resnet", "model.pretrained=false", "trainer.accelerator=cpu", "schedule=sgdr",
        "schedule.cycle_len=1", "schedule.cycle_mult=2", "schedule.n_cycles=2", "snapshots.keep=2",
        "checkpoint_every_n_steps=1", "model.lr=auto", "lr_find.num_it=12", "trainer.log_every_n_steps=1",
        # 36 images / batch 8 = 4 steps per epoch, 3 epochs: step 6 is the middle of the second epoch
        "+callbacks.killpoint._target_=tests.killpoint.PauseOnce", "+callbacks.killpoint.step=6",
        f"+callbacks.killpoint.marker={marker}",
    ]
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1",
               PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"training ended before step 6: {proc.stderr.read().decode()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("training did not reach step 6 within 240 s")
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert not (run_dir / "metrics.json").exists()
    assert torch.load(last, weights_only=True)["global_step"] == 6  # saved after step 6, before the kill
    assert (run_dir / "checkpoints" / "snapshot-cycle1.ckpt").is_file()  # end of the first cycle (step 3)

    result = subprocess.run([*args, "resume=true"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing the stored result" in result.stdout + result.stderr  # no second range test
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val_loss", "val_accuracy", "ensemble_loss", "ensemble_accuracy"} <= set(metrics)
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == 12
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("snapshot-*.ckpt")) == [
        "snapshot-cycle1.ckpt", "snapshot-cycle2.ckpt"
    ]
    assert not list((run_dir / "checkpoints").glob(".*.partial"))

    # the resumed run's learning rates continue the schedule at step 6: peak x SGDR(step), every group
    schedule = SGDR_SCHEDULE(steps_per_epoch=4, cycle_len=1, cycle_mult=2, n_cycles=2)
    peaks = {f"group{g['layer_group']}": g["initial_lr"] for g in final["optimizer_states"][0]["param_groups"]}
    assert max(peaks.values()) == pytest.approx(final["hyper_parameters"]["lr"])  # the range test's lr
    logged = _lr_log(run_dir / "tensorboard")
    assert logged
    for tag, by_step in logged.items():
        assert sorted(by_step) == list(range(6, 12)), tag  # the resumed process started at step 6
        peak = peaks[tag.split("/", 1)[1]]
        for step, lr in by_step.items():
            assert lr == pytest.approx(peak * schedule.lr(step), rel=1e-5, abs=1e-12), (tag, step)
