"""What the user decided about one image (remove it, give it another label), and what came of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lightcycle.clean.table import (
    FileState,  # the file as scored: apply leaves alone a file that differs
)

ACTIONS = ("remove", "relabel")


@dataclass(frozen=True)
class Change:
    """One decision: `path` (relative to data.root, POSIX) is removed, or relabelled to `label`
    (a class name, or a list of tags for multi-label data). `state` is the file as scored; None = do not check."""

    path: str
    action: str
    label: Any = None
    state: FileState | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = asdict(self.state) if self.state is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Change":
        state = data.get("state")
        return cls(str(data["path"]), str(data["action"]), data.get("label"),
                   FileState(int(state["size"]), int(state["mtime_ns"])) if state else None)


@dataclass(frozen=True)
class Outcome:
    """What happened to one change: `done` (with `detail`: where the file went) or left alone (`detail`: why).
    `moved_to`: the image's new path relative to data.root when it moved (removed or into a class folder)."""

    path: str
    action: str
    done: bool
    detail: str
    moved_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
