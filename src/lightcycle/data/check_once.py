"""The image check once per launch: with several processes (DDP ranks, nodes), one checks and the rest
wait and read its result.

Every process of a distributed run sets its DataModule up before any process group exists, so each
would decode every image itself: a node of 8 ranks would decode the data set 8 times at once. Here
the processes agree through the cache folder (`lightcycle.publish.publish_once`): the first to take
the lock checks the files and publishes the bad ones; the others wait and read that list. The result
is stored under a key made of the check's settings and every file's path, size, mtime and ctime, so
it answers only for files exactly as they are now; a changed file makes a new key and a new check.
Nodes with a cache of their own (a node-local `$LIGHTCYCLE_CACHE`) each check once for their ranks.
A single process checks directly, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import PIL

from lightcycle.cache import cache_root
from lightcycle.data.checks import find_bad_images, pixel_limit
from lightcycle.data.verified import FORMAT_VERSION, _stat
from lightcycle.errors import printable
from lightcycle.publish import publish_once
from lightcycle.ranks import several_processes

log = logging.getLogger(__name__)

RESULT = "bad.json"


def check_key(paths: Sequence[Path], max_pixels: int | None) -> str:
    """What the check's answer depends on: its settings and every file's state now."""
    digest = hashlib.sha256()
    settings = {"format": FORMAT_VERSION, "max_pixels": pixel_limit(max_pixels), "pillow": PIL.__version__}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        digest.update(json.dumps([os.path.abspath(path), _stat(Path(path))]).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def find_bad_images_once(
    paths: Sequence[Path], *, max_pixels: int | None = None, cache: Any = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[tuple[Path, str]]:
    """`find_bad_images(paths, max_pixels=..., cache=...)`, run by one process of a distributed launch
    (per cache folder); the others wait for its list of bad files and return that."""
    if not several_processes():
        return find_bad_images(paths, max_pixels=max_pixels, cache=cache)
    folder = cache_root(cache_dir) / "checks" / check_key(paths, max_pixels)

    def check(tmp: Path) -> None:
        bad = find_bad_images(paths, max_pixels=max_pixels, cache=cache)
        with open(tmp / RESULT, "w", encoding="utf-8", errors="surrogateescape") as f:
            json.dump([[str(path), reason] for path, reason in bad], f)

    try:
        publish_once(folder, check, is_complete=lambda p: (p / RESULT).is_file(), what="the image check")
        with open(folder / RESULT, encoding="utf-8", errors="surrogateescape") as f:
            answer = json.load(f)
    except (OSError, ValueError) as exc:  # a read-only or full cache costs this process a check, never the run
        log.warning("could not share the image check through %s (%s); checking in this process", printable(folder), exc)
        return find_bad_images(paths, max_pixels=max_pixels, cache=cache)
    by_name = {str(p): p for p in paths}
    return [(by_name.get(name, Path(name)), reason) for name, reason in answer]
