"""Apply the user's cleaning decisions to the data on disk, losing nothing.

Per change: the image must be a file inside data.root, unchanged since it was scored (size and
mtime as in `Change.state`), and its layout must take the action (segmentation and points: remove
only); anything else is left alone and reported. The layout (`datamodule.edits(root)`,
lightcycle.data.edits) turns the accepted changes into moves and label-file rewrites, which run here
under the root's cleaning lock, each journalled before it is taken (lightcycle.clean.journal):

- removed files move into `<data.root>/.lightcycle-removed/<timestamp>/<their relative path>`
  (a folder the DataModules never read: its name starts with a dot);
- a relabelled image moves into its new class folder, renamed `name-1.jpg`, ... on a clash;
- a label file (labels.csv, valid.txt) is copied to `<name>.before-clean-<timestamp>` beside
  itself and then replaced atomically; rewrites go first, so an apply killed half way leaves no
  label file naming a file that has been moved;
- a class folder emptied by moves is removed (an empty class folder would stop the next training).

Nothing is deleted; `undo(journal)` puts everything back.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lightcycle.atomic import atomic_path, atomic_write
from lightcycle.clean.changes import ACTIONS, Change, Outcome
from lightcycle.clean.files import REMOVED_DIR, cleaning_lock, free_name, move_file
from lightcycle.clean.journal import Journal, text_sha256
from lightcycle.clean.table import FileState
from lightcycle.data.demo import is_demo_root
from lightcycle.data.edits import Plan
from lightcycle.digest import file_sha256
from lightcycle.errors import LightcycleError, printable
from lightcycle.run.record import constructor_settings, datamodule_classes

log = logging.getLogger("lightcycle")


@dataclass
class Applied:
    """What one apply did (`done`), what it left alone and why (`left`), and its journal (None: nothing changed)."""

    journal: Path | None
    done: list[Outcome] = field(default_factory=list)
    left: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a name clash resolved with a suffix

    def to_json(self) -> dict[str, Any]:
        return {"journal": str(self.journal) if self.journal else None, "notes": self.notes,
                "done": [o.to_json() for o in self.done], "left": [o.to_json() for o in self.left]}


def apply(changes: Sequence[Change], scores_or_datamodule: Any, *, journal_dir: str | os.PathLike) -> Applied:
    """Carry out `changes` on the data of `scores_or_datamodule` (a Scores, or a DataModule whose
    `root` is the data) and journal them into `journal_dir/<timestamp>.jsonl`; see the module docstring."""
    root, datamodule, classes = _data_of(scores_or_datamodule)
    layout = datamodule.edits(root)
    journal_dir = os.path.abspath(journal_dir)  # the undo command then works from any folder
    result = Applied(journal=None)
    with cleaning_lock(root):
        stamp = _stamp(root, Path(journal_dir))
        removed_dir = root / REMOVED_DIR / stamp
        removals: list[Path] = []
        relabels: dict[Path, Any] = {}
        accepted: dict[Path, Change] = {}
        for change in _last_per_path(changes, result):
            image, why = _check(change, root, layout, classes)
            if why:
                result.left.append(Outcome(change.path, change.action, False, why))
                continue
            accepted[image] = change
            if change.action == "remove":
                removals.append(image)
            else:
                relabels[image] = layout.check_label(change.label)
        plan = layout.plan(removals, relabels, lambda p: removed_dir / p.relative_to(root))
        journal = _open_journal(Path(journal_dir) / f"{stamp}.jsonl", root) if plan.moves or plan.rewrites else None
        try:
            moved = _carry_out(plan, journal, root, stamp, result) if journal else {}
        except OSError as exc:  # a full disk, a file taken away meanwhile: what was done is journalled
            assert journal is not None
            raise LightcycleError(f"apply stopped ({type(exc).__name__}: {exc}); every step taken is in the journal "
                                  f"{printable(journal.path)}: lightcycle-clean undo={printable(journal.path)} "
                                  "puts them back") from exc
        finally:
            if journal is not None:
                journal.close()
        result.journal = journal.path if journal is not None else None
        for image, change in accepted.items():
            if image in plan.left:
                result.left.append(Outcome(change.path, change.action, False, plan.left[image]))
            elif image in moved:
                where = _rel(moved[image], root)
                result.done.append(Outcome(change.path, change.action, True, f"moved to {where}", where))
            else:
                result.done.append(Outcome(change.path, change.action, True, _label_detail(change)))
    if result.journal:
        log.info("cleaning: %d change(s) applied, %d left alone; journal %s (undo: lightcycle-clean undo=%s)",
                 len(result.done), len(result.left), printable(result.journal), printable(result.journal))
    return result


def layout_of(scores_or_datamodule: Any) -> Any:
    """How the data's layout takes removals and relabels (`relabel_kind`: "class", "tags" or None).
    Asked of the generated demo data too: its page can be looked at, only applying is refused."""
    root, datamodule, _ = _found(scores_or_datamodule)
    return datamodule.edits(root)


def _data_of(source: Any) -> tuple[Path, Any, list[str] | None]:
    """(data.root, the DataModule that knows its layout, the class names a relabel may use or None)."""
    root, datamodule, classes = _found(source)

    if is_demo_root(root):
        raise LightcycleError(f"{root} is lightcycle's generated demo data, which is rebuilt from scratch when its "
                              f"files change: copy it (cp -r {root} my-data) and clean the copy (data.root=my-data)")
    return root, datamodule, classes


def _found(source: Any) -> tuple[Path, Any, list[str] | None]:
    if hasattr(source, "edits"):  # a DataModule
        root = getattr(source, "root", None) or source.resolve_root()
        return Path(os.path.abspath(root)), source, None

    settings = dict(getattr(source, "data", None) or {})
    target = settings.pop("_target_", None)
    cls = datamodule_classes().get(target) if isinstance(target, str) else None
    if cls is None:
        raise LightcycleError(f"the scores' data settings name no lightcycle DataModule (_target_={target!r})")
    settings = {k: v for k, v in settings.items() if k in constructor_settings(cls)}
    root = Path(os.path.abspath(source.root))
    settings.update(root=root, demo=None)
    classes = list(getattr(source, "classes", None) or []) or None
    return root, cls(**settings), classes if source.task in ("classification", "multilabel") else None


def _open_journal(path: Path, root: Path) -> Journal:
    try:
        return Journal(path, root)
    except OSError as exc:
        raise LightcycleError(f"journal_dir {printable(path.parent)}: cannot write the journal there "
                              f"({exc.strerror or type(exc).__name__}); nothing was changed") from None


def _stamp(root: Path, journal_dir: Path) -> str:
    """A timestamp naming this apply's journal and set-aside folder; `-2`, ... when taken (two applies a second)."""
    base = time.strftime("%Y%m%d-%H%M%S")
    stamp, n = base, 1
    while (journal_dir / f"{stamp}.jsonl").exists() or (root / REMOVED_DIR / stamp).exists():
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def _last_per_path(changes: Sequence[Change], result: Applied) -> list[Change]:
    """One change per file: the last one given (the user's final decision); earlier ones are reported."""
    last: dict[str, int] = {}
    for i, change in enumerate(changes):
        last[Path(change.path).as_posix()] = i
    out = []
    for i, change in enumerate(changes):
        if last[Path(change.path).as_posix()] == i:
            out.append(change)
        else:
            result.left.append(Outcome(change.path, change.action, False, "replaced by a later change of the same file"))
    return out


