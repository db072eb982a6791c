"""Checkpoints that a killed run can never leave half-written.

Lightning's default writer opens the target file and writes into it (or, inside an fsspec
transaction, writes a temp file in the system temp dir and *copies* it over when that is another
filesystem). A run killed mid-write then leaves a truncated `last.ckpt`, and `resume=true` fails
on exactly the file it needs. `AtomicCheckpointIO` writes a temp file next to the target, flushes
it to disk and renames it over the target with `os.replace`, which is atomic on POSIX and Windows:
readers see the old checkpoint or the new one, never a mixture.

`lightcycle-train` always uses it; from Python: `L.Trainer(plugins=[AtomicCheckpointIO()])`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO


def partial_path(path: str | os.PathLike) -> Path:
    """The temp file a save of `path` writes first: hidden, same folder, not matching `*.ckpt`."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new file); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
