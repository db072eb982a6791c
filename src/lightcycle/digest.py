"""The sha256 of a file, read in blocks: how downloads spot a picture they already have and how
`lightcycle-serve` names the checkpoint it serves (and caches its ONNX export under)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes, read 1 MiB at a time (checkpoints can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
