"""The run folder: one run per folder, one process per run.

A run writes metrics.json, checkpoints/ and tensorboard/ into its folder. Training a second run
into the same folder would replace the first one's metrics, let ModelCheckpoint delete its best
checkpoint and mix both runs' TensorBoard events, so `claim_run_dir` refuses a folder that holds
another run's outputs unless the run continues it (`resume=true`) or the user asked for
`overwrite=true`, which first moves the old run into `<dir>/previous-<n>/`. Only lightcycle's own
outputs count as a run: Hydra writes `.hydra/` and the log file into every run dir it opens.

Two processes in one live folder would overwrite each other's checkpoints, so the folder has a
lock: the file `lightcycle.lock` holding the pid, host, start time and a random token of the
process that runs there. It is created atomically (a complete temp file hard-linked to the name,
which fails when the name exists), removed when the run ends (also on exceptions and Ctrl-C, via
atexit), and taken over with a log line when it names a process on this host that is no longer
running (SIGKILL, a power cut). A lock of another host cannot be checked and is never taken over.

Under DDP and multi-node launches only global rank 0 (lightcycle.ranks) claims the folder; the
other processes of the run neither take the lock nor are refused by it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from lightcycle.atomic import TEMP_SUFFIX, fsync_dir, temp_name
from lightcycle.errors import LightcycleError
from lightcycle.processes import process_running
from lightcycle.ranks import is_global_zero

log = logging.getLogger("lightcycle")

LOCK_NAME = "lightcycle.lock"
MAX_PID = 2**31 - 1  # pid_t is a 32-bit int: a larger pid in a lock file names no process
PREVIOUS = re.compile(r"previous-(\d+)")  # where overwrite=true moves an old run


# --- what a previous run left ----------------------------------------------------------------------
def previous_run_outputs(run_dir: str | os.PathLike) -> list[Path]:
    """lightcycle outputs of an earlier run in `run_dir`: metrics.json, checkpoints, TensorBoard events."""
    run_dir = Path(run_dir)
    found = [run_dir / "metrics.json"] if (run_dir / "metrics.json").is_file() else []
    if (run_dir / "checkpoints").is_dir():
        found += sorted(p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.is_file())
    if (run_dir / "tensorboard").is_dir():
        found += sorted(p for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*") if p.is_file())
    return found


def _describe(outputs: list[Path], run_dir: Path) -> str:
    ckpts = [p.name for p in outputs if p.suffix == ".ckpt"]
    events = sum(p.name.startswith("events.out.tfevents.") for p in outputs)
    parts = ["metrics.json"] if run_dir / "metrics.json" in outputs else []
    if ckpts:
        shown = ", ".join(ckpts[:3]) + (f" and {len(ckpts) - 3} more" if len(ckpts) > 3 else "")
        parts.append(f"checkpoints/{shown}" if len(ckpts) == 1 else f"checkpoints {shown}")
    if events:
        parts.append(f"{events} TensorBoard event file(s)")
    return ", ".join(parts)


def _ways_on(run_dir: Path, setting: str) -> str:
    """What a refused run can do instead: resume=true only when there is a last.ckpt to continue from
    (a run that died in its first epoch has none, and resume=true would then fail on it)."""
    aside = f"pass overwrite=true to move it into {run_dir}/previous-<n>/ first"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return f"continue it with resume=true, train into a new {setting}=..., or {aside}"
    return (f"it has no checkpoints/last.ckpt to resume from (it ended before its first checkpoint), so "
            f"{aside}, or train into a new {setting}=...")


def _continues(resume: Any, run_dir: Path) -> bool:
    """Whether `resume` continues the run in `run_dir` (true, or a checkpoint inside it)."""
    if resume in (True, "true", "True"):
        return True
    if resume in (False, None, "false", "False", ""):
        return False
    try:
        Path(str(resume)).expanduser().resolve().relative_to(run_dir.resolve())
    except ValueError:
        return False
    return True


# --- the lock -----------------------------------------------------------------------------------
def _process_start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, Linux), to tell a reused pid from the lock's holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22 (starttime), counted after "(comm)"
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run folder's lock (the lock file's content)."""

    pid: int
    host: str
    since: str  # local time the lock was taken, for messages
    token: str
    start_ticks: int | None = None

    @classmethod
    def this_process(cls) -> "LockHolder":
        pid = os.getpid()
        return cls(pid, socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), secrets.token_hex(8),
                   _process_start_ticks(pid))

    @classmethod
    def read(cls, lock: Path) -> "LockHolder | None":
        """The holder written in `lock`; None when the file is gone; a holder with pid 0 when unreadable."""
        for attempt in range(3):
            try:
                text = lock.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            except OSError:
                text = ""
            try:
                data = json.loads(text)
                holder = cls(int(data["pid"]), str(data["host"]), str(data.get("since", "?")), str(data["token"]),
                             data.get("start_ticks"))
                if not 0 < holder.pid <= MAX_PID or not isinstance(holder.start_ticks, (int, type(None))):
                    return cls(0, "?", "?", "")  # no process has that id: a damaged or planted lock
                return holder
            except (ValueError, KeyError, TypeError, AttributeError):
                time.sleep(0.05 * (attempt + 1))  # a filesystem without hard links: being written
        return cls(0, "?", "?", "")

    def running(self) -> bool | None:
        """True / False on this host; None when it cannot be told (another host, unreadable lock)."""
        if self.pid <= 0 or self.host != socket.gethostname():
            return None
        if not process_running(self.pid):
            return False
        if self.start_ticks is not None:
            now = _process_start_ticks(self.pid)
            if now is not None and now != self.start_ticks:
                return False  # the pid now belongs to another process
        return True

    def to_json(self) -> str:
        return json.dumps(asdict(self)) + "\n"


