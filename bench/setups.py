"""How each contender is set up, identically, for the benchmarks on the demo JPEG folder.

- lightcycle: `FolderDataModule(demo="classification", augment="side_on", device_transforms=True)` (uint8
  batches normalised after the transfer, as lightcycle-train's data config) + `VisionModule(backbone=
  "efficientnet_lite0", pretrained="bundled")` in the Trainer that lightcycle-train's own code builds from
  its default config (TensorBoard logger, layer-group LR/momentum monitor, epoch log, divergence guard).
- fastai: `DataBlock(ImageBlock, CategoryBlock)` over the *same files and split*, `Resize(size)` per item
  (the demo images already are 64 px, like lightcycle's resize), `aug_transforms(max_rotate=10,
  max_zoom=1.1, max_lighting=0.2, max_warp=0)` + `Normalize` (the backbone's ImageNet statistics) per batch
  — lightcycle's side_on preset (flip, rotate +-10, zoom 1-1.1, lighting 0.2, each p=0.75; no warp) —
  and `vision_learner(dls, "efficientnet_lite0", pretrained=False)` with the bundled ImageNet weights
  loaded into its timm body: the same network (timm body, concat pooling, BN-dropout-linear head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import lightning as L
import torch

from lightcycle.data import FolderDataModule
from lightcycle.module import VisionModule

LR = 3e-3


def lightcycle_trainer(out_dir: str, callbacks: list[L.Callback], checkpoints: bool = False, **trainer_kwargs: Any) -> L.Trainer:
    """The Trainer lightcycle-train builds from its default config (trainer=cpu, no progress bar),
    plus `callbacks`; `trainer_kwargs` override trainer settings (max_epochs, limit_*_batches, ...)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lightcycle.run import build, build_trainer, config_callbacks, config_dir

    overrides = [f"paths.output_dir={out_dir}", "trainer=cpu", "trainer.enable_progress_bar=false"]
    if not checkpoints:
        overrides += ["callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    logger = build(cfg.logger)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.update(enable_model_summary=False, **trainer_kwargs)
    return build_trainer(trainer_cfg, config_callbacks(cfg, logger) + callbacks, logger)


def lightcycle_data(size: int, batch_size: int, workers: int, train_images: int | None, valid_images: int | None,
                    augment: str = "side_on") -> FolderDataModule:
    """The demo classification data, optionally cut to the first N train / valid images (same cut for fastai)."""
    # squish without a random-resized crop, as measured: fastai's side has none either (aug_transforms'
    # min_scale=1), and on the demo's square pictures classification's default crop is the same as squish
    dm = FolderDataModule(demo="classification", size=size, batch_size=batch_size, num_workers=workers,
                          augment=augment, backbone=common.BACKBONE, seed=0, resize="squish", min_scale=1.0,
                          device_transforms=True)
    dm.prepare_data()
    dm.setup("fit")
    if train_images:
        dm.train_samples = subset(dm.train_samples, train_images)
    if valid_images:
        dm.valid_samples = subset(dm.valid_samples, valid_images)
    return dm


def subset(samples: list[Any], n: int) -> list[Any]:
    """Every k-th sample, so each class stays represented (the demo lists files class by class)."""
    step = max(1, len(samples) // n)
    return list(samples[::step][:n])


def lightcycle_model(dm: FolderDataModule, seed: int = 0) -> VisionModule:
    torch.manual_seed(seed)
    return VisionModule(dm.make_task(), backbone=common.BACKBONE, pretrained="bundled", lr=LR)


def fastai_dls(dm: FolderDataModule, augment: bool = True) -> Any:
    """fastai DataLoaders over exactly the files, split, size, batch size and workers of `dm`."""
    from fastai.vision.all import (CategoryBlock, DataBlock, FuncSplitter, ImageBlock, Normalize, Resize,
                                   aug_transforms, parent_label)

    train = [Path(s.path) for s in dm.train_samples]
    valid = [Path(s.path) for s in dm.valid_samples]
    valid_set = set(valid)
    batch_tfms = []
    if augment:
        batch_tfms += aug_transforms(size=dm.size, max_rotate=10.0, min_zoom=1.0, max_zoom=dm.max_zoom,
                                     max_lighting=0.2, max_warp=0.0, p_affine=0.75, p_lighting=0.75)
    batch_tfms.append(Normalize.from_stats(list(dm.normalization.mean), list(dm.normalization.std)))
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda _: train + valid,
                      splitter=FuncSplitter(lambda p: p in valid_set), get_y=parent_label,
                      item_tfms=Resize(dm.size, method="squish"), batch_tfms=batch_tfms)
    return block.dataloaders(dm.resolve_root(), bs=dm.batch_size, num_workers=dm.num_workers, device="cpu")


def fastai_learner(dls: Any, seed: int = 0) -> Any:
    """vision_learner on efficientnet_lite0 with the bundled ImageNet weights in its timm body, unfrozen
    (as lightcycle's default recipe); callers turn the progress bar off with `learn.no_bar()`."""
    from fastai.vision.all import accuracy, vision_learner

    torch.manual_seed(seed)
    learn = vision_learner(dls, common.BACKBONE, pretrained=False, normalize=False, metrics=accuracy)
    common.load_bundled(common.fastai_timm_body(learn))
    return learn

