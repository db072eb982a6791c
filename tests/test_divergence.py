"""Divergence: a NaN/inf training loss stops the run with the learning rate in the message, and no
checkpoint is ever written with NaN weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightcycle.callbacks import DivergenceGuard, LRFinder
from lightcycle.checkpoint_io import with_atomic_checkpoints
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule


class PoisonBatch(L.Callback):
    """From global step `step` on, every input batch is NaN: the loss, gradients and weights follow."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            batch[0].fill_(float("nan"))


def _all_finite(state_dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values() if t.is_floating_point())


def _trainer(callbacks, root: Path, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1, callbacks=callbacks, plugins=with_atomic_checkpoints(None),
        default_root_dir=root, enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), **kwargs,
    )


def _setup(root):
    L.seed_everything(0)
    dm = FolderDataModule(root, size=32, batch_size=8, num_workers=0, backbone="test_resnet", augment="none")
    dm.setup("fit")
    return dm, VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3, schedule={"name": "constant"})


def test_nan_loss_stops_with_the_lr_and_keeps_the_last_good_checkpoint(image_folder, tmp_path):
    # 36 images / batch 8 = 4 steps per epoch; the loss turns NaN at step 6, mid second epoch
    dm, model = _setup(image_folder)
    ckpt_dir = tmp_path / "checkpoints"
    guard = DivergenceGuard()
    finder = LRFinder(num_it=12, plot=False, apply=False)  # its own sweep diverges on purpose: not an error
    callbacks = [
        finder, guard, PoisonBatch(6),
        ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_top_k=1, save_last=True),  # as conf/callbacks
        ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=1),  # every step
    ]
    with pytest.raises(LightcycleError) as info:
        _trainer(callbacks, tmp_path).fit(model, datamodule=dm)
    message = str(info.value)
    assert "\n" not in message
    suggestion = finder.result.suggestion
    assert message == (
        "training diverged at epoch 1, step 7: the training loss is NaN. The learning rate is too high "
        f"(lr 0.001 at this step, model.lr=0.001, the LR finder suggested {suggestion:.3g}): lower model.lr "
        f"(e.g. model.lr={suggestion:.2g}) or run the LR range test with model.lr=auto. "
        "Nothing was saved after step 6, the last with a finite loss."
    )
    assert not _all_finite(model.state_dict())  # the weights in memory are NaN ...
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6 and _all_finite(last["state_dict"])  # ... the checkpoint is not
    assert guard.state_dict() == {"last_finite_step": 6, "diverged_at": 7}
    best = [p for p in ckpt_dir.glob("*.ckpt") if p.name != "last.ckpt"]
    assert best and all(_all_finite(torch.load(p, weights_only=True)["state_dict"]) for p in best)


def test_a_checkpoint_with_nan_weights_is_refused(image_folder, tmp_path):
    dm, model = _setup(image_folder)
    trainer = _trainer([DivergenceGuard()], tmp_path, max_steps=1, limit_train_batches=1)
    trainer.fit(model, datamodule=dm)
    with torch.no_grad():
        next(model.head.parameters()).fill_(float("inf"))
    with pytest.raises(LightcycleError, match=r"the weights are not finite \(head\..*\)\..*The checkpoint was not written"):
        trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert not (tmp_path / "nan.ckpt").exists()


def test_guard_state_round_trips():
    guard = DivergenceGuard()
    guard.load_state_dict({"last_finite_step": 41, "diverged_at": None})
    assert guard.state_dict() == {"last_finite_step": 41, "diverged_at": None}


@pytest.mark.slow
def test_cli_absurd_lr_exits_1_with_one_line_and_a_finite_last_ckpt(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1",
               PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    result = subprocess.run(
        [sys.executable, "-m", "lightcycle.cli.train", f"hydra.run.dir={run_dir}", "data=folder",
         f"data.root={image_folder}", "data.size=32", "data.batch_size=8", "data.num_workers=0",
         "model.backbone=test_resnet", "model.pretrained=false", "trainer.accelerator=cpu", "trainer.max_epochs=2",
         "schedule=constant", "model.lr=1e30", "checkpoint_every_n_steps=1",
         "+callbacks.record._target_=tests.killpoint.RecordCheckpointIO", f"+callbacks.record.path={tmp_path / 'io'}"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightcycle-train: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("lightcycle-train: error: training diverged at epoch 0, step ")
    assert "the training loss is NaN. The learning rate is too high (lr 1e+30 at this step, model.lr=1e+30)" in errors[0]
    assert (tmp_path / "io").read_text() == "AtomicCheckpointIO"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] >= 1 and _all_finite(last["state_dict"])
    assert not (run_dir / "metrics.json").exists()


def test_a_deferred_check_names_the_first_bad_step_and_no_checkpoint_follows_it(image_folder, tmp_path):
    # check_every_n_steps=5 reads the loss as on an accelerator: every 5 steps, at epoch ends and before saves
    dm, model = _setup(image_folder)
    ckpt_dir = tmp_path / "checkpoints"
    guard = DivergenceGuard(check_every_n_steps=5)
    every_step = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=1)
    with pytest.raises(LightcycleError) as info:
        _trainer([guard, PoisonBatch(6), every_step], tmp_path).fit(model, datamodule=dm)
    assert str(info.value).startswith("training diverged at epoch 1, step 7: the training loss is NaN.")
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6 and _all_finite(last["state_dict"])  # the save after step 7 asked first
    assert guard.state_dict() == {"last_finite_step": 6, "diverged_at": 7}

    dm, model = _setup(image_folder)  # no checkpoints: the end of epoch 1 reads the flag
    guard = DivergenceGuard(check_every_n_steps=5)
    with pytest.raises(LightcycleError) as info:
        _trainer([guard, PoisonBatch(6)], tmp_path).fit(model, datamodule=dm)
    assert str(info.value).startswith("training diverged at epoch 1, step 7: the training loss is NaN.")
    assert "Nothing was saved after step 6" in str(info.value)
