"""Where lightcycle's caches live: demo data, precomputed activations, the image check's answers, bad-item
reports, verified-file lists, serve's exported models. One folder, chosen once: a `cache_dir` setting
(`paths.cache_dir`, `data.cache_dir`), else `$LIGHTCYCLE_CACHE` (a node-local folder per machine in a
multi-node run), else `~/.cache/lightcycle`."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LIGHTCYCLE_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` (with ~ expanded), else $LIGHTCYCLE_CACHE, else ~/.cache/lightcycle."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightcycle"
