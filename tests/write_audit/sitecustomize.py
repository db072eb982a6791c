"""Record which process writes where: Python's audit hooks, installed at interpreter start.

Put this folder on PYTHONPATH and set LIGHTCYCLE_TEST_WRITE_LOG=<folder> (and
LIGHTCYCLE_TEST_WRITE_UNDER=<dir>[:<dir>...]): every Python process started with them (the
`lightcycle-train` of each node, torchrun's workers) appends one JSON line per file it opens for
writing, creates, renames or deletes under those dirs to `<folder>/<pid>.jsonl`, with its rank as
the launcher's environment and torch.distributed see it. tests/nodes.py reads them back, so a test
can check that only global rank 0 wrote into the run dir and that one process built a cache.
"""

from __future__ import annotations

import json
import os
import sys

_LOG = os.environ.get("LIGHTCYCLE_TEST_WRITE_LOG")
_UNDER = [os.path.realpath(p) for p in os.environ.get("LIGHTCYCLE_TEST_WRITE_UNDER", "").split(os.pathsep) if p]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_ENV_KEYS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "SLURM_PROCID", "TORCHELASTIC_RUN_ID")


def _watched(path: object) -> str | None:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        return None  # a file descriptor
    real = os.path.realpath(os.fspath(path))
    return real if any(real == d or real.startswith(d + os.sep) for d in _UNDER) else None


def _dist_rank() -> int | None:
    dist = sys.modules.get("torch.distributed")
    try:
        return dist.get_rank() if dist is not None and dist.is_available() and dist.is_initialized() else None
    except Exception:
        return None


def _install(fd: int) -> None:
    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
            paths = [path] if writing else []
        elif event in ("os.rename", "os.link"):
            paths = [args[0], args[1]]
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree"):
            paths = [args[0]]
        else:
            return
        for path in paths:
            real = _watched(path)
            if real is not None:
                record = {"event": event, "path": real, "pid": os.getpid(), "dist_rank": _dist_rank(), "argv": sys.argv[:1],
                          "env": {k: os.environ[k] for k in _ENV_KEYS if k in os.environ}}
                os.write(fd, (json.dumps(record) + "\n").encode())

    sys.addaudithook(hook)


if _LOG and _UNDER:
    os.makedirs(_LOG, exist_ok=True)
    _install(os.open(os.path.join(_LOG, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
