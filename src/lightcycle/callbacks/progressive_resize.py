"""Progressive resizing: train on small images first, then larger ones (fast.ai lesson 2 / DAWNBench).

Small images make the early epochs several times cheaper while the network learns coarse features;
the last epochs at full size recover the accuracy. The schedule maps epochs to sizes, e.g.
`{0: 64, 3: 96, 6: 128}`: epochs 0-2 at 64 px, 3-5 at 96 px, 6+ at 128 px. Epochs before the first key
keep the DataModule's own `size`.

The DataModule builds its transforms from `datamodule.size` when a dataloader is requested, so a size
change is: set `size` (and optionally `batch_size`), then have the fit loop request fresh train and
validation dataloaders before the next epoch. That happens on every rank (no rank-zero gating), so each
DDP process rebuilds its own loader with its own distributed sampler. Validation of an epoch runs at
that epoch's size; the final `trainer.validate` after fit runs at the last size.

The DataModule must expose `size` and `batch_size` attributes (lightcycle's ImageDataModule does).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import lightning as L

from lightcycle.callbacks.dataloaders import reload_dataloaders
from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")


def parse_sizes(sizes: Mapping[Any, Any]) -> dict[int, int]:
    """Validate an epoch -> size schedule: epochs >= 0, sizes >= 8 and increasing with the epoch."""
    try:
        parsed = {int(epoch): int(size) for epoch, size in dict(sizes).items()}
    except (TypeError, ValueError) as exc:
        raise LightcycleError(
            f"resize.sizes must map epochs to pixel sizes like 'resize.sizes={{0:64,3:96}}' (quoted), got {sizes!r}") from exc
    if not parsed:
        raise LightcycleError("resize.sizes is empty: pass e.g. 'resize.sizes={0:64,3:96,6:128}' (quoted), or null to switch it off")
    ordered = sorted(parsed.items())
    if ordered[0][0] < 0:
        raise LightcycleError(f"resize.sizes: epochs must be >= 0, got {ordered[0][0]}")
    small = [s for _, s in ordered if s < 8]
    if small:
        raise LightcycleError(f"resize.sizes: sizes must be at least 8 pixels, got {small}")
    values = [s for _, s in ordered]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise LightcycleError(f"resize.sizes: sizes must increase with the epoch, got {dict(ordered)}")
    return dict(ordered)


class ProgressiveResize(L.Callback):
    """Change the DataModule's image size at given epochs and rebuild the dataloaders.

    Args:
        sizes: epoch -> image size (pixels, square).
        scale_batch: scale the batch size by (first size / size)^2 so memory per batch stays that of
            the first stage; `data.batch_size` is the batch size at the first size in `sizes`. The
            fit's plan counts the changing number of batches per epoch (`planned_train_batches`).
    """

    def __init__(self, sizes: Mapping[Any, Any], scale_batch: bool = False) -> None:
        self.sizes = parse_sizes(sizes)
        self.scale_batch = bool(scale_batch)
        self.size: int | None = None  # what the datamodule currently serves
        self.batch_size: int | None = None
        self._base_batch_size: int | None = None
        self._datamodule: Any = None

    # --- the plan ---------------------------------------------------------------------------------
    def size_at(self, epoch: int) -> int | None:
        """Image size for `epoch`; None before the first key (keep the DataModule's size)."""
        current = None
        for start, size in self.sizes.items():
            if start <= epoch:
                current = size
        return current

    def batch_size_for(self, size: int) -> int:
        """Batch size at `size`: the base one, or scaled by (first size / size)^2 with scale_batch."""
        assert self._base_batch_size is not None
        if not self.scale_batch:
            return self._base_batch_size
        first = next(iter(self.sizes.values()))
        return max(1, int(self._base_batch_size * (first / size) ** 2))

    # --- applying it --------------------------------------------------------------------------------
    def _set(self, size: int | None) -> bool:
        """Point the datamodule at `size`; True when that changed what its loaders will serve."""
        dm = self._datamodule
        if size is None or dm is None:
            return False
        batch_size = self.batch_size_for(size)
        changed = (dm.size, dm.batch_size) != (size, batch_size)
        dm.size, dm.batch_size = size, batch_size
        self.size, self.batch_size = size, batch_size
        return changed

    def _change(self, trainer: L.Trainer, epoch: int, why: str) -> None:
        if self._set(self.size_at(epoch)):
            log.info("resize: %s: image size %d, batch size %d", why, self.size, self.batch_size)
            reload_dataloaders(trainer)

    # --- Lightning hooks ------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before the first dataloader is built (Lightning builds it to size the LR schedule)."""
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "size") or not hasattr(dm, "batch_size"):
            raise LightcycleError("resize.sizes needs a DataModule with `size` and `batch_size` attributes (ImageDataModule)")
        self._datamodule = dm
        if self._base_batch_size is None:
            self._base_batch_size = int(dm.batch_size)
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            late = [e for e in self.sizes if e >= max_epochs]
            if late:
                log.warning("resize.sizes: epochs %s are at or beyond max_epochs=%d and will never be used", late, max_epochs)
        if self.size is None:
            self._set(self.size_at(0))
        else:  # restored from a checkpoint before setup (Python use): serve the restored size
            self._set(self.size)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On resume the epoch is known only now; normally this is a no-op.
        self._change(trainer, trainer.current_epoch, "resume")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._datamodule is not None:
            pl_module.log("image_size", float(self._datamodule.size), on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Switch before the fit loop requests the next epoch's loaders; never past the last epoch,
        # so the final validation runs at the size the model last trained at.
        upcoming = trainer.current_epoch + 1
        if trainer.max_epochs is not None and 0 < trainer.max_epochs <= upcoming:
            return
        self._change(trainer, upcoming, f"epoch {upcoming + 1}")  # counted from 1, as the epoch log

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "batch_size": self.batch_size, "base_batch_size": self._base_batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.size, self.batch_size = state_dict.get("size"), state_dict.get("batch_size")
        self._base_batch_size = state_dict.get("base_batch_size", self._base_batch_size)
        if self.size is not None and self._datamodule is not None and self._base_batch_size is not None:
            self._set(int(self.size))

    # --- scale_batch: epochs of different lengths, for the fit's plan -----------------------------
    def planned_train_batches(self, trainer: L.Trainer) -> list[int] | None:
        """Training batches of every epoch when scale_batch changes them (None otherwise).

        Lightning sizes a fit as max_epochs x (batches of the first epoch); with scale_batch later
        epochs have more, smaller batches, so the plan (lightcycle.plan) asks here instead.
        """
        dm, max_epochs = self._datamodule, trainer.max_epochs
        if not self.scale_batch or dm is None or not max_epochs or max_epochs < 1:
            return None
        saved = (dm.size, dm.batch_size, self.size, self.batch_size)
        try:
            lengths = []
            for epoch in range(max_epochs):
                size = self.size_at(epoch)
                dm.size, dm.batch_size = (saved[0], saved[1]) if size is None else (size, self.batch_size_for(size))
                lengths.append(len(dm.train_dataloader()))
        finally:
            dm.size, dm.batch_size, self.size, self.batch_size = saved
        return lengths
