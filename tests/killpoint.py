"""A callback for tests that kill a real `lightcycle-train` process at an exact training step.

Added on the command line with `+callbacks.killpoint._target_=tests.killpoint.PauseOnce`: at the
start of global step `step` it writes `marker` and sleeps, so the test can SIGKILL the process at a
known point mid-epoch instead of racing it. When `marker` exists (the resumed run) it does nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class PauseOnce(L.Callback):
    def __init__(self, step: int, marker: str, seconds: float = 300.0) -> None:
        self.step, self.marker, self.seconds = int(step), Path(marker), float(seconds)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.step or self.marker.exists():
            return
        tmp = self.marker.with_name(self.marker.name + ".tmp")
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, self.marker)
        time.sleep(self.seconds)


class RecordCheckpointIO(L.Callback):
    """Write the class name of the trainer's CheckpointIO to `path` (what `lightcycle-train` wired in)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer, pl_module):
        self.path.write_text(type(trainer.strategy.checkpoint_io).__name__)


class DiskFull(L.Callback):
    """From the end of training epoch `epoch` on, every torch.save fails half-way with ENOSPC, as on
    a disk that fills up while a checkpoint is written."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = int(epoch)

    def on_train_epoch_end(self, trainer, pl_module):
        import errno

        import torch

        def full(obj, f, *args, **kwargs):
            f.write(b"PK\x03\x04 a few bytes")
            raise OSError(errno.ENOSPC, "No space left on device")

        if trainer.current_epoch >= self.epoch:
            torch.save = full
