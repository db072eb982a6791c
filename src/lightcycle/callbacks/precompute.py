"""Precomputed activations (fastai 0.7's `precompute=True`): train the head on cached backbone outputs.

While the backbone is frozen, its output for an image never changes, so running it every epoch is
wasted work: compute it once for the training and validation images (the eval transform: no
augmentation, as in fastai 0.7), store it on disk, and train the head on the stored features. An
epoch then costs a few matrix products instead of a full forward (and, with `train_bn`, backward)
pass through the backbone.

Precompute mode holds while (a) the backbone is frozen — every layer group but the head; a
`GradualUnfreezing` callback in the same Trainer is asked for its plan — and (b) `epochs` has not
run out (`epochs=N` precomputes for the first N epochs, after which the DataModule's augmentation
takes over: fastai 0.7's "head on precomputed activations, then head with augmentation"). It leaves by
itself when either ends, and the next epoch trains on images again. While precomputing, backbone
BatchNorm statistics are not updated (they are part of the frozen computation).

Cache: `<cache_dir>/precompute/<key>/{train,valid}_{features,targets}.npy`, memory-mapped so a large
dataset need not fit in RAM. The key hashes the backbone's name and weights, the image size, the
normalisation, the eval framing and the exact samples (`ImageDataModule.data_signature`: paths, sizes,
modification times and targets of files; a hash of the arrays for ArrayDataModule), so a stale cache
is never read. Files are written into a temporary folder and renamed into place: a killed run leaves no
half-written cache. Under DDP, global rank 0 computes and every rank waits, then reads; on several
nodes with node-local caches (a different `$LIGHTCYCLE_CACHE` folder per machine), one process per
node that cannot see rank 0's copy computes its own (lightcycle.publish: one writer per folder).

The callback talks to the module through `use_precomputed(bool)`, `backbone_frozen()` and `backbone`,
and to the DataModule through `dataset(samples, train=False)`, `train_samples`/`valid_samples`,
`data_signature()` and `serve_features(features)` / `serve_images()` (ImageDataModule has all of them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightcycle.callbacks.dataloaders import reload_dataloaders
from lightcycle.callbacks.unfreeze import GradualUnfreezing
from lightcycle.data.base import batch_transform_of
from lightcycle.data.demo import default_cache_dir
from lightcycle.errors import LightcycleError
from lightcycle.publish import publish_once

log = logging.getLogger("lightcycle")


class FeatureDataset(Dataset):
    """(feature vector, target) pairs read from memory-mapped .npy files."""

    def __init__(self, features: np.ndarray, targets: np.ndarray) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self.features[index])), torch.from_numpy(np.array(self.targets[index]))


class PrecomputedFeatures:
    """The cached features of one (backbone, weights, size, file list): loaders for the DataModule."""

    def __init__(self, folder: Path, batch_size: int, drop_last_train: bool) -> None:
        self.folder = folder
        self.batch_size = batch_size
        self.drop_last_train = drop_last_train

    def dataset(self, split: str) -> FeatureDataset:
        features = np.load(self.folder / f"{split}_features.npy", mmap_mode="r")
        targets = np.load(self.folder / f"{split}_targets.npy", mmap_mode="r")
        return FeatureDataset(features, targets)

    def loader(self, split: str, sampler: Any = None) -> DataLoader:
        train = split == "train"
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and self.drop_last_train,
            num_workers=0,  # reading a memory map is cheaper than starting workers
        )


def cache_key(backbone_name: str, backbone: torch.nn.Module, datamodule: Any) -> str:
    """sha256 over everything that determines the features; any change gives a new cache."""
    digest = hashlib.sha256()
    framing = getattr(datamodule, "framing", None)
    meta = {
        "backbone": backbone_name,
        "size": int(datamodule.size),
        "normalization": repr(getattr(datamodule, "normalization", None)),
        "framing": framing.to_config() if framing is not None else None,  # the eval framing shapes the features
        "data": datamodule.data_signature(),
        "version": 2,
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


class Precompute(L.Callback):
    """Train the head on cached backbone activations while the backbone is frozen.

    Args:
        cache_dir: where feature caches live (default: $LIGHTCYCLE_CACHE or ~/.cache/lightcycle).
        epochs: precompute for at most this many epochs (None = as long as the backbone is frozen).
        batch_size: batch size of the one-off feature computation (default: the DataModule's).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, epochs: int | None = None, batch_size: int | None = None) -> None:
        if epochs is not None and int(epochs) < 0:
            raise LightcycleError(f"precompute.epochs must be >= 0 or null, got {epochs}")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.epochs = None if epochs is None else int(epochs)
        self.batch_size = batch_size
        self.active = False
        self.folder: Path | None = None
        self.seconds_computing = 0.0

    # --- when ------------------------------------------------------------------------------------
    def wants(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> bool:
        """Should `epoch` train on precomputed features?"""
        if self.epochs is not None and epoch >= self.epochs:
            return False
        n_groups = len(pl_module.layer_groups())

        plan = next((c for c in trainer.callbacks if isinstance(c, GradualUnfreezing)), None)
        if plan is not None:
            return plan.trainable_groups(epoch, n_groups) <= 1
        return pl_module.backbone_frozen()

    # --- hooks -----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not all(callable(getattr(pl_module, name, None)) for name in ("use_precomputed", "backbone_frozen")):
            raise LightcycleError("precompute needs a module with `use_precomputed()` and `backbone_frozen()`, like VisionModule")
        if getattr(getattr(pl_module, "task", None), "backbone_kind", "pooled") != "pooled":
            raise LightcycleError(
                "precompute=true works for heads on pooled features (classification, multilabel, points with "
                "head=pooled); dense heads (segmentation U-Net, points head=heatmap) read every feature map"
            )
        dm = trainer.datamodule
        if dm is None or not callable(getattr(dm, "serve_features", None)):
            raise LightcycleError("precompute needs an ImageDataModule (it serves the cached features)")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not any(isinstance(c, GradualUnfreezing) for c in trainer.callbacks):
            # fastai 0.7's precompute=True learner starts frozen: without an unfreezing plan, train the head.
            pl_module.freeze_to(-1)
            log.info("precompute: no unfreeze.milestones, so the backbone stays frozen and only the head trains")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._switch(trainer, pl_module, self.wants(trainer, pl_module, trainer.current_epoch), trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        upcoming = trainer.current_epoch + 1
        if trainer.max_epochs is not None and 0 < trainer.max_epochs <= upcoming:
            return
        self._switch(trainer, pl_module, self.wants(trainer, pl_module, upcoming), upcoming)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:  # final validation, TTA and ensembles look at images
            self._set_mode(trainer, pl_module, None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)

    # --- switching -------------------------------------------------------------------------------
    def _switch(self, trainer: L.Trainer, pl_module: L.LightningModule, want: bool, epoch: int) -> None:
        if want == self.active:
            return
        if want:
            features = self._features(trainer, pl_module)
            log.info("precompute: epoch %d trains the head on cached activations (%s)", epoch, features.folder)
        else:
            features = None
            log.info("precompute: epoch %d trains on images again (backbone unfrozen or precompute.epochs reached)", epoch)
        self._set_mode(trainer, pl_module, features)
        reload_dataloaders(trainer)

    def _set_mode(self, trainer: L.Trainer, pl_module: L.LightningModule, features: PrecomputedFeatures | None) -> None:
        if features is None:
            trainer.datamodule.serve_images()
        else:
            trainer.datamodule.serve_features(features)
        pl_module.use_precomputed(features is not None)
        self.active = features is not None

    def _features(self, trainer: L.Trainer, pl_module: L.LightningModule) -> PrecomputedFeatures:
        dm = trainer.datamodule
        root = self.cache_dir or default_cache_dir()
        key = cache_key(str(pl_module.hparams.get("backbone", "")), pl_module.backbone, dm)
        folder = root / "precompute" / key

        def compute(tmp: Path) -> None:
            start = time.perf_counter()
            self._compute(pl_module, dm, tmp)
            self.seconds_computing = time.perf_counter() - start
            log.info("precompute: activations of %d images in %.1fs", len(dm.train_samples) + len(dm.valid_samples), self.seconds_computing)

        def done(path: Path) -> bool:
            return (path / "done").is_file()

        # Global rank 0 computes while the others wait at the barrier; a node whose cache folder is
        # not rank 0's (node-local caches) then computes its own copy, one process per node.
        if trainer.is_global_zero:
            publish_once(folder, compute, is_complete=done, what="precomputed activations")
        trainer.strategy.barrier("precompute")
        publish_once(folder, compute, is_complete=done, what="precomputed activations")
        self.folder = folder
        return PrecomputedFeatures(folder, int(dm.batch_size), drop_last_train=len(dm.train_samples) > dm.batch_size)

    @torch.inference_mode()
    def _compute(self, pl_module: L.LightningModule, dm: Any, folder: Path) -> None:
        backbone = pl_module.backbone
        was_training = backbone.training
        backbone.eval()
        try:
            for split, samples in (("train", dm.train_samples), ("valid", dm.valid_samples)):
                self._write_split(pl_module, dm, samples, folder, split)
            (folder / "done").write_text("complete\n")
        finally:
            backbone.train(was_training)

    def _write_split(self, pl_module: L.LightningModule, dm: Any, samples: Any, folder: Path, split: str) -> None:
        loader = DataLoader(
            dm.dataset(samples, train=False), batch_size=int(self.batch_size or dm.batch_size), shuffle=False,
            num_workers=dm.num_workers, pin_memory=getattr(dm, "pin_memory", False),
        )
        prepare = batch_transform_of(dm)  # uint8 pixels normalised on the device
        features = targets = None
        offset = 0
        for x, y in loader:
            out = pl_module.backbone(prepare(x.to(pl_module.device, non_blocking=True))).float().cpu().numpy()
            y = y.cpu().numpy()
            if features is None:
                features = np.lib.format.open_memmap(folder / f"{split}_features.npy", "w+", np.float32, (len(samples), *out.shape[1:]))
                targets = np.lib.format.open_memmap(folder / f"{split}_targets.npy", "w+", y.dtype, (len(samples), *y.shape[1:]))
            features[offset : offset + len(out)] = out
            targets[offset : offset + len(y)] = y
            offset += len(out)
        assert features is not None and targets is not None and offset == len(samples)
        features.flush(), targets.flush()

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}
