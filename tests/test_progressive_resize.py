"""Progressive resizing: sizes change at the right epochs, loaders really serve them, resume keeps them."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightcycle.callbacks.progressive_resize import ProgressiveResize, parse_sizes
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule




class Shapes(L.Callback):
    """(epoch, image side, batch length) of every train and validation batch."""

    def __init__(self) -> None:
        self.train: list[tuple[int, int, int]] = []
        self.val: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append((trainer.current_epoch, batch[0].shape[-1], len(batch[0])))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val.append((trainer.current_epoch, batch[0].shape[-1]))


def setup(image_folder, batch_size=8):
    dm = FolderDataModule(root=image_folder, size=24, batch_size=batch_size, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3)
    return dm, model


def trainer(callbacks, max_epochs, **kwargs):
    return L.Trainer(
        max_epochs=max_epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks, accelerator="cpu",
        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks), **kwargs,
    )


def test_sizes_change_at_the_right_epochs(image_folder):
    dm, model = setup(image_folder)
    shapes = Shapes()
    t = trainer([ProgressiveResize({0: 16, 2: 32}), shapes], 3, limit_train_batches=2, limit_val_batches=1)
    t.fit(model, datamodule=dm)
    assert sorted({(e, s) for e, s, _ in shapes.train}) == [(0, 16), (1, 16), (2, 32)]
    assert shapes.val == [(0, 16), (1, 16), (2, 32)]  # each epoch validates at its own size
    assert float(t.callback_metrics["image_size"]) == 32.0  # logged every epoch
    assert dm.size == 32
    final = Shapes()
    t.callbacks.append(final)
    t.validate(model, datamodule=dm, verbose=False)
    assert {s for _, s in final.val} == {32}  # final evaluation at the final size


def test_scale_batch_keeps_pixels_per_batch_and_replans_one_cycle(image_folder):
    dm, model = setup(image_folder, batch_size=8)
    shapes = Shapes()
    t = trainer([ProgressiveResize({0: 16, 2: 32}, scale_batch=True), shapes], 3, limit_val_batches=1)
    t.fit(model, datamodule=dm)
    sizes = {e: (s, b) for e, s, b in shapes.train}
    assert sizes == {0: (16, 8), 1: (16, 8), 2: (32, 2)}  # 8 * (16/32)^2
    # 36 images: 4 batches of 8 (ragged one dropped), 4, then 18 of 2 -> the schedule spans all 26 steps
    assert t.global_step == 26
    assert t.lr_scheduler_configs[0].scheduler.schedule.total_steps == 26


def test_resume_restores_size(image_folder, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    dm, model = setup(image_folder)
    cb = ProgressiveResize({0: 16, 1: 32})
    every_epoch = ModelCheckpoint(tmp_path, "{epoch}", save_top_k=-1, save_on_train_epoch_end=True)
    trainer([cb, every_epoch], 2, limit_train_batches=1, limit_val_batches=0).fit(model, datamodule=dm)
    saved = torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)["callbacks"]["ProgressiveResize"]
    assert saved["size"] == 32  # switched at the end of epoch 0, ready for epoch 1 (a run killed there)

    round_trip = ProgressiveResize({0: 16, 1: 32})
    round_trip.load_state_dict(cb.state_dict())
    assert round_trip.state_dict() == cb.state_dict()

    dm2, model2 = setup(image_folder)
    shapes = Shapes()
    t2 = trainer([ProgressiveResize({0: 16, 1: 32}), shapes], 2, limit_train_batches=1, limit_val_batches=0)
    t2.fit(model2, datamodule=dm2, ckpt_path=tmp_path / "epoch=0.ckpt")
    assert shapes.train == [(1, 32, 8)]


def test_resume_with_more_epochs_follows_the_plan(image_folder, tmp_path):
    dm, model = setup(image_folder)
    t = trainer([ProgressiveResize({0: 16, 1: 32})], 1, limit_train_batches=1, limit_val_batches=0)
    t.fit(model, datamodule=dm)
    t.save_checkpoint(tmp_path / "last.ckpt")  # saved at 16: epoch 1 was beyond max_epochs then
    dm2, model2 = setup(image_folder)
    shapes = Shapes()
    t2 = trainer([ProgressiveResize({0: 16, 1: 32}), shapes], 2, limit_train_batches=1, limit_val_batches=0)
    t2.fit(model2, datamodule=dm2, ckpt_path=tmp_path / "last.ckpt")
    assert shapes.train == [(1, 32, 8)]


def test_parse_sizes_validates():
    assert parse_sizes({"3": 96, 0: 64}) == {0: 64, 3: 96}
    with pytest.raises(LightcycleError, match="increase"):
        parse_sizes({0: 96, 3: 64})
    with pytest.raises(LightcycleError, match="at least 8"):
        parse_sizes({0: 4, 2: 16})
    with pytest.raises(LightcycleError, match="empty"):
        parse_sizes({})
    with pytest.raises(LightcycleError, match="resize.sizes"):
        parse_sizes({"a": "b"})


def test_size_plan_and_cli_section():
    from omegaconf import OmegaConf

    from lightcycle.run.callbacks import resize_section

    cb = ProgressiveResize({2: 64, 5: 128})
    assert [cb.size_at(e) for e in range(7)] == [None, None, 64, 64, 64, 128, 128]
    assert resize_section(OmegaConf.create({"resize": {"sizes": None, "scale_batch": False}})) == []
    (cb,) = resize_section(OmegaConf.create({"resize": {"sizes": {0: 64, 3: 96}, "scale_batch": True}}))
    assert cb.sizes == {0: 64, 3: 96} and cb.scale_batch
    with pytest.raises(LightcycleError, match="resize.sizes"):
        resize_section(OmegaConf.create({"resize": {"sizes": [64, 96]}}))


@pytest.mark.slow
def test_documented_schedules_survive_the_shell():
    """Every `resize.sizes={...}` in the README, docs, configs and errors is quoted, so bash's brace
    expansion does not split it into one override per epoch."""
    import re
    import subprocess
    from pathlib import Path

    from omegaconf import OmegaConf

    from lightcycle.run.callbacks import resize_section

    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "conf").rglob("*.yaml"))]
    found = 0
    for path in texts:
        for match in re.finditer(r"'?[\w.]*sizes=\{[^}]*\}'?", path.read_text()):
            found += 1
            words = subprocess.run(["bash", "-c", f"printf '%s\\n' {match.group(0)}"],
                                   capture_output=True, text=True, check=True).stdout.splitlines()
            assert len(words) == 1, f"{path.name}: {match.group(0)} splits into {words}"
    assert found >= 2
    with pytest.raises(LightcycleError, match=r"'resize.sizes=\{0:64,3:96\}' \(quoted"):
        resize_section(OmegaConf.create({"resize": {"sizes": "1:64"}}))
    with pytest.raises(LightcycleError, match=r"'resize.sizes=\{0:64,3:96,6:128\}' \(quoted"):
        parse_sizes({})


def test_resize_messages_count_epochs_from_one_like_the_epoch_log(image_folder, caplog):
    import logging

    dm, model = setup(image_folder)
    with caplog.at_level(logging.INFO, logger="lightcycle"):
        trainer([ProgressiveResize({0: 16, 1: 24})], 2, limit_train_batches=1, limit_val_batches=0).fit(model, datamodule=dm)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resize: epoch")]
    assert lines == ["resize: epoch 2: image size 24, batch size 8"], lines
