"""Precomputed activations: same numbers as running the frozen backbone, cached once, never stale."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch

from lightcycle.callbacks import GradualUnfreezing, Precompute
from lightcycle.precomputed import cache_key
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule


class InputTrace(L.Callback):
    """epoch -> set of input ranks seen (2 = feature vectors, 4 = images)."""

    def __init__(self) -> None:
        self.ranks: dict[int, set[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ranks.setdefault(trainer.current_epoch, set()).add(batch[0].ndim)


def _setup(root: Path, **dm_args) -> tuple[FolderDataModule, VisionModule]:
    L.seed_everything(0)
    dm = FolderDataModule(root=root, size=32, batch_size=8, num_workers=0, backbone="test_resnet", **dm_args)
    dm.setup("fit")
    return dm, VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)


def _fit(dm, model, callbacks, epochs=1):
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    return trainer


def test_head_on_cached_activations_matches_the_image_path(image_folder, tmp_path):
    dm, model = _setup(image_folder, augment="none")
    trace = InputTrace()
    pre = Precompute(cache_dir=tmp_path / "cache")
    trainer = _fit(dm, model, [pre, trace], epochs=2)
    assert trace.ranks == {0: {2}, 1: {2}}  # both epochs trained on feature vectors
    on_features = float(trainer.callback_metrics["val_loss"])
    assert dm.precomputed is None and not model._precomputed  # left precompute mode at the end
    on_images = trainer.validate(model, datamodule=dm, verbose=False)[0]["val_loss"]
    assert on_images == pytest.approx(on_features, rel=1e-5, abs=1e-6)
    # the backbone never changed: only the head (and nothing else) trained
    L.seed_everything(0)
    fresh = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    assert all(torch.equal(a, b) for a, b in zip(fresh.backbone.state_dict().values(), model.backbone.state_dict().values()))


def test_cache_is_reused_and_never_stale(image_folder, tmp_path):
    cache = tmp_path / "cache"
    dm, model = _setup(image_folder, augment="none")
    first = Precompute(cache_dir=cache)
    _fit(dm, model, [first])
    assert first.seconds_computing > 0 and (first.folder / "done").is_file()

    dm, model = _setup(image_folder, augment="none")
    again = Precompute(cache_dir=cache)
    _fit(dm, model, [again])
    assert again.folder == first.folder and again.seconds_computing == 0  # read, not recomputed

    key = cache_key("test_resnet", model.backbone, dm)
    touched = dm.train_samples[0].path
    os.utime(touched, ns=(1, 1))  # an edited image must not reuse old activations
    assert cache_key("test_resnet", model.backbone, dm) != key
    key = cache_key("test_resnet", model.backbone, dm)
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)  # other weights: other activations
    assert cache_key("test_resnet", model.backbone, dm) != key
    key = cache_key("test_resnet", model.backbone, dm)
    dm.size = 48  # other image size
    assert cache_key("test_resnet", model.backbone, dm) != key


def test_half_written_cache_is_rebuilt(image_folder, tmp_path):
    dm, model = _setup(image_folder, augment="none")
    key = cache_key("test_resnet", model.backbone, dm)
    broken = tmp_path / "cache" / "precompute" / key
    broken.mkdir(parents=True)
    (broken / "train_features.npy").write_bytes(b"\x93NUMPY half")  # killed mid-write: no `done`
    pre = Precompute(cache_dir=tmp_path / "cache")
    _fit(dm, model, [pre])
    assert pre.seconds_computing > 0 and (broken / "done").is_file()


def test_leaves_precompute_when_epochs_run_out_or_groups_unfreeze(image_folder, tmp_path):
    dm, model = _setup(image_folder)  # augmentation on: it takes over after the precomputed epoch
    trace = InputTrace()
    _fit(dm, model, [Precompute(cache_dir=tmp_path / "c", epochs=1), trace], epochs=2)
    assert trace.ranks == {0: {2}, 1: {4}}

    dm, model = _setup(image_folder)
    trace = InputTrace()
    _fit(dm, model, [GradualUnfreezing(milestones=[1]), Precompute(cache_dir=tmp_path / "c"), trace], epochs=2)
    assert trace.ranks == {0: {2}, 1: {4}}
    assert all(p.requires_grad for p in model.parameters())


def test_dense_heads_are_refused(tmp_path):
    from lightcycle.tasks import SegmentationTask

    model = VisionModule(SegmentationTask(["bg", "fg"]), backbone="test_resnet", pretrained=False)
    with pytest.raises(LightcycleError, match="pooled"):
        model.use_precomputed(True)
    with pytest.raises(LightcycleError, match="precompute.epochs"):
        Precompute(epochs=-1)
