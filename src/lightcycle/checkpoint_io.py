"""Checkpoints that a killed run can never leave half-written.

Lightning's default writer opens the target file and writes into it (or, inside an fsspec
transaction, writes a temp file in the system temp dir and *copies* it over when that is another
filesystem). A run killed mid-write then leaves a truncated `last.ckpt`, and `resume=true` fails
on exactly the file it needs. `AtomicCheckpointIO` writes a temp file next to the target, flushes
it to disk and renames it over the target with `os.replace`, which is atomic on POSIX and Windows:
readers see the old checkpoint or the new one, never a mixture.

The temp name is unique per process (`lightcycle.atomic`), so two processes saving into one folder
never write into the same temp file. `lightcycle-train` always uses it; from Python: `L.Trainer(plugins=[AtomicCheckpointIO()])`.

Reading goes through `read_checkpoint`: `weights_only=True` always, and a file that is truncated or
would need to run code to load is refused in one line.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightcycle.atomic import atomic_write
from lightcycle.errors import LightcycleError, brief_cause


def read_checkpoint(path: str | os.PathLike, what: str = "") -> dict[str, Any]:
    """Open a checkpoint the safe way (`weights_only=True`: tensors and plain data, no code run; mmap:
    tensors are not read yet), turning a truncated, foreign or code-carrying file into one line
    instead of torch's pages of advice (which suggest the unsafe `weights_only=False`)."""
    prefix = f"{what}: " if what else ""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        cause = brief_cause(exc, 120)
        if "weights_only" in cause:  # torch's hint names the unsafe way out: never pass it on
            cause = type(exc).__name__
        raise LightcycleError(
            f"{prefix}cannot load checkpoint {path} with weights_only=True: truncated, not a checkpoint, "
            f"or it holds objects other than tensors and plain data ({cause})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise LightcycleError(f"{prefix}{path} is not a checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` through a unique temp file in the same folder and an atomic rename."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves to local paths are atomic (temp file + fsync + os.replace).

    Remote paths (s3://, gs://, ...) keep Lightning's own writer: object stores replace whole
    objects anyway.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        save_atomic(checkpoint, path)


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """`plugins` (None, one plugin or a list) plus an AtomicCheckpointIO, unless one CheckpointIO is already there."""
    if plugins is None:
        plugins = []
    elif not isinstance(plugins, (list, tuple)):
        plugins = [plugins]
    plugins = list(plugins)
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins
