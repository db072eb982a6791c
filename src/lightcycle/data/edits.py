"""How each on-disk layout takes a cleaning decision: what to move and which label files to rewrite.

The cleaner (lightcycle.clean) decides *what* changes (remove this image, give that one another
class or tag set); the layout decides *how* that looks on disk, and each DataModule picks its own
(`ImageDataModule.edits`):

| layout | remove | relabel |
|---|---|---|
| class folders | the image moves aside | the image moves into its new class folder (same split) |
| classification CSV | its rows are dropped, the image moves aside | the label column of its rows |
| multi-label CSV | its rows and `valid.txt` line are dropped, the image moves aside | the tags column |
| segmentation | the image and its mask move aside, its `valid.txt` line is dropped | (none: remove only) |
| points CSV | its rows and `valid.txt` line are dropped, the image moves aside | (none: remove only) |

A layout only *plans* (`plan` returns moves and whole-file rewrites, and why a change cannot be
made); lightcycle.clean.apply carries the plan out under a lock, journals every step and never
overwrites a file. Rewrites keep every line they do not change byte for byte.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

from lightcycle.data.files import FileResolver
from lightcycle.errors import LightcycleError


@dataclass(frozen=True)
class Move:
    """Move `source` to `target`; with `rename_on_clash` an existing target gets a numbered suffix instead."""

    source: Path
    target: Path
    rename_on_clash: bool = False


@dataclass(frozen=True)
class Rewrite:
    """Replace the text file `path` with `text` (its original is kept beside it first)."""

    path: Path
    text: str
    encoding: str = "utf-8"


@dataclass
class Plan:
    """What one apply does on disk, and the images it cannot change (path -> why)."""

    moves: list[Move] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    left: dict[Path, str] = field(default_factory=dict)
    # folders removed once the moves empty them (class folders: an empty one would stop the next training)
    prunable: set[Path] = field(default_factory=set)


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def _key(path: str | os.PathLike) -> str:
    return os.path.normpath(path)


def safe_name(label: Any, what: str) -> str:
    """`label` as a class or tag name that can be a folder name and a CSV cell; LightcycleError otherwise."""
    if not isinstance(label, str) or not label.strip():
        raise LightcycleError(f"{what} must be a non-empty name, got {label!r}")
    name = label.strip()
    if name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\x00" in name:
        raise LightcycleError(f"{what} {label!r} cannot be a class name (a folder name without '/' or a leading '.')")
    return name


class LayoutEdits:
    """One layout's way of taking removals and relabels. `relabel_kind`: "class", "tags" or None (remove only)."""

    relabel_kind: ClassVar[str | None] = None

    def __init__(self, root: Path) -> None:
        self.root = root

    def plan(self, removals: Sequence[Path], relabels: dict[Path, Any], aside: Callable[[Path], Path]) -> Plan:
        """Moves and rewrites for `removals` (images to set aside) and `relabels` (image -> new label);
        `aside(path)` is where a removed file goes."""
        raise NotImplementedError

    def check_label(self, label: Any) -> Any:
        """The relabel target in this layout's form (a class name, a sorted tag list); LightcycleError if not one."""
        raise LightcycleError("this layout takes removals only")


class FolderEdits(LayoutEdits):
    """Class folders, split into `train/` and `valid/` or one folder of class folders."""

    relabel_kind = "class"

    def __init__(self, root: Path, train: str, valid: str) -> None:
        super().__init__(root)
        train_dir = root / train
        self.bases = [train_dir, root / valid] if train_dir.is_dir() else [root]

    def check_label(self, label: Any) -> str:
        return safe_name(label, "the new class")

    def class_folder(self, image: Path) -> Path | None:
        """The class folder `image` is in (the folder right below its split folder), or None."""
        for base in self.bases:
            try:
                rel = image.relative_to(base)
            except ValueError:
                continue
            if len(rel.parts) >= 2:
                return base / rel.parts[0]
        return None

    def plan(self, removals: Sequence[Path], relabels: dict[Path, Any], aside: Callable[[Path], Path]) -> Plan:
        plan = Plan()
        for image in removals:
            plan.moves.append(Move(image, aside(image)))
            folder = self.class_folder(image)
            if folder is not None:
                plan.prunable.add(folder)
        for image, label in relabels.items():
            folder = self.class_folder(image)
            if folder is None:
                plan.left[image] = "not inside a class folder"
                continue
            name = self.check_label(label)
            if folder.name == name:
                plan.left[image] = f"already in class {name!r}"
                continue
            plan.moves.append(Move(image, folder.parent / name / image.relative_to(folder), rename_on_clash=True))
            plan.prunable.add(folder)
        return plan


