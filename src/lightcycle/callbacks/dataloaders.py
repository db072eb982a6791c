"""Make the fit loop build fresh dataloaders before it next uses them.

Callbacks that change what the DataModule serves mid-fit (a new image size, cached features instead
of images) need the loop to ask for new loaders. Lightning's public switch,
`reload_dataloaders_every_n_epochs`, rebuilds every epoch; this rebuilds exactly once, on every rank.
"""

from __future__ import annotations

import lightning as L


def reload_dataloaders(trainer: L.Trainer) -> None:
    """Have the fit loop call `train_dataloader()` / `val_dataloader()` again before they are next used.

    Lightning 2.x re-requests a loop's dataloaders when its combined loader is unset; the old
    fetcher is torn down first so persistent workers of the old loader shut down now.
    """
    fit_loop = trainer.fit_loop
    val_loop = fit_loop.epoch_loop.val_loop
    if not (hasattr(fit_loop, "_combined_loader") and hasattr(val_loop, "_combined_loader")):
        # Unknown Lightning internals: fall back to the public (but every-epoch) reload switch.
        trainer.reload_dataloaders_every_n_epochs = 1
        return
    for loop in (fit_loop, val_loop):
        fetcher = getattr(loop, "_data_fetcher", None)
        if fetcher is not None:
            fetcher.teardown()
            loop._data_fetcher = None
        loop._combined_loader = None