def _check(change: Change, root: Path, layout: Any, classes: list[str] | None) -> tuple[Path, str]:
    """(the image's path, "") when `change` may be applied; else (path, why not)."""
    rel = Path(change.path)
    image = root / rel
    if change.action not in ACTIONS:
        return image, f"unknown action {change.action!r} (one of {', '.join(ACTIONS)})"
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return image, "not a path inside data.root"
    if REMOVED_DIR in rel.parts:
        return image, f"already removed (it is in {REMOVED_DIR}/)"
    if not os.path.realpath(image).startswith(os.path.realpath(root).rstrip(os.sep) + os.sep):
        return image, "resolves outside data.root"
    if not image.is_file():
        return image, "missing (moved or deleted since it was scored)"
    if change.state is not None and FileState.of(image) != change.state:
        return image, "changed on disk since it was scored"
    if change.action == "relabel":
        if layout.relabel_kind is None:
            return image, "this layout takes removals only"
        try:
            label = layout.check_label(change.label)
        except LightcycleError as exc:
            return image, str(exc)
        unknown = [name for name in ([label] if isinstance(label, str) else label) if classes and name not in classes]
        if unknown:
            return image, f"{', '.join(map(repr, unknown))} is not one of the classes ({', '.join(classes or [])})"
    return image, ""


def _carry_out(plan: Plan, journal: Journal, root: Path, stamp: str, result: Applied) -> dict[Path, Path]:
    """Rewrites first, then moves; returns where each moved file went."""
    for rewrite in plan.rewrites:
        kept = rewrite.path.with_name(f"{rewrite.path.name}.before-clean-{stamp}")
        data = rewrite.text.encode("utf-8")
        if rewrite.encoding == "utf-8-sig":
            data = b"\xef\xbb\xbf" + data
        with atomic_path(kept) as tmp:
            shutil.copy2(rewrite.path, tmp)
        journal.record("rewrite", **{"from": kept, "to": rewrite.path, "sha256": text_sha256(data),
                                     "sha256_before": file_sha256(kept)})
        with atomic_write(rewrite.path, "wb") as f:
            f.write(data)
        result.notes.append(f"rewrote {_rel(rewrite.path, root)} (the original is kept as {_rel(kept, root)})")
    moved: dict[Path, Path] = {}
    emptied: set[Path] = set()
    for move in plan.moves:
        created = [p for p in reversed(move.target.parents) if root in p.parents and not p.exists()]
        for folder in created:
            if REMOVED_DIR not in folder.relative_to(root).parts:
                journal.record("mkdir", to=folder)
        target = free_name(move.target) if move.rename_on_clash else move.target
        journal.record("move", **{"from": move.source, "to": target, "sha256": file_sha256(move.source)})
        move_file(move.source, target)
        if target != move.target:
            result.notes.append(f"{_rel(move.source, root)}: {_rel(move.target, root)} exists, so it is "
                                f"{_rel(target, root)}")
        moved[move.source] = target
        emptied.add(move.source.parent)
    for folder in sorted(emptied, key=lambda p: -len(p.parts)):
        _remove_if_emptied(folder, plan.prunable, journal)
    return moved


def _remove_if_emptied(folder: Path, prunable: set[Path], journal: Journal) -> None:
    """Remove `folder` and the folders above it while empty, up to the prunable (class) folder holding it."""
    while folder.is_dir() and (folder in prunable or any(p in prunable for p in folder.parents)):
        if any(folder.iterdir()):
            return
        journal.record("rmdir", **{"from": folder})
        folder.rmdir()
        if folder in prunable:
            return
        folder = folder.parent


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _label_detail(change: Change) -> str:
    if change.action == "relabel":
        label = change.label if isinstance(change.label, str) else " ".join(sorted(change.label or []))
        return f"relabelled to {label!r}"
    return "removed"
