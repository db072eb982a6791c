"""Atomic writes: every file lightcycle writes appears whole or not at all.

A run killed mid-write (Ctrl-C, SIGKILL, a full disk) must never leave half a checkpoint, metrics
file, table or cache behind, and two processes writing the same target (two runs in one folder, two
DDP nodes on a shared filesystem) must never write into each other's temp file. So every writer
goes through one recipe: write to a temp name that is unique to this process and call, in the
target's own folder (a rename across filesystems is a copy), flush and fsync it, then `os.replace`
it over the target, which is atomic on POSIX and Windows, and fsync the folder so the rename
survives a power cut. On any error the temp file is removed.

    with atomic_write(path, "w") as f:          # a file object
        f.write(text)
    with atomic_path(path) as tmp:              # a temp path, for writers that want a file name
        torch.onnx.export(model, x, str(tmp))
    with atomic_dir(folder) as tmp:             # a whole folder (caches), renamed into place
        np.save(tmp / "features.npy", array)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import IO, Any, Iterator

from lightcycle.processes import process_running

TEMP_SUFFIX = ".partial"  # every temp name ends so: `.*.partial` finds what a killed writer left
STALE_TEMP_S = 600.0  # a temp file untouched this long, whose writer is gone, was left by a killed writer
_TEMP_PID = re.compile(r"\.(\d+)-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + r"\Z")


def temp_name(path: str | os.PathLike) -> Path:
    """A hidden temp path beside `path`, unique to this process and call (pid + random token).

    It never ends in the target's suffix, so globs like `*.ckpt` or `*.csv` never pick it up.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _create_exclusive(path: Path) -> Path:
    """Create an empty temp file beside `path` with O_CREAT | O_EXCL (which never follows a symlink):
    whatever a writer then opens by that name is this file, never one planted in a shared folder."""
    for _ in range(100):
        tmp = temp_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: cannot create a temp file beside it (every name taken)")


def remove_stale_temps(folder: str | os.PathLike, older_than: float = STALE_TEMP_S) -> list[Path]:
    """Delete the temp files (`.*.<pid>-<token>.partial`) a killed writer left in `folder`: its process
    is gone and the file has not changed for `older_than` seconds (a live writer on another machine
    sharing the folder keeps writing to its file). Only regular files; returns what was deleted."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP_PID.search(entry.name)
        if not entry.name.startswith(".") or match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > older_than and not process_running(int(match.group(1))):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable; best effort (not every filesystem allows it)."""
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


def _fsync_file(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True, _may_be_empty: bool = False) -> Iterator[Path]:
    """Yield a unique temp path beside `path`; when the block succeeds, fsync it and rename it over `path`.

    The temp file exists already (empty, created exclusively): a writer opening it by name, or
    `os.replace`-ing a file over it, writes this file and nothing a symlink planted there points to.
    `fsync=False` when the writer has already synced its own file handle (`atomic_write`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_exclusive(path)
    created = tmp.stat()
    try:
        yield tmp
        now = tmp.stat() if tmp.exists() else None
        untouched = now is not None and now.st_size == 0 and (now.st_ino, now.st_mtime_ns) == (created.st_ino, created.st_mtime_ns)
        if now is None or (untouched and not _may_be_empty):
            raise FileNotFoundError(f"{tmp}: the writer did not write the file it was given")
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a unique temp file beside `path` for writing; on success it is flushed, fsynced and renamed over `path`."""
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_write writes whole files; mode must be 'w' or 'wb', got {mode!r}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, fsync=False, _may_be_empty=True) as tmp:
        with open(tmp, mode.replace("x", "w"), **open_kwargs) as f:  # the file atomic_path created, ours alone
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace `path` atomically with `data` (an encoded picture, say)."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def save_figure(path: str | os.PathLike, figure: Any, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib Figure atomically, in the format its suffix names (png by default)."""
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, **savefig_kwargs)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a unique temp folder beside `path`; on success rename it to `path`.

    A folder cannot be renamed over a non-empty one, so an existing `path` is first moved aside
    (and deleted) when `replace`; with `replace=False` an existing `path` wins (another process
    finished first) and the temp folder is discarded. On error the temp folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        for item in tmp.rglob("*"):
            if item.is_file():
                _fsync_file(item)
        if path.exists():
            if not replace:
                return
            old = temp_name(path)
            os.replace(path, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if replace or not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(path.parent)
