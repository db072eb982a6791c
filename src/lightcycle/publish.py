"""Build a shared folder once: one process builds it, every other process waits, then reads it.

The caches under `$LIGHTCYCLE_CACHE` (demo data, precomputed activations) are shared by every
process that sees that folder: the DDP ranks of one machine, the nodes of a cluster on a shared
filesystem, two runs started together. Each of them would otherwise build the same folder at the
same time: wasted work at best, a half-written file read at worst. `publish_once` gives the work to
one of them:

- the builder is the process that creates the lock file `.<name>.lock` beside the folder first
  (`O_CREAT | O_EXCL`: atomic on local filesystems and on NFS v3+); it records host, pid and a
  random token, builds into a temp folder and publishes it with `atomic_dir` (one rename), so a
  reader sees the complete folder or nothing;
- every other process polls until the folder is complete. It waits as long as the builder is alive:
  the builder touches the lock every few seconds (a heartbeat), and a waiter takes over only when
  the lock has not changed for `stale_after` seconds by its own clock (a builder killed, or its
  node lost; no clock has to agree across machines), or at once when the lock names a process of
  this host that has exited;
- a builder that fails removes its lock, so a waiter tries in its turn and reports its own error.

Correctness never rests on the lock alone: publishing is `atomic_dir(..., replace=False)`, so even
two builders (a lock broken while its owner was only paused) publish one complete folder, and the
second one's copy is discarded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lightcycle.atomic import atomic_dir, temp_name
from lightcycle.processes import process_running

log = logging.getLogger("lightcycle")

HEARTBEAT_S = 5.0  # the builder touches its lock this often
STALE_AFTER_S = 60.0  # a lock unchanged for this long (seen by the waiter) belongs to a dead builder
POLL_S = 0.5


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file that says who builds `path`: `.<name>.lock` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def publish_once(
    path: str | os.PathLike,
    build: Callable[[Path], None],
    *,
    is_complete: Callable[[Path], bool] | None = None,
    what: str | None = None,
    stale_after: float = STALE_AFTER_S,
    poll: float = POLL_S,
) -> Path:
    """Make sure the folder `path` exists complete, building it with `build(tmp_folder)` in at most one process.

    `is_complete(path)` says whether a published folder is usable (default: it exists); an
    incomplete one (files deleted by hand) is moved aside and rebuilt. Returns `path`.
    """
    path = Path(path)
    complete = is_complete or (lambda p: p.is_dir())
    what = what or str(path)
    lock = lock_path(path)
    if complete(path):
        return path
    mine = _acquire(lock, what, stale_after, poll, done=lambda: complete(path))
    if mine is None:  # published by another process while this one waited
        return path
    with _Heartbeat(lock, mine, HEARTBEAT_S):
        if complete(path):  # published between our check and our lock
            return path
        if path.exists():
            log.warning("%s at %s is incomplete; rebuilding it", what, path)
            _discard(path)
        with atomic_dir(path, replace=False) as tmp:
            build(tmp)
    if not complete(path):
        raise OSError(f"{what} at {path} is incomplete right after building it")
    return path


@contextlib.contextmanager
def held(lock: str | os.PathLike, *, what: str | None = None, stale_after: float = STALE_AFTER_S,
         poll: float = POLL_S) -> Iterator[None]:
    """Run a block while holding the lock file `lock`: a short read-modify-write of a shared file that
    two processes must not interleave. Waits for another holder as `publish_once` does."""
    lock = Path(lock)
    mine = _acquire(lock, what or str(lock), stale_after, poll)
    assert mine is not None
    with _Heartbeat(lock, mine, HEARTBEAT_S):
        yield


def _acquire(lock: Path, what: str, stale_after: float, poll: float,
             done: Callable[[], bool] | None = None) -> str | None:
    """Take `lock` (its token), waiting while a live process holds it and breaking it when its holder
    is gone; None as soon as `done()` says the waiting is over without it."""
    watched: tuple[str, float] | None = None  # (lock content + mtime, when it last changed)
    announced = False
    while True:
        if done is not None and done():
            return None
        mine = _try_lock(lock)
        if mine is not None:
            return mine
        state = _lock_state(lock)
        if state is None:  # released (or broken) between our attempt and now: try again
            continue
        now = time.monotonic()
        if watched is None or watched[0] != state:
            watched = (state, now)
        owner = _owner(state)
        if not announced:
            log.info("waiting for %s: %s holds it", what, _describe(owner))
            announced = True
        if _owner_exited(owner) or now - watched[1] > stale_after:
            log.warning("%s: the process holding it (%s) is gone; taking over", what, _describe(owner))
            _break(lock, state)
            watched = None
            continue
        time.sleep(poll)


# --- the lock file -----------------------------------------------------------------------------------
def _try_lock(lock: Path) -> str | None:
    """Create `lock` exclusively; its token on success, None when another process holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": token}, f)
    return token


def _lock_state(lock: Path) -> str | None:
    """What a waiter watches: the lock's content and mtime (they change with every heartbeat); None if absent."""
    try:
        mtime = lock.stat().st_mtime_ns
        return f"{mtime}:{lock.read_text(encoding='utf-8')}"
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _owner(state: str) -> dict[str, object]:
    try:
        owner = json.loads(state.split(":", 1)[1])
    except (IndexError, ValueError):
        return {}  # written a moment ago, content not there yet
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, object]) -> str:
    return f"pid {owner['pid']} on {owner['host']}" if owner.get("pid") else "another process"


def _owner_exited(owner: dict[str, object]) -> bool:
    """True when the lock names a process of this host that no longer runs."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    return not process_running(pid)


def _break(lock: Path, state: str) -> None:
    """Remove a stale lock: rename it away (atomic), and put it back if it was not the one judged stale."""
    trash = temp_name(lock)
    try:
        os.replace(lock, trash)
    except FileNotFoundError:  # another waiter broke it first
        return
    try:
        taken = trash.read_text(encoding="utf-8")
        if taken != state.split(":", 1)[1]:  # a new builder's lock: give it back unless yet another exists
            try:
                os.link(trash, lock)
            except OSError:
                pass
    finally:
        trash.unlink(missing_ok=True)


class _Heartbeat:
    """Hold the lock while the block runs: touch it every `interval` seconds, remove it at the end."""

    def __init__(self, lock: Path, token: str, interval: float) -> None:
        self.lock, self.token, self.interval = lock, token, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lightcycle-publish-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.lock)
            except OSError:
                pass

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            if json.loads(self.lock.read_text(encoding="utf-8")).get("token") == self.token:
                self.lock.unlink()
        except (OSError, ValueError):
            pass


def _discard(path: Path) -> None:
    """Move a folder aside atomically, then delete it: a reader never sees it half-deleted."""
    trash = temp_name(path)
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
