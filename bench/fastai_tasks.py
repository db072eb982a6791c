"""fastai's default learner for each task, on a bench/task_sets.py folder, scored like lightcycle scores.

Per task, what a fastai user writes for it (fastai's tutorials), with the bundled ImageNet weights of
efficientnet_lite0 loaded into the body (as bench/setups.py does) instead of downloaded ones:

- classification: `DataBlock(ImageBlock, CategoryBlock)` + `vision_learner`, cross-entropy.
- multilabel: `DataBlock(ImageBlock, MultiCategoryBlock)` + `vision_learner`, BCE with logits.
- segmentation: `DataBlock(ImageBlock, MaskBlock(codes))` + `unet_learner`, cross-entropy (fastai's
  DynamicUnet). unet_learner takes a torchvision-style model function; it receives the timm model with
  its stages as direct children, so the U-Net takes skips at strides 2, 4, 8 and 16, as it does on a resnet.
- points: `DataBlock(ImageBlock, PointBlock)` + `vision_learner(y_range=(-1, 1))` (the head-pose
  tutorial), MSE on coordinates scaled to [-1, 1].

Every one: fastai's default batch size (64), `item_tfms=Resize(size)` (fastai's default crop for the
image-level tasks; squish for masks and points, so every pixel and point is scored), `batch_tfms=
[*aug_transforms(), Normalize]` (fastai's default augmentation, the backbone's statistics), the same
validation split as lightcycle (valid/ or valid.txt), and fastai's default training,
`learn.fine_tune(epochs - 1)` (one frozen epoch, then epochs - 1 unfrozen: the same epoch count).
Predictions on the validation set are scored with lightcycle's own metric code (lightcycle.metrics),
so both tools are measured by the same arithmetic.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import common


def _batch_tfms() -> list[Any]:
    """fastai's default augmentation, then the backbone's (ImageNet) statistics."""
    from fastai.vision.all import Normalize, aug_transforms, imagenet_stats

    return [*aug_transforms(), Normalize.from_stats(*imagenet_stats)]


def _valid_names(root: Path) -> set[str]:
    return set((root / "valid.txt").read_text().split())


def _dataloaders(task: str, root: Path, size: int, workers: int) -> Any:
    from fastai.vision.all import (CategoryBlock, DataBlock, FuncSplitter, GrandparentSplitter, ImageBlock, MaskBlock,
                                   MultiCategoryBlock, PointBlock, Resize, get_image_files, parent_label)

    batch_tfms = _batch_tfms()
    crop, squish = Resize(size), Resize(size, method="squish")
    if task == "classification":
        block = DataBlock((ImageBlock, CategoryBlock), get_items=get_image_files, splitter=GrandparentSplitter(),
                          get_y=parent_label, item_tfms=crop, batch_tfms=batch_tfms)
    elif task == "multilabel":
        with (root / "labels.csv").open() as f:
            tags = {row["image_name"]: row["tags"].split() for row in csv.DictReader(f)}
        valid = {Path(n).stem for n in _valid_names(root)}
        block = DataBlock((ImageBlock, MultiCategoryBlock), get_items=lambda r: sorted((r / "train").iterdir()),
                          splitter=FuncSplitter(lambda p: p.stem in valid), get_y=lambda p: tags[p.stem],
                          item_tfms=crop, batch_tfms=batch_tfms)
    elif task == "segmentation":
        codes = (root / "codes.txt").read_text().split()
        valid = _valid_names(root)
        block = DataBlock((ImageBlock, MaskBlock(codes)), get_items=lambda r: sorted((r / "images").iterdir()),
                          splitter=FuncSplitter(lambda p: p.name in valid),
                          get_y=lambda p: _mask(p.parent.parent / "labels" / f"{p.stem}_P.png"),
                          item_tfms=squish, batch_tfms=batch_tfms)
    elif task == "points":
        with (root / "points.csv").open() as f:
            points = {row["fname"]: [[float(row["x0"]), float(row["y0"])]] for row in csv.DictReader(f)}
        valid = _valid_names(root)
        block = DataBlock((ImageBlock, PointBlock), get_items=lambda r: [r / "images" / n for n in sorted(points)],
                          splitter=FuncSplitter(lambda p: p.name in valid),
                          get_y=lambda p: torch.tensor(points[p.name]), item_tfms=squish, batch_tfms=batch_tfms)
    else:
        raise ValueError(task)
    return block.dataloaders(root, bs=64, num_workers=workers, device="cpu")


def _mask(path: Path) -> Any:
    """The mask's code indices as they are stored (fastai's own PILMask.create would convert a palette
    PNG to luminance, turning indices into grey levels)."""
    import numpy as np
    from fastai.vision.all import PILMask
    from PIL import Image

    with Image.open(path) as image:
        return PILMask.create(np.array(image))


def _flat_efficientnet(pretrained: bool = False, **_: Any) -> nn.Module:
    """timm's efficientnet_lite0 with the bundled weights and its stages as direct children (unet_learner's input)."""
    import timm

    model = timm.create_model(common.BACKBONE, pretrained=False)
    common.load_bundled(model)
    return nn.Sequential(model.conv_stem, model.bn1, *model.blocks, model.conv_head, model.bn2, model.global_pool,
                         model.classifier)


def _learner(task: str, dls: Any) -> Any:
    from fastai.vision.all import unet_learner, vision_learner

    if task == "segmentation":
        return unet_learner(dls, _flat_efficientnet, pretrained=False, normalize=False)
    extra = {"y_range": (-1, 1)} if task == "points" else {}
    learn = vision_learner(dls, common.BACKBONE, pretrained=False, normalize=False, **extra)
    common.load_bundled(common.fastai_timm_body(learn))
    return learn


def _score(task: str, root: Path, dls: Any, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Validation metrics with lightcycle's metric classes, from fastai's activated predictions."""
    from lightcycle.metrics import FBetaMulti, MeanIoU, PixelAccuracy

    if task == "classification":
        return {"val_error_rate": float((preds.argmax(1) != targets).float().mean())}
    if task == "multilabel":
        f2 = FBetaMulti(2.0, 0.5)
        f2.update(preds, targets)
        return {"val_fbeta": float(f2.compute())}
    if task == "segmentation":
        codes = (root / "codes.txt").read_text().split()
        void = codes.index("void") if "void" in codes else None
        miou, acc = MeanIoU(len(codes), void), PixelAccuracy(len(codes), void)
        miou.update(preds, targets)
        acc.update(preds, targets)
        return {"val_miou": float(miou.compute()), "val_pixel_accuracy": float(acc.compute())}
    # points: fastai scales x to 2x/W - 1 of the (squished) image, so x = (p + 1) W / 2 in original pixels
    from PIL import Image

    sizes = torch.tensor([Image.open(p).size for p in dls.valid_ds.items], dtype=torch.float32)
    pred = (preds.reshape(len(preds), -1, 2) + 1) * sizes[:, None] / 2
    true = (targets.reshape(len(targets), -1, 2) + 1) * sizes[:, None] / 2
    return {"val_distance_px": float((pred - true).norm(dim=-1).mean())}


def run(task: str, root: Path, size: int, epochs: int, workers: int, seed: int) -> dict[str, Any]:
    """Train fastai's default learner for `task` on `root`; returns its metrics and wall seconds."""
    from fastai.torch_core import set_seed

    set_seed(seed, reproducible=False)
    start = time.perf_counter()
    dls = _dataloaders(task, root, size, workers)
    learn = _learner(task, dls)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs - 1)
        preds, targets = learn.get_preds(dl=dls.valid)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "batch_size": 64, **_score(task, root, dls, preds, targets)}
