"""Untrusted files: trained checkpoints of every task are plain data that `torch.load(weights_only=True)`
reads; a checkpoint carrying code is refused in one line, and nothing in it runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightcycle.callbacks import DivergenceGuard, LRFinder
from lightcycle.checkpoint_io import with_atomic_checkpoints
from lightcycle.run.trainer import resume_checkpoint
from lightcycle.data import FolderDataModule, MultiLabelDataModule, PointsDataModule, SegmentationDataModule
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from tests.helpers import RunsCode, make_biwi, make_camvid, make_planet, quick_trainer

PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size)


def _assert_plain(obj, where="checkpoint"):
    """Only dicts, lists and tuples of str/int/float/bool/None/tensors: nothing that needs a class to unpickle."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r} is a {type(k).__name__}"
            _assert_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _assert_plain(v, f"{where}[{i}]")
    else:
        assert isinstance(obj, PLAIN), f"{where} is a {type(obj).__module__}.{type(obj).__name__}"


def _datamodule(task: str, tmp_path: Path, image_folder: Path):
    common = dict(size=32, batch_size=6, num_workers=0, backbone="test_resnet", augment="none")
    if task == "classification":
        return FolderDataModule(image_folder, **common)
    if task == "multilabel":
        return MultiLabelDataModule(make_planet(tmp_path / "planet"), **common)
    if task == "segmentation":
        return SegmentationDataModule(make_camvid(tmp_path / "camvid"), **common)
    return PointsDataModule(make_biwi(tmp_path / "biwi"), **common)


@pytest.mark.parametrize("task", ["classification", "multilabel", "segmentation", "points"])
def test_trained_checkpoint_is_plain_data_for_weights_only(task, tmp_path, image_folder):
    dm = _datamodule(task, tmp_path, image_folder)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3)
    ckpt_dir = tmp_path / "checkpoints"
    trainer = quick_trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=2, enable_checkpointing=True,
        plugins=with_atomic_checkpoints(None),
        callbacks=[LRFinder(num_it=8, plot=False), DivergenceGuard(),
                   ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", save_last=True)],
    )
    trainer.fit(model, datamodule=dm)  # a validation epoch ran: tuned thresholds, per-class IoU, ... are stored
    raw = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    _assert_plain({k: raw[k] for k in ("hyper_parameters", "callbacks", "loops", "datamodule_hyper_parameters")
                   if k in raw})
    if task == "multilabel":
        assert raw["hyper_parameters"]["task"]["thresholds"] is not None  # tuned at validation, stored as floats
    loaded = VisionModule.load(ckpt_dir / "last.ckpt")
    assert loaded.task.to_config() == model.task.to_config()


def test_resume_refuses_a_checkpoint_that_carries_code_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": RunsCode(marker)}}, ckpt)
    with pytest.raises(LightcycleError) as info:
        resume_checkpoint(str(ckpt), tmp_path)
    message = str(info.value)
    assert message.startswith(f"resume: cannot load checkpoint {ckpt} with weights_only=True")
    assert "\n" not in message and len(message) < 400
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # and VisionModule.load would not run it either
        torch.load(ckpt, weights_only=True)
    assert not marker.exists()


def test_resume_names_a_truncated_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"global_step": 3, "w": torch.zeros(1000)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    with pytest.raises(LightcycleError, match=r"resume: cannot load checkpoint .*last.ckpt with weights_only=True: truncated"):
        resume_checkpoint(True, tmp_path)
