"""The journal of one apply, and undoing it byte for byte.

`<run dir>/cleaning/<timestamp>.jsonl` holds one JSON line per step on disk, written (and synced)
*before* the step is taken, so a journal always covers every change even when apply was killed half way:

    {"what": "move",    "from": ..., "to": ..., "sha256": <the file's>, "root": <data.root>}
    {"what": "rewrite", "from": <the original, kept beside it>, "to": <the label file>,
     "sha256": <the new text's>, "sha256_before": <the original's>, "root": ...}
    {"what": "mkdir",   "to": <a folder apply created>, "root": ...}
    {"what": "rmdir",   "from": <an emptied class folder apply removed>, "root": ...}

Paths are absolute. `undo` walks the lines backwards and puts each file back only when what is on
disk is what the journal says apply left (the hash matches, the old name is free); anything else is
left alone and reported, so undo never replaces a file someone changed since. Undoing twice is harmless.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightcycle.clean.files import REMOVED_DIR, cleaning_lock, move_file, prune_empty
from lightcycle.digest import file_sha256
from lightcycle.errors import LightcycleError, printable

STEPS = ("move", "rewrite", "mkdir", "rmdir")


def text_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Journal:
    """Appends the steps of one apply to `path` (created exclusively: one journal per apply)."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root = path, root
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "x", encoding="utf-8")
        self.steps = 0

    def record(self, what: str, **paths: Any) -> None:
        """Write one step and sync it to disk before the caller takes it."""
        entry = {"what": what, **{k: str(v) if isinstance(v, Path) else v for k, v in paths.items()},
                 "root": str(self.root)}
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.steps += 1

    def close(self) -> None:
        self._file.close()


@dataclass
class Undone:
    """What `undo` put back (paths relative to data.root) and what it left alone, with why."""

    journal: Path
    restored: list[str] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"journal": str(self.journal), "restored": self.restored,
                "left": [{"path": p, "why": why} for p, why in self.left]}


def read_journal(journal: str | os.PathLike) -> list[dict[str, Any]]:
    """The steps of a journal; LightcycleError naming the file and line when it is not one."""
    path = Path(journal).expanduser()
    if not path.is_file():
        raise LightcycleError(f"journal {printable(path)} not found")
    steps = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise LightcycleError(f"journal {printable(path)}: not a cleaning journal (not UTF-8 text)") from None
    except OSError as exc:
        raise LightcycleError(f"journal {printable(path)}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)
        except ValueError:
            if number == len(lines):  # the last line of a killed apply: its step was never taken
                continue
            raise LightcycleError(f"journal {printable(path)} line {number}: not a JSON line") from None
        needs = {"move": ("from", "to", "sha256"), "rewrite": ("from", "to", "sha256", "sha256_before"),
                 "mkdir": ("to",), "rmdir": ("from",)}.get(step.get("what") if isinstance(step, dict) else None)
        if needs is None or not all(isinstance(step.get(k), str) for k in (*needs, "root")):
            raise LightcycleError(f"journal {printable(path)} line {number}: not a cleaning journal step "
                                  f"(one of {', '.join(STEPS)} with its paths)")
        steps.append(step)
    if not steps:
        raise LightcycleError(f"journal {printable(path)} has no steps")
    roots = {step["root"] for step in steps}
    if len(roots) > 1:
        raise LightcycleError(f"journal {printable(path)} names {len(roots)} data roots; a journal covers one")
    return steps


def undo(journal: str | os.PathLike) -> Undone:
    """Put back what the apply journalled in `journal`, newest step first; see the module docstring."""
    steps = read_journal(journal)
    root = Path(steps[0]["root"])
    if not root.is_dir():
        raise LightcycleError(f"journal {printable(journal)}: its data root {printable(root)} is not a folder")
    done = Undone(Path(journal))
    with cleaning_lock(root):
        for step in reversed(steps):
            why = _undo_step(step)
            shown = _relative(step.get("from") or step["to"], root)
            if why is None:
                done.restored.append(shown)
            elif why:
                done.left.append((shown, why))
        for step in steps:  # the folders of set-aside files, now empty, and .lightcycle-removed itself
            if step["what"] == "move" and REMOVED_DIR in Path(step["to"]).parts:
                prune_empty(Path(step["to"]).parent, root)
    return done


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def _sha_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path) if path.is_file() else None
    except OSError:
        return None


def _undo_step(step: dict[str, Any]) -> str | None:
    """Undo one step: None when put back, "" when there was nothing to do, else why it is left alone."""
    what = step["what"]
    if what == "mkdir":
        folder = Path(step["to"])
        if not folder.is_dir():
            return ""
        try:
            folder.rmdir()
        except OSError:
            return "folder is not empty any more"
        return ""
    if what == "rmdir":
        Path(step["from"]).mkdir(parents=True, exist_ok=True)
        return ""
    source, target = Path(step["from"]), Path(step["to"])
    if what == "move":
        now_at_target = _sha_or_none(target)
        if now_at_target is None:
            if _sha_or_none(source) == step["sha256"]:
                return ""  # never moved (apply stopped before this step)
            return f"{printable(target)} is missing"
        if now_at_target != step["sha256"]:
            return f"{printable(target)} changed since it was moved there"
        if os.path.lexists(source):
            return f"{printable(source)} exists again; not replaced"
        move_file(target, source)
        return None
    # rewrite: the original kept beside the label file goes back over it
    kept, current = _sha_or_none(source), _sha_or_none(target)
    if kept != step["sha256_before"]:
        if kept is None and current == step["sha256_before"]:
            return ""  # already restored
        return f"the copy of the original, {printable(source)}, is missing or changed"
    if current not in (step["sha256"], step["sha256_before"]):
        return f"{printable(target)} changed since it was rewritten; the original is still in {printable(source)}"
    os.replace(source, target)
    return None
