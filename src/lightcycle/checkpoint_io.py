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

import errno
import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightcycle.atomic import atomic_write, remove_stale_temps
from lightcycle.errors import LightcycleError, brief_cause

log = logging.getLogger(__name__)


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
    objects anyway. The first save into a folder deletes the temp files that killed saves left
    there (`remove_stale_temps`). A save the disk refuses (full, read-only, over quota) stops the
    run with one line; the checkpoint it would have replaced is intact.
    """

    def __init__(self) -> None:
        super().__init__()
        self._swept: set[str] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        path = Path(path)
        folder = os.path.abspath(path.parent)
        if folder not in self._swept:
            self._swept.add(folder)
            for old in remove_stale_temps(folder):
                log.info("removed %s, left by a checkpoint save that was killed", old)
        try:
            save_atomic(checkpoint, path)
        except OSError as exc:
            raise LightcycleError(save_failure(path, exc)) from None


def save_failure(path: Path, exc: OSError) -> str:
    """One line for a checkpoint the disk would not take: what failed, that nothing was lost, what to do."""
    kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
    then = "continue with resume=true" if (path.parent / "last.ckpt").is_file() else "start again with overwrite=true"
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EROFS: "make the folder writable",
           errno.EACCES: "make the folder writable", errno.EPERM: "make the folder writable"}.get(exc.errno or 0)
    advice = f"; {fix}, then {then}" if fix else ""
    return f"cannot save checkpoint {path}: {exc.strerror or type(exc).__name__} ({kept}){advice}"


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
