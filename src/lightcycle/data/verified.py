"""Files verified before: a second run over the same folder decodes only what is new or changed.

The check before training decodes every image (about 5 s for 33,000 small JPEGs, minutes for a
million photos), and the files rarely change between runs. So each data root gets one JSON file
in the cache (`$LIGHTCYCLE_CACHE/verified/`, keyed by a hash of the root's real path and the
settings that decide the verdict: the pixel limit, Pillow's version, this format's version) listing
the files found good, each with its size, mtime and ctime in nanoseconds. A file is skipped only
when all three still match, so a changed file is always decoded again (ctime cannot be set back by
`touch` or `cp -p`), and a bad file is never listed. Files changed in the last `RECENT_NS` are not
listed either: a file rewritten within the filesystem's timestamp tick could otherwise keep its
old times.

Several processes may share it (DDP ranks, two nodes on one filesystem, two runs): it is written
whole through `lightcycle.atomic` (never read half-written), after merging what is on disk at that
moment, and the read, merge and write happen under the file's lock (`lightcycle.publish.held`), so
two writers never drop each other's entries. Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Sequence

import PIL

from lightcycle.atomic import atomic_write
from lightcycle.data.checks import pixel_limit
from lightcycle.data.demo import default_cache_dir
from lightcycle.errors import printable
from lightcycle.publish import held

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RECENT_NS = 2_000_000_000  # files changed less than 2 s before the check are decoded again next time
_CHUNK = 512  # files per stat task: 10^5 tiny tasks would cost more in the pool than the stats


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """`cache_dir`, or $LIGHTCYCLE_CACHE, else ~/.cache/lightcycle."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def root_file_name(root: str | os.PathLike, extra: Any, suffix: str) -> str:
    """`<folder name>-<hash of its real path and extra><suffix>`: one file per data root and settings."""
    real = os.path.realpath(root)
    digest = hashlib.sha256(json.dumps([real, extra], sort_keys=True).encode("utf-8", "surrogateescape"))
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(real) or "root")[:40]
    return f"{name}-{digest.hexdigest()[:16]}{suffix}"


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class VerifiedFiles:
    """The verified-good files of one data root under one set of check settings.

    Use: `todo = cache.unverified(paths, pool)` (stats every file, returns those to decode), decode
    them, then `cache.update(good=..., bad=...)`. `find_bad_images(..., cache=cache)` does all three.
    """

    def __init__(self, root: str | os.PathLike, max_pixels: int | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        self._prefix = str(self.root).rstrip(os.sep) + os.sep
        self.real_root = os.path.realpath(self.root)
        self.settings = {"format": FORMAT_VERSION, "max_pixels": pixel_limit(max_pixels), "pillow": PIL.__version__}
        self.path = cache_root(cache_dir) / "verified" / root_file_name(self.root, self.settings, ".json")
        # who may rewrite it now; beside the cache's folders, so `verified/` holds only the lists
        self.lock = cache_root(cache_dir) / "locks" / f"verified-{self.path.name}.lock"
        self.hits = 0  # files skipped by the last `unverified`
        self._known: dict[str, list[int]] = {}
        self._stats: dict[Path, list[int]] = {}  # files that may be recorded once found good

    def _key(self, path: Path) -> str:
        """The path relative to the root (compact); an absolute path for a file outside it."""
        text = str(path)
        return text[len(self._prefix):] if text.startswith(self._prefix) else os.path.abspath(text)

    def _read(self) -> dict[str, list[int]]:
        """The entries on disk now; an absent, unreadable or foreign file counts as empty."""
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("root") != self.real_root or data.get("settings") != self.settings:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def unverified(self, paths: Sequence[Path], pool: Executor | None = None) -> list[Path]:
        """The paths that must be decoded: not verified before, or changed since (in the given order)."""
        self._known = self._read()
        now = time.time_ns()
        chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
        probe = lambda chunk: [_stat(p) for p in chunk]  # noqa: E731
        parts = pool.map(probe, chunks) if pool is not None else map(probe, chunks)
        stats = [s for part in parts for s in part]
        todo: list[Path] = []
        self._stats = {}
        for path, stat in zip(paths, stats):
            if stat is not None and self._known.get(self._key(path)) == stat:
                continue
            if stat is not None and max(stat[1], stat[2]) < now - RECENT_NS:
                self._stats[path] = stat
            todo.append(path)
        self.hits = len(paths) - len(todo)
        if self.hits:
            log.info("%d of %d images unchanged since they were last checked (%s); decoding %d",
                     self.hits, len(paths), printable(self.path), len(todo))
        return todo

    def update(self, good: Sequence[Path], bad: Sequence[Path] = ()) -> None:
        """List the `good` files (as they were when `unverified` looked) and drop the `bad` ones; save."""
        added = {self._key(p): self._stats[p] for p in good if p in self._stats}
        dropped = {self._key(p) for p in bad}
        if not added and not dropped & self._known.keys():
            return
        try:
            with held(self.lock, what="the list of verified images"):
                files = self._read()  # what other processes saved meanwhile
                files.update(added)
                for key in dropped:
                    files.pop(key, None)
                data = {"root": self.real_root, "settings": self.settings, "files": files}
                with atomic_write(self.path, "w", errors="surrogateescape") as f:
                    json.dump(data, f, separators=(",", ":"))
        except OSError as exc:  # a read-only or full cache costs a decode next time, never the run
            log.warning("could not save the list of verified images to %s (%s); they will be decoded again next time",
                        printable(self.path), exc)
            return
        self._known = files
