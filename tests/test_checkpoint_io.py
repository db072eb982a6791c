"""Checkpoints are written atomically: a save killed half-way leaves the previous file intact, and two
processes saving into one folder never write into each other's temp file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightcycle.atomic import temp_name
from lightcycle.checkpoint_io import AtomicCheckpointIO, save_atomic, with_atomic_checkpoints
from lightcycle.data import FolderDataModule
from lightcycle.module import VisionModule


def test_an_interrupted_save_keeps_the_old_file_and_no_partial(tmp_path, monkeypatch):
    path = tmp_path / "ckpts" / "last.ckpt"
    save_atomic({"global_step": 1}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # what a kill mid-write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"global_step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert not list(path.parent.glob(".*.partial"))
    assert sorted(os.listdir(path.parent)) == ["last.ckpt"]


def test_temp_names_are_unique_per_process_and_call(tmp_path):
    target = tmp_path / "last.ckpt"
    names = {temp_name(target) for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and f".last.ckpt.{os.getpid()}-" in n.name and n.suffix != ".ckpt" for n in names)


@pytest.mark.slow
def test_two_processes_saving_one_checkpoint_neither_fails_nor_mixes(tmp_path):
    """Two runs in one folder used to share one fixed temp name: one crashed on the rename, or one
    process's bytes ended up under the other's name. Now each save lands whole."""
    target = tmp_path / "checkpoints" / "last.ckpt"
    writer = textwrap.dedent(f"""
        import sys, torch
        from lightcycle.checkpoint_io import save_atomic
        me = int(sys.argv[1])
        for step in range(40):
            save_atomic({{"writer": me, "step": step, "w": torch.full((50_000,), float(me))}}, {str(target)!r})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(i)], stderr=subprocess.PIPE, text=True)
             for i in (1, 2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    final = torch.load(target, weights_only=True)
    assert final["step"] == 39 and bool((final["w"] == final["writer"]).all())  # one writer's save, whole
    assert sorted(os.listdir(target.parent)) == ["last.ckpt"]  # no temp file left by either


def test_with_atomic_checkpoints_adds_the_plugin_once():
    assert [type(p) for p in with_atomic_checkpoints(None)] == [AtomicCheckpointIO]
    mine = TorchCheckpointIO()
    assert with_atomic_checkpoints([mine]) == [mine]  # the user's own CheckpointIO wins
    assert [type(p) for p in with_atomic_checkpoints("bf16-mixed")] == [str, AtomicCheckpointIO]


def test_trainer_saves_every_checkpoint_through_a_rename(image_folder, tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(os.path.basename(dst)), real_replace(src, dst)))
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet", augment="none")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3)
    ckpt_dir = tmp_path / "checkpoints"
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        plugins=with_atomic_checkpoints(None),
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=1)],
    )
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    trainer.fit(model, datamodule=dm)
    assert renamed.count("last.ckpt") >= 2
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 2
    assert sorted(os.listdir(ckpt_dir)) == ["last.ckpt"]
