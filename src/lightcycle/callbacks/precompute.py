"""Precomputed activations (fastai 0.7's `precompute=True`): the callback that trains the head on them.

The algorithm (computing, caching and reading the backbone's outputs) is `lightcycle.precomputed`;
this callback decides when. Precompute mode holds while (a) the backbone is frozen — every layer
group but the head; an `UnfreezingPlan` callback in the same Trainer (`GradualUnfreezing`) is asked
for its plan — and (b) `epochs` has not run out (`epochs=N` precomputes for the first N epochs,
after which the DataModule's augmentation takes over: fastai 0.7's "head on precomputed
activations, then head with augmentation"). It leaves by itself when either ends, and the next epoch
trains on images again. While precomputing, backbone BatchNorm statistics are not updated (they are
part of the frozen computation).

Cache: `<cache_dir>/precompute/<key>/{train,valid}_{features,targets}.npy` (`precomputed.cache_key`),
written into a temporary folder and renamed into place: a killed run leaves no half-written cache.
Under DDP, global rank 0 computes and every rank waits, then reads; on several nodes with node-local
caches (a different `$LIGHTCYCLE_CACHE` folder per machine), one process per node that cannot see
rank 0's copy computes its own (lightcycle.publish: one writer per folder).

The callback talks to the module through `use_precomputed(bool)`, `backbone_frozen()` and `backbone`,
and to the DataModule through `serve_features(features)` / `serve_images()` and what
`precomputed.write_features` reads (`eval_loader`, `train_samples`/`valid_samples`, `data_signature()`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L

from lightcycle.cache import cache_root
from lightcycle.callbacks.dataloaders import reload_dataloaders
from lightcycle.callbacks.interfaces import UnfreezingPlan, find_callback
from lightcycle.errors import LightcycleError
from lightcycle.precomputed import (
    PrecomputedFeatures,
    cache_key,
    is_complete,
    write_features,
)
from lightcycle.publish import publish_once

log = logging.getLogger("lightcycle")


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
        plan = find_callback(trainer, UnfreezingPlan)
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
        if find_callback(trainer, UnfreezingPlan) is None:
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
        root = cache_root(self.cache_dir)
        key = cache_key(str(pl_module.hparams.get("backbone", "")), pl_module.backbone, dm)
        folder = root / "precompute" / key

        def compute(tmp: Path) -> None:
            start = time.perf_counter()
            write_features(pl_module.backbone, dm, tmp, self.batch_size)
            self.seconds_computing = time.perf_counter() - start
            log.info("precompute: activations of %d images in %.1fs", len(dm.train_samples) + len(dm.valid_samples), self.seconds_computing)

        # Global rank 0 computes while the others wait at the barrier; a node whose cache folder is
        # not rank 0's (node-local caches) then computes its own copy, one process per node.
        if trainer.is_global_zero:
            publish_once(folder, compute, is_complete=is_complete, what="precomputed activations")
        trainer.strategy.barrier("precompute")
        publish_once(folder, compute, is_complete=is_complete, what="precomputed activations")
        self.folder = folder
        return PrecomputedFeatures(folder)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}