# --- label files ---------------------------------------------------------------------------------------
def read_text(path: Path) -> tuple[str, str]:
    """(text, encoding) of a label file as the DataModules read it (UTF-8, a BOM kept on rewrite)."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    return data.decode("utf-8"), "utf-8"


def _line_ending(raw: str) -> str:
    return "\r\n" if raw.endswith("\r\n") else "\n" if raw.endswith(("\n", "\r")) else ""


class CsvRows:
    """A label CSV read record by record with each record's raw text, so a rewrite changes only the
    records it edits (same parsing as `read_csv_rows`: blank lines skipped, the first row is the header)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise LightcycleError(f"{path}: CSV file not found")
        self.path = path
        text, self.encoding = read_text(path)
        lines = list(io.StringIO(text, newline=""))  # split as csv reads a file: at \n, \r\n and \r only
        reader = csv.reader(iter(lines))
        self.records: list[tuple[str, list[str] | None]] = []  # (raw text, fields; None = not a data row)
        self.header: list[str] = []
        start = 0
        for fields in reader:
            raw = "".join(lines[start:reader.line_num])
            start = reader.line_num
            if not fields or not self.header:
                self.header = self.header or fields
                self.records.append((raw, None))
            else:
                self.records.append((raw, fields))
        self.tail = "".join(lines[start:])

    def column(self, name: str) -> int:
        if name not in self.header:
            raise LightcycleError(f"{self.path}: missing column {name!r}; the header has {self.header}")
        return self.header.index(name)

    def rewritten(self, edit: Callable[[list[str]], list[str] | None]) -> tuple[str, bool]:
        """(new text, changed): `edit(fields)` returns the fields to write, the same list to keep the
        record as it was, or None to drop it."""
        out, changed = [], False
        for raw, fields in self.records:
            new = edit(list(fields)) if fields is not None else fields
            if fields is None or new == fields:
                out.append(raw)
            elif new is not None:
                buffer = io.StringIO()
                csv.writer(buffer, lineterminator=_line_ending(raw) or "\n").writerow(new)
                out.append(buffer.getvalue())
                changed = True
            else:
                changed = True
        return "".join(out) + self.tail, changed