def _publish(lock: Path, holder: LockHolder, setting: str) -> bool:
    """Create `lock` holding `holder`, atomically; False when it exists already."""
    tmp = temp_name(lock)
    try:
        try:
            tmp.write_text(holder.to_json(), encoding="utf-8")
        except OSError as exc:
            raise LightcycleError(
                f"{setting}={lock.parent}: cannot write into the run dir ({exc.strerror or type(exc).__name__})"
            ) from None
        try:
            os.link(tmp, lock)  # fails if the name exists: the lock appears complete or not at all
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this filesystem: exclusive create
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(holder.to_json())
            return True
    finally:
        with contextlib.suppress(OSError):  # a read-only folder refuses even this: the error above is the news
            tmp.unlink(missing_ok=True)


def _take_over(lock: Path, stale: LockHolder) -> bool:
    """Remove `lock` if it still holds `stale`; False when another process got there first."""
    aside = temp_name(lock)
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False
    moved = LockHolder.read(aside)
    if moved is None or moved.token != stale.token:  # a fresh lock was moved: put it back
        with contextlib.suppress(OSError):
            os.link(aside, lock)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def _in_use(run_dir: Path, lock: Path, holder: LockHolder, setting: str) -> LightcycleError:
    if holder.pid <= 0:
        return LightcycleError(
            f"{setting}={run_dir} has a lock file {lock} that cannot be read; if no run uses this dir, delete it"
        )
    where = f"pid {holder.pid} on {holder.host} since {holder.since}"
    if holder.running() is None:
        return LightcycleError(
            f"{setting}={run_dir} is in use by another run ({where}, another host: it cannot be checked from here); "
            f"train into another {setting}=..., or, if that run has ended, delete {lock}"
        )
    return LightcycleError(
        f"{setting}={run_dir} is in use by another run ({where}); wait for it to end or train into another {setting}=..."
    )


# --- claiming a folder -----------------------------------------------------------------------------
_HELD: dict[str, "RunFolder"] = {}  # by _key(path): the folders this process holds


def _key(path: str | os.PathLike) -> str:
    """One name per folder however it is spelt (relative, `..`, symlinks)."""
    return os.path.realpath(os.path.expanduser(path))


class RunFolder:
    """A run folder claimed by this process: its lock is held until `release()`.

    `notes` are what the claim did (a stale lock taken over, an old run moved aside), to be logged
    once the run's log file is set up (`log_notes`).
    """

    def __init__(self, path: Path, holder: LockHolder, notes: list[str]) -> None:
        self.path, self.holder, self.notes = path, holder, notes

    @property
    def lock(self) -> Path:
        return self.path / LOCK_NAME

    def log_notes(self) -> None:
        for note in self.notes:
            log.info("%s", note)
        self.notes = []

    def release(self) -> None:
        """Remove the lock if it is still this process's (a forked child never removes its parent's)."""
        _HELD.pop(_key(self.path), None)
        if self.holder.pid != os.getpid():
            return
        current = LockHolder.read(self.lock)
        if current is not None and current.token == self.holder.token:
            self.lock.unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    for folder in list(_HELD.values()):
        with contextlib.suppress(Exception):
            folder.release()


