"""data.device_transforms: uint8 batches through the DataLoader, normalised after the transfer, and
every consumer of the loaders agrees with the float path (validation, both TTA view kinds,
interpretation, precompute, snapshot ensembles, the LR range test, prediction, export)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightcycle.callbacks import SnapshotEnsemble, evaluate_tta, lr_find
from lightcycle.precomputed import write_split
from lightcycle.data import FolderDataModule, PointsDataModule
from lightcycle.data.base import default_num_workers
from lightcycle.data.transforms import normalize_batch
from lightcycle.interpretation import collect
from lightcycle.module import VisionModule
from tests.helpers import make_biwi, quick_trainer


def _pair(root, **kwargs):
    """The same data twice: normalised in the workers, and as uint8 batches."""
    common = dict(size=32, batch_size=6, num_workers=0, backbone="test_resnet", **kwargs)
    dms = FolderDataModule(root, device_transforms=False, **common), FolderDataModule(root, **common)
    for dm in dms:
        dm.setup("fit")
    return dms


@pytest.fixture
def trained(image_folder):
    floats, uint8 = _pair(image_folder)
    torch.manual_seed(0)
    model = VisionModule(floats.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    quick_trainer(max_epochs=1).fit(model, datamodule=uint8)  # trains on uint8 batches, normalised on the way
    return model.eval(), floats, uint8


def test_uint8_batches_normalise_to_the_float_batches(image_folder):
    floats, uint8 = _pair(image_folder)
    (xf, yf), (xu, yu) = next(iter(floats.val_dataloader())), next(iter(uint8.val_dataloader()))
    assert xu.dtype == torch.uint8 and xf.dtype == torch.float32 and xu.shape == xf.shape
    assert torch.equal(yf, yu)
    torch.testing.assert_close(uint8.batch_transform(xu), xf, atol=1e-5, rtol=0)
    assert floats.batch_transform(xf) is xf  # floats pass through: one call for either kind of batch
    moved = uint8.on_after_batch_transfer([xu, yu], 0)
    torch.testing.assert_close(moved[0], xf, atol=1e-5, rtol=0)
    stacked = torch.stack([xu, xu], 1)  # TTA's [B, V, C, H, W] views
    torch.testing.assert_close(normalize_batch(stacked, uint8.normalization)[:, 1], xf, atol=1e-5, rtol=0)


def test_every_consumer_agrees_with_the_float_path(trained, tmp_path):
    model, floats, uint8 = trained
    trainer = quick_trainer()
    val = [trainer.validate(model, datamodule=dm, verbose=False)[0]["val_loss"] for dm in (floats, uint8)]
    assert val[0] == pytest.approx(val[1], rel=1e-4)
    for views in ("augment", "flip_scale"):
        tta = [evaluate_tta(model, model.task, dm, n=2, views=views, seed=3) for dm in (floats, uint8)]
        assert tta[0] == pytest.approx(tta[1], rel=1e-4), views
    results = [collect(model, dm) for dm in (floats, uint8)]
    torch.testing.assert_close(results[0].losses, results[1].losses, atol=1e-4, rtol=1e-4)
    shown = [r.image(3).astype(int) for r in results]  # top-loss images: un-normalised vs the pixels themselves
    assert shown[1].dtype == int and shown[0].shape == shown[1].shape == (32, 32, 3)
    assert np.abs(shown[0] - shown[1]).max() <= 1
    features = []
    for dm in (floats, uint8):
        folder = tmp_path / f"features-{dm.device_transforms}"
        with torch.inference_mode():  # as precomputed.write_features runs it
            write_split(model.backbone, dm, "valid", folder.parent, name=folder.name)
        features.append(np.load(folder.parent / f"{folder.name}_features.npy"))
    np.testing.assert_allclose(features[0], features[1], atol=1e-4)


def test_snapshot_ensemble_and_lr_range_test_on_uint8_batches(trained, image_folder, tmp_path):
    model, floats, uint8 = trained
    scores = []
    for dm in (floats, uint8):
        snapshots = SnapshotEnsemble(keep=1, dirpath=tmp_path / f"snap-{dm.device_transforms}")
        trainer = quick_trainer()
        trainer.validate(model, datamodule=dm, verbose=False)  # attaches the datamodule, as fit does
        snapshots._save(trainer, 1, 0)
        scores.append(snapshots.evaluate_ensemble(trainer, model))
    assert scores[0] == pytest.approx(scores[1], rel=1e-4)
    curves = []
    # unseeded augmentation (and the random crops of classification's framing) would make the curves differ
    for dm in _pair(image_folder, augment="none", resize="squish", min_scale=1.0):
        torch.manual_seed(0)
        curves.append(lr_find(model, dm, num_it=12, stop_div=False, trainer_kwargs={"accelerator": "cpu"}).losses)
    # equal while the learning rate is sane; near 10 the sweep amplifies float rounding by design
    np.testing.assert_allclose(curves[0][:9], curves[1][:9], rtol=1e-4)


def test_points_normalise_and_still_count_points_out_of_frame(tmp_path):
    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, batch_size=4, num_workers=0, backbone="test_resnet",
                          y_range=[-1.1, 1.1], head="pooled", flip_pairs=None, device_transforms=True)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False)
    seen = []
    model.training_step = (  # the batch as the module receives it
        lambda batch, batch_idx: seen.append(batch[0].dtype) or model.task.loss(model(batch[0]), batch[1]))
    quick_trainer(max_epochs=1).fit(model, datamodule=dm)
    assert seen and set(seen) == {torch.float32}
    assert dm._out_of_frame == [0, 0]  # read and reset at the end of fit


def test_workers_default_to_every_core_but_one_per_process(monkeypatch):
    import lightcycle.data.base as base

    monkeypatch.setattr(base, "available_cores", lambda: 32)
    assert default_num_workers() == 31 and default_num_workers(4) == 7
    monkeypatch.setattr(base, "available_cores", lambda: 2)
    assert default_num_workers() == 1 and default_num_workers(2) == 0
    dm = FolderDataModule(root="x", num_workers=None)
    assert dm.num_workers == 1 and dm.pin_memory == torch.cuda.is_available()
    dm.num_workers = 3
    assert dm.num_workers == 3
