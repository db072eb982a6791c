"""Where a command may write: never over a file it reads, and over another existing file only when asked.

`lightcycle-export ckpt=x.ckpt output=x.ckpt` would replace the checkpoint with the exported model,
and a predictions file named like the CSV of inputs would replace that list; every command that
takes an output path checks it here first, before any work. Files are compared by identity
(`os.path.samefile`: the same inode, however the path is spelt, symlinks and hard links included).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from lightcycle.errors import LightcycleError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether `a` and `b` are one existing file (or folder)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (or cannot be looked at): not the same existing file
        return False


def check_output(
    path: str | os.PathLike, *, reads: Iterable[tuple[str, str | os.PathLike]] = (), overwrite: bool = True,
    setting: str = "output",
) -> Path:
    """Refuse `path` (LightcycleError, one line) when it is one of the files the command `reads`
    (`(setting, path)` pairs, e.g. `("ckpt", ckpt)`), or, with `overwrite=False`, when it exists."""
    path = Path(path)
    for name, read in reads:
        if same_file(path, read):
            raise LightcycleError(
                f"{setting}={path} is the file this command reads ({name}={read}); choose another {setting}="
            )
    _refuse_folder(path, setting)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise LightcycleError(f"{setting}={path} exists; pass overwrite=true to replace it, or choose another {setting}=")
    return path


def check_writable(output: str | os.PathLike, setting: str = "output") -> Path:
    """Refuse, before any work, an output that cannot be written: it is a folder, or its folder cannot
    be created or written to. Probes with a temp file beside it."""
    output = Path(output).expanduser()
    _refuse_folder(output, setting)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise LightcycleError(f"{setting}={output}: cannot write into {output.parent} ({exc.strerror or exc})") from None
    return output


def _refuse_folder(path: Path, setting: str) -> None:
    if path.is_dir() and not path.is_symlink():
        raise LightcycleError(f"{setting}={path} is a folder; name the file to write")
