"""Moving a user's files without ever overwriting or losing one, and the lock that keeps cleaners apart.

Every move the cleaner makes (an image set aside, an image into its new class folder, a file put back
by undo) goes through `move_file`: the target name must be free (a hard link fails when it is not,
which also holds against another process racing for the name), and a move to another filesystem
copies, checks the copy's hash, and only then unlinks the source.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from lightcycle.atomic import atomic_path, fsync_dir
from lightcycle.digest import file_sha256
from lightcycle.errors import LightcycleError, printable
from lightcycle.publish import held

REMOVED_DIR = ".lightcycle-removed"  # under data.root: where removed files go, by apply time and relative path
LOCK_NAME = ".lightcycle-clean.lock"  # under data.root: one apply or undo at a time on that root


@contextlib.contextmanager
def cleaning_lock(root: Path) -> Iterator[None]:
    """Hold `root`'s cleaning lock: another apply or undo on the same data (another request, another
    lightcycle-clean process) waits until this one has finished, so their moves never interleave."""
    lock = held(root / LOCK_NAME, what=f"the cleaning lock of {printable(root)}")
    try:
        lock.__enter__()
    except OSError as exc:  # a read-only data folder: nothing can be moved inside it either
        raise LightcycleError(f"data.root {printable(root)}: cannot write there ({exc.strerror or type(exc).__name__}), "
                              "and cleaning moves files inside it") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def free_name(target: Path) -> Path:
    """`target`, or `name-1.ext`, `name-2.ext`, ... : the first name not taken in its folder."""
    if not os.path.lexists(target):
        return target
    n = 1
    while True:
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def move_file(source: Path, target: Path) -> None:
    """Move `source` to `target`, never replacing anything (FileExistsError if `target` exists)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=False)  # fails if the name is taken, atomically; a link stays a link
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            _copy_across(source, target)
        elif os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        else:  # no hard links here (some network or FAT filesystems): a rename after the check
            os.rename(source, target)
            fsync_dir(target.parent)
            return
    os.unlink(source)
    fsync_dir(target.parent)
    fsync_dir(source.parent)


def _copy_across(source: Path, target: Path) -> None:
    """Copy `source` to a free `target` on another filesystem, verified by hash before the source goes."""
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "file exists", str(target))
    with atomic_path(target) as tmp:
        shutil.copy2(source, tmp)
        if file_sha256(tmp) != file_sha256(source):
            raise OSError(f"{printable(target)}: the copy differs from {printable(source)}")


def prune_empty(folder: Path, stop: Path) -> list[Path]:
    """Remove `folder` and then its parents while they are empty, up to (not including) `stop`; returns them."""
    removed = []
    folder, stop = Path(os.path.normpath(folder)), Path(os.path.normpath(stop))
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            break
        removed.append(folder)
        folder = folder.parent
    return removed
