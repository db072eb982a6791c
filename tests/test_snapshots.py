"""SGDR restarts on epoch starts, snapshots at cycle ends, keep-M pruning and the ensemble's metrics."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from lightcycle.callbacks.snapshots import SnapshotEnsemble
from lightcycle.ensemble import ensemble_predict, find_snapshots, load_snapshots
from lightcycle.run.callbacks import snapshots_section
from lightcycle.run.trainer import apply_schedule_epochs
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.evaluation import score_batches
from lightcycle.module import VisionModule

SGDR_1_2_3 = {"name": "sgdr", "cycle_len": 1, "cycle_mult": 2, "n_cycles": 3, "lr_min": 0.0, "warmup_steps": 0}


class LRTrace(L.Callback):
    """(epoch, batch_idx, global_step, lr of the head group) at every training batch."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[-1]["lr"]
        self.rows.append((trainer.current_epoch, batch_idx, trainer.global_step, lr))


class FinalWeights(L.Callback):
    def on_train_end(self, trainer, pl_module):
        self.weights = copy.deepcopy(pl_module.state_dict())


def _dm(root):
    dm = FolderDataModule(root=root, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    return dm


def _trainer(callbacks, max_epochs, **kwargs):
    return L.Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_train_batches=2, limit_val_batches=1, callbacks=callbacks, **kwargs,
    )


def test_sgdr_restarts_snapshots_pruning_and_ensemble(image_folder, tmp_path):
    dm = _dm(image_folder)
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2, schedule=SGDR_1_2_3)
    trace, final = LRTrace(), FinalWeights()
    snapshots = SnapshotEnsemble(keep=2, dirpath=tmp_path / "ckpt")
    _trainer([trace, final, snapshots], max_epochs=7).fit(model, datamodule=dm)

    # 2 steps per epoch, cycles of 1, 2, 4 epochs: the peak lr exactly at the first step of epochs 0, 1, 3
    assert len(trace.rows) == 14
    restarts = [(epoch, batch_idx) for epoch, batch_idx, _, lr in trace.rows if lr == pytest.approx(1e-2)]
    assert restarts == [(0, 0), (1, 0), (3, 0)]
    lrs = [lr for *_, lr in trace.rows]
    assert lrs[1] < lrs[0] and lrs[5] < lrs[4] < lrs[3] < lrs[2] and lrs[13] < lrs[7] < lrs[6]

    # snapshots after the last step of each cycle (steps 1, 5, 13); keep=2 deleted the first
    assert [s["step"] for s in snapshots.snapshots] == [5, 13]
    assert [p.name for p in find_snapshots(tmp_path / "ckpt")] == ["snapshot-cycle2.ckpt", "snapshot-cycle3.ckpt"]
    raw = torch.load(tmp_path / "ckpt" / "snapshot-cycle3.ckpt", weights_only=True)
    assert {"state_dict", "hyper_parameters"} <= set(raw) and "optimizer_states" not in raw
    assert all(torch.equal(raw["state_dict"][k], v) for k, v in final.weights.items())  # last step = last snapshot
    # evaluating the ensemble put the final weights back
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.weights.items())

    # the ensemble's metrics equal averaging the loaded snapshots by hand
    members = load_snapshots(snapshots.snapshot_paths)
    assert len(members) == 2 and members[0].task.class_names == model.task.class_names
    by_hand = score_batches(
        model.task, ((ensemble_predict(members, dm.batch_transform(x)), y) for x, y in dm.val_dataloader()), "ensemble"
    )
    assert set(snapshots.final_metrics) == {"ensemble_loss", "ensemble_accuracy", "ensemble_error_rate"}
    assert snapshots.final_metrics == pytest.approx(by_hand, abs=1e-6)

    # resuming keeps the list
    again = SnapshotEnsemble(keep=2)
    again.load_state_dict(copy.deepcopy(snapshots.state_dict()))
    assert again.snapshots == snapshots.snapshots


def test_snapshots_without_sgdr_fail_clearly(image_folder, tmp_path):
    dm = _dm(image_folder)
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, schedule={"name": "one_cycle"})
    with pytest.raises(LightcycleError, match="schedule=sgdr"):
        _trainer([SnapshotEnsemble(keep=2, dirpath=tmp_path)], max_epochs=1).fit(model, datamodule=dm)
    cfg = OmegaConf.create({"schedule": {"name": "one_cycle"}, "snapshots": {"keep": 3}, "paths": {"output_dir": "x"}})
    with pytest.raises(LightcycleError, match="snapshots.keep=3 needs schedule=sgdr"):
        snapshots_section(cfg)
    with pytest.raises(LightcycleError, match="at least 1"):
        SnapshotEnsemble(keep=0)


def test_cli_sgdr_decides_the_epoch_count():
    cfg = OmegaConf.create({"schedule": SGDR_1_2_3, "snapshots": {"keep": 3}, "paths": {"output_dir": "/tmp/x"}})
    trainer_cfg = {"max_epochs": 8, "max_steps": -1}
    apply_schedule_epochs(cfg, trainer_cfg)
    assert trainer_cfg["max_epochs"] == 7
    [callback] = snapshots_section(cfg)
    assert isinstance(callback, SnapshotEnsemble) and callback.keep == 3
    with pytest.raises(LightcycleError, match="max_steps"):
        apply_schedule_epochs(cfg, {"max_epochs": 8, "max_steps": 100})
    off = OmegaConf.create({"schedule": {"name": "one_cycle"}, "snapshots": {"keep": 0}})
    trainer_cfg = {"max_epochs": 8}
    apply_schedule_epochs(off, trainer_cfg)
    assert trainer_cfg["max_epochs"] == 8 and snapshots_section(off) == []
