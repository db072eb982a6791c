"""Scores kept between runs of the cleaner: `<run dir>/cleaning/scores.json`, reused while nothing they
were made from has changed.

Scoring reads every image of both splits through the model, which on a large set takes a while; the
page should open again at once when the user comes back to the same checkpoint. So beside the table
lies `scores.source.json` (the checkpoint's path and sha256, the data overrides, the number of pairs),
and the table is reused only when that still matches, no apply has journalled changes since it was
written, and every scored image still has the size and mtime it was scored with.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lightcycle.atomic import write_json
from lightcycle.clean.score import score, scores_path
from lightcycle.clean.table import FileState, Scores
from lightcycle.digest import file_sha256
from lightcycle.errors import LightcycleError
from lightcycle.run.record import run_dir_of

log = logging.getLogger("lightcycle")

SOURCE_FILE = "scores.source.json"


def scores_for(ckpt: str | os.PathLike, overrides: dict[str, Any] | None = None, *, run_dir: str | os.PathLike | None = None,
               pairs: int = 200, batch_size: int | None = None, device: str = "auto", rescore: bool = False) -> Any:
    """The run's stored scores when they still describe this checkpoint and data, else fresh ones
    (`lightcycle.clean.score`), stored for next time. `rescore=True` always scores."""

    ckpt = Path(ckpt).expanduser()
    run_dir = Path(run_dir).expanduser() if run_dir is not None else run_dir_of(ckpt)
    table = scores_path(run_dir)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    source = {"ckpt": os.path.abspath(ckpt), "sha256": file_sha256(ckpt), "overrides": overrides, "pairs": int(pairs)}
    why = "rescore=true" if rescore else stale(table, source)
    if why is None:
        try:
            scores = Scores.load(table)
        except LightcycleError as exc:
            why = str(exc)
        else:
            why = changed_files(scores)
            if why is None:
                log.info("reusing the scores in %s (rescore=true scores again)", table)
                return scores
    log.info("scoring both splits with %s (%s)", ckpt, why)
    scores = score(ckpt, overrides, pairs=int(pairs), batch_size=batch_size, run_dir=run_dir, device=device)
    scores.save(table)
    write_json(table.with_name(SOURCE_FILE), source)
    return scores


def stale(table: Path, source: dict[str, Any]) -> str | None:
    """Why the table at `table` cannot be reused for `source`, or None."""
    try:
        kept = json.loads(table.with_name(SOURCE_FILE).read_text(encoding="utf-8"))
        written = table.stat().st_mtime_ns
    except (OSError, ValueError):
        return "no stored scores yet"
    if kept != json.loads(json.dumps(source)):
        return "the stored scores are of another checkpoint or other settings"
    if any(p.stat().st_mtime_ns >= written for p in table.parent.glob("*.jsonl")):
        return "changes were applied since the stored scores were made"
    return None


def changed_files(scores: Any) -> str | None:
    """Why the stored table no longer matches the files (one changed or gone), or None."""
    for image in scores.images:
        try:
            if FileState.of(Path(scores.root) / image.path) != FileState(image.state.size, image.state.mtime_ns):
                return f"{image.path} changed since it was scored"
        except OSError:
            return f"{image.path} is gone since it was scored"
    return None