class CsvEdits(LayoutEdits):
    """A CSV naming each image (`fn_col`, plus `suffix`) with its label (`label_col`), and optionally a
    `valid.txt` naming the validation images; images in `folder`."""

    relabel_kind: ClassVar[str | None] = "class"

    def __init__(self, root: Path, csv_file: str, folder: str | None, fn_col: str, label_col: str | None = None,
                 *, suffix: str = "", valid_file: str | None = None, allow_outside_root: bool = False) -> None:
        super().__init__(root)
        self.csv_path = root / csv_file
        self.image_dir = root / folder if folder else root
        self.fn_col, self.label_col, self.suffix = fn_col, label_col, suffix
        self.valid_path = root / valid_file if valid_file else None
        self.allow_outside_root = allow_outside_root

    def check_label(self, label: Any) -> Any:
        if self.relabel_kind is None:
            raise LightcycleError("this layout takes removals only")
        return safe_name(label, "the new label")

    def label_text(self, label: Any) -> str:
        """The label column's text for `label` (already checked)."""
        return str(label)

    def _resolver(self) -> FileResolver:
        return FileResolver(self.image_dir, self.root, self.allow_outside_root)

    def plan(self, removals: Sequence[Path], relabels: dict[Path, Any], aside: Callable[[Path], Path]) -> Plan:
        plan = Plan()
        resolver = self._resolver()
        rows = CsvRows(self.csv_path)
        name_at = rows.column(self.fn_col)
        label_at = rows.column(self.label_col) if self.label_col and relabels else None
        removed = {_key(p) for p in removals}
        texts = {_key(p): self.label_text(self.check_label(label)) for p, label in relabels.items()}
        listed: set[str] = set()

        def edit(fields: list[str]) -> list[str] | None:
            name = fields[name_at].strip() + self.suffix if name_at < len(fields) else ""
            path, _ = resolver.resolve(name) if name else (None, "")
            if path is None:
                return fields
            key = _key(path)
            listed.add(key)
            if key in removed:
                return None
            if key in texts and label_at is not None:
                fields += [""] * (label_at + 1 - len(fields))
                fields[label_at] = texts[key]
            return fields

        text, changed = rows.rewritten(edit)
        if changed:
            plan.rewrites.append(Rewrite(self.csv_path, text, rows.encoding))
        for image in list(removals) + list(relabels):
            if _key(image) not in listed:
                plan.left[image] = f"not listed in {self.csv_path.name}"
        for image in removals:
            if _key(image) in listed:
                plan.moves.extend(Move(p, aside(p)) for p in [image, *self.companions(image)] if p.exists())
        if self.valid_path is not None and self.valid_path.is_file():
            valid = self.without_names(self.valid_path, [p for p in removals if _key(p) in listed], resolver)
            if valid is not None:
                plan.rewrites.append(valid)
        return plan

    def companions(self, image: Path) -> list[Path]:
        """Other files that belong to `image` and move aside with it (a mask)."""
        return []

    @staticmethod
    def without_names(path: Path, images: Iterable[Path], resolver: FileResolver) -> Rewrite | None:
        """`path` (a name list like valid.txt) without the lines naming `images`; None when none does."""
        gone = {_key(p) for p in images}
        if not gone:
            return None
        text, encoding = read_text(path)
        kept, changed = [], False
        for line in io.StringIO(text, newline=""):
            name = line.strip()
            found, _ = resolver.resolve(name) if name else (None, "")
            if found is not None and _key(found) in gone:
                changed = True
                continue
            kept.append(line)
        return Rewrite(path, "".join(kept), encoding) if changed else None


class TagCsvEdits(CsvEdits):
    """Planet's layout: the label column holds tags joined by `delimiter`."""

    relabel_kind = "tags"

    def __init__(self, *args: Any, delimiter: str = " ", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delimiter = delimiter

    def check_label(self, label: Any) -> list[str]:
        if isinstance(label, str) or not isinstance(label, (list, tuple)):
            raise LightcycleError(f"the new tags must be a list of tag names, got {label!r}")
        tags = sorted({safe_name(tag, "a tag") for tag in label})
        for tag in tags:
            if (self.delimiter.isspace() and any(c.isspace() for c in tag)) or self.delimiter in tag:
                raise LightcycleError(f"the tag {tag!r} contains the tag delimiter {self.delimiter!r}")
        return tags

    def label_text(self, label: Any) -> str:
        return self.delimiter.join(label)


class RemoveOnlyCsvEdits(CsvEdits):
    """A CSV whose rows hold coordinates (points): images can be removed, not relabelled here."""

    relabel_kind = None


class MaskedImageEdits(CsvEdits):
    """CamVid's layout: images in a folder, one mask per image, a `valid.txt`; removal moves both aside."""

    relabel_kind = None

    def __init__(self, root: Path, images: str, mask_of: Callable[[Path], Path], valid_file: str | None,
                 allow_outside_root: bool = False) -> None:
        super().__init__(root, "", images, "", valid_file=valid_file, allow_outside_root=allow_outside_root)
        self.mask_of = mask_of

    def companions(self, image: Path) -> list[Path]:
        return [self.mask_of(image)]

    def plan(self, removals: Sequence[Path], relabels: dict[Path, Any], aside: Callable[[Path], Path]) -> Plan:
        plan = Plan()
        for image in removals:
            plan.moves.extend(Move(p, aside(p)) for p in [image, *self.companions(image)] if p.exists())
        if self.valid_path is not None and self.valid_path.is_file():
            valid = self.without_names(self.valid_path, removals, self._resolver())
            if valid is not None:
                plan.rewrites.append(valid)
        return plan
