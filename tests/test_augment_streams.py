"""Augmentation's random streams: every DataLoader worker, epoch and seed draws its own, runs with the same
seed draw the same, and the LR range test leaves the training transform's stream as it found it."""

from __future__ import annotations

import lightning as L
import torch

from lightcycle.callbacks.lr_finder import LRFinder
from lightcycle.data import FolderDataModule
from lightcycle.module import VisionModule
from tests.helpers import quick_trainer


def one_picture_loader(image_folder, num_workers: int, batches: int = 2, uint8: bool = True):
    """A loader that serves one training picture again and again, a batch per worker, in order: whatever
    differs between its batches is the augmentation."""
    dm = FolderDataModule(image_folder, size=32, batch_size=2, num_workers=num_workers, backbone="test_resnet",
                          device_transforms=uint8, max_zoom=1.5)
    dm.setup("fit")
    dataset = dm.dataset([dm.train_samples[0]] * (2 * batches), train=True)
    return dm._loader(dataset, shuffle=False, drop_last=False)


def first_batches(loader) -> list[torch.Tensor]:
    return [images for images, _ in loader]


def test_each_worker_draws_its_own_augmentations(image_folder):
    L.seed_everything(0, workers=True, verbose=False)
    worker0, worker1 = first_batches(one_picture_loader(image_folder, num_workers=2))
    assert not torch.equal(worker0, worker1)  # one stream copied into both workers gave equal batches


def test_epochs_differ_and_the_seed_decides_them(image_folder):
    for workers in (0, 2):
        L.seed_everything(0, workers=True, verbose=False)
        loader = one_picture_loader(image_folder, num_workers=workers)
        epoch1, epoch2 = first_batches(loader), first_batches(loader)
        assert not torch.equal(epoch1[0], epoch2[0]), workers
        L.seed_everything(0, workers=True, verbose=False)
        again = one_picture_loader(image_folder, num_workers=workers)
        assert all(torch.equal(a, b) for a, b in zip(epoch1 + epoch2, first_batches(again) + first_batches(again))), workers
        L.seed_everything(1, workers=True, verbose=False)
        other = first_batches(one_picture_loader(image_folder, num_workers=workers))
        assert not torch.equal(epoch1[0], other[0]), workers


class Batches(L.Callback):
    """Keep every training batch's images."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch[0].clone())


def trained_batches(image_folder, *callbacks: L.Callback) -> list[torch.Tensor]:
    """The batches one epoch trains on, from a loader without workers that the LR range test shares."""
    L.seed_everything(0, verbose=False)
    loader = one_picture_loader(image_folder, num_workers=0, batches=3, uint8=False)  # no DataModule normalises
    model = VisionModule(FolderDataModule(image_folder, num_workers=0).make_task(), backbone="test_resnet",
                         pretrained=False, lr=1e-3)
    batches = Batches()
    quick_trainer(max_epochs=1, callbacks=[*callbacks, batches]).fit(model, train_dataloaders=loader)
    return batches.seen


def test_the_lr_range_test_leaves_the_training_augmentations_as_they_were(image_folder):
    plain = trained_batches(image_folder)
    swept = trained_batches(image_folder, LRFinder(num_it=10, apply=False, plot=False))
    assert len(plain) == len(swept) == 3
    assert all(torch.equal(a, b) for a, b in zip(plain, swept))