def _make_dir(run_dir: Path, setting: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or type(exc).__name__)
        raise LightcycleError(f"{setting}={run_dir}: cannot create the run dir: {reason}") from None
    if not run_dir.is_dir():
        raise LightcycleError(f"{setting}={run_dir}: cannot create the run dir: it is a file, not a folder")


def _move_aside(run_dir: Path, keep: Iterable[str]) -> tuple[Path, list[str]]:
    """Move everything of the old run (all but the lock, earlier previous-<n>/ and `keep`) into previous-<n>/."""
    taken = [int(m.group(1)) for p in run_dir.iterdir() if (m := PREVIOUS.fullmatch(p.name))]
    n = max(taken, default=0) + 1
    while True:
        target = run_dir / f"previous-{n}"
        try:
            target.mkdir()
            break
        except FileExistsError:
            n += 1
    skip = {LOCK_NAME, target.name, *keep}
    moved = []
    for entry in sorted(run_dir.iterdir()):
        if entry.name in skip or PREVIOUS.fullmatch(entry.name) or (
            entry.name.startswith(f".{LOCK_NAME}.") and entry.name.endswith(TEMP_SUFFIX)
        ):
            continue
        os.rename(entry, target / entry.name)
        moved.append(entry.name + ("/" if (target / entry.name).is_dir() else ""))
    fsync_dir(run_dir)
    return target, moved


def claim_run_dir(
    run_dir: str | os.PathLike, *, resume: Any = False, overwrite: bool = False, keep: Iterable[str] = (),
    setting: str = "hydra.run.dir",
) -> RunFolder | None:
    """Claim `run_dir` for a run of this process (see the module docstring); None on ranks other than 0.

    Creates the folder, takes its lock, and refuses it (LightcycleError, one line) when another live
    process holds it, or when it holds another run's outputs and `resume` does not continue that run;
    with `overwrite` the old run is moved into `<run_dir>/previous-<n>/` instead. `keep`: names in the
    folder that belong to this run already (what Hydra wrote for it) and are not moved. Claiming a
    folder this process holds returns the same RunFolder. `setting` names the folder in messages.
    """
    if not is_global_zero():
        return None
    run_dir = Path(os.path.abspath(Path(run_dir).expanduser()))
    held = _HELD.get(_key(run_dir))
    if held is not None and held.holder.pid == os.getpid():
        return held
    if not isinstance(overwrite, bool):
        raise LightcycleError(f"overwrite must be true or false, got {overwrite!r}")
    if overwrite and _continues(resume, run_dir):
        raise LightcycleError(
            "overwrite=true moves the previous run aside and resume continues it: pass one of them, not both"
        )
    _make_dir(run_dir, setting)
    lock, me, notes = run_dir / LOCK_NAME, LockHolder.this_process(), []
    for _ in range(10):
        if _publish(lock, me, setting):
            break
        holder = LockHolder.read(lock)
        if holder is None:
            continue  # released meanwhile
        if holder.running() is not False:
            raise _in_use(run_dir, lock, holder, setting)
        if _take_over(lock, holder):
            notes.append(f"took over the lock {lock} of pid {holder.pid} (since {holder.since}), which is no longer running")
    else:
        raise LightcycleError(f"{setting}={run_dir}: cannot take the run dir's lock {lock}: it keeps changing hands")
    folder = RunFolder(run_dir, me, notes)
    _HELD[_key(run_dir)] = folder
    try:
        outputs = previous_run_outputs(run_dir)
        if outputs and not _continues(resume, run_dir):
            if not overwrite:
                raise LightcycleError(f"{setting}={run_dir} holds another run ({_describe(outputs, run_dir)}): "
                                      f"{_ways_on(run_dir, setting)}")
            target, moved = _move_aside(run_dir, keep)
            notes.append(f"overwrite=true: moved the previous run in {run_dir} to {target}/ ({', '.join(moved)})")
    except BaseException:
        folder.release()
        raise
    return folder


@contextlib.contextmanager
def run_folder(
    run_dir: str | os.PathLike, *, resume: Any = False, overwrite: bool = False, keep: Iterable[str] = (),
    setting: str = "hydra.run.dir",
) -> Iterator[RunFolder | None]:
    """`claim_run_dir` for the duration of a block; the lock is released on leaving it (also on errors
    and Ctrl-C) unless an outer claim of this process holds it."""
    outer = _HELD.get(_key(run_dir))
    folder = claim_run_dir(run_dir, resume=resume, overwrite=overwrite, keep=keep, setting=setting)
    try:
        yield folder
    finally:
        if folder is not None and folder is not outer:
            folder.release()
