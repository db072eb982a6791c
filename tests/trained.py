"""Tiny checkpoints of every task for prediction and export tests: test_resnet, size 32, one epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np

from lightcycle.module import VisionModule


def make_classification(root: Path) -> Path:
    from tests.conftest import CLASSES, make_image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("valid", 2)):
        for i, cls in enumerate(CLASSES):
            for j in range(n):
                make_image(root / split / cls / f"{cls}_{j}.jpg", i, rng)
    return root


def datamodule(task: str, root: Path):
    """A small DataModule of `task` (classification, multilabel, segmentation, points) under `root`."""
    from lightcycle.data import FolderDataModule, MultiLabelDataModule, PointsDataModule, SegmentationDataModule

    common = dict(size=32, batch_size=6, num_workers=0, backbone="test_resnet")
    if task == "classification":
        return FolderDataModule(make_classification(root / "data"), **common)
    if task == "multilabel":
        from tests.test_multilabel import make_planet

        return MultiLabelDataModule(make_planet(root / "data", n=12, n_valid=4), **common)
    if task == "segmentation":
        from tests.test_segmentation import make_camvid

        return SegmentationDataModule(make_camvid(root / "data"), void_code="void", **common)
    if task == "points":
        from tests.test_points import make_biwi

        return PointsDataModule(make_biwi(root / "data"), y_range=[-1.1, 1.1], head="pooled", flip_pairs=None, **common)
    raise ValueError(task)


def train_checkpoint(task: str, root: Path, epochs: int = 1) -> tuple[Path, object]:
    """Fit one epoch and save `root/checkpoints/last.ckpt` the way lightcycle-train does; returns (path, datamodule)."""
    dm = datamodule(task, root)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", lr=1e-2)
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, default_root_dir=root,
    )
    trainer.fit(model, datamodule=dm)
    path = root / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path, dm
