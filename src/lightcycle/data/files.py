"""Finding the files a label file names: CSV rows, name lists like valid.txt, names without extensions.

Every layout with a label file (classification CSVs, Planet, BIWI points, CamVid's valid.txt) resolves
names the same way, so a missing or ambiguous file is reported the same way too.

A label file is data, and data may come from anyone: a name like `../../home/me/.ssh/id_rsa.png`, an
absolute path or a symlink must not make training read files outside the dataset unnoticed. Names
that resolve outside `data.root` (after following symlinks) are bad items, unless
`data.allow_outside_root=true`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Iterator

from lightcycle.data.checks import is_image_file
from lightcycle.errors import LightcycleError

MAX_LINE_CHARS = 1 << 20  # one line of a label file: a million characters
MAX_COLUMNS = 10_000  # columns of a label CSV (BIWI-style points: 2 per point, and a name)


def _bounded_lines(f: Iterable[str], path: Path) -> Iterator[str]:
    """The lines of `f`, refusing one longer than MAX_LINE_CHARS before it is read whole."""
    number = 0
    while True:
        line = f.readline(MAX_LINE_CHARS + 1)  # type: ignore[attr-defined]
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            raise LightcycleError(f"{path}: line {number} is longer than {MAX_LINE_CHARS:,} characters; not a label file?")
        yield line


def _columns(row: list[str], path: Path, where: str) -> list[str]:
    if len(row) > MAX_COLUMNS:
        raise LightcycleError(f"{path}: {where} has {len(row):,} columns, more than {MAX_COLUMNS:,}; not a label file?")
    return row


def read_csv_rows(path: Path, required: list[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV as (line number, row) after checking the header names the required columns.

    Read line by line within bounds (MAX_LINE_CHARS, MAX_COLUMNS), so a crafted file of one huge
    line or a million columns is refused before it is held in memory."""
    if not path.is_file():
        raise LightcycleError(f"{path}: CSV file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(_bounded_lines(f, path))
            header = next((r for r in reader if r), [])  # blank lines before the header are skipped
            _columns(header, path, "the header")
            missing = [c for c in required if c not in header]
            if missing:
                raise LightcycleError(f"{path}: missing column(s) {missing}; the header has {header}")
            rows = []
            for record in reader:
                if not record:  # a blank line, as csv.DictReader skips it
                    continue
                values = _columns(record, path, f"row {len(rows) + 2}")
                rows.append((len(rows) + 2, {k: values[i] if i < len(values) else "" for i, k in enumerate(header)}))
    except UnicodeDecodeError as exc:
        raise LightcycleError(f"{path}: not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise LightcycleError(f"{path}: malformed CSV ({exc})") from exc
    if not rows:
        raise LightcycleError(f"{path}: CSV has a header but no rows")
    return rows


class FileResolver:
    """Resolve names from a CSV or valid.txt against an image folder, with or without an extension.

    Planet's CSV says `train_0` for `train/train_0.jpg`; building a stem index once keeps this O(1).
    With a `root`, a name is refused when its file's real path lies outside both `root` and `folder`
    (the configured image folder may itself be a link to another disk) unless `allow_outside_root`.
    """

    def __init__(self, folder: Path, root: Path | None = None, allow_outside_root: bool = False) -> None:
        if not folder.is_dir():
            raise LightcycleError(f"{folder}: image folder not found")
        self.folder = folder
        self._by_stem: dict[str, list[Path]] | None = None
        self._inside: tuple[str, ...] | None = None
        if root is not None and not allow_outside_root:
            self._inside = tuple({os.path.realpath(p).rstrip(os.sep) + os.sep for p in (root, folder)})

    def _stems(self) -> dict[str, list[Path]]:
        if self._by_stem is None:
            self._by_stem = {}
            for p in self.folder.rglob("*"):
                if is_image_file(p):
                    rel = p.relative_to(self.folder)
                    self._by_stem.setdefault(str(rel.with_suffix("")), []).append(p)
        return self._by_stem

    def outside(self, path: Path) -> str | None:
        """Why `path` may not be read (it resolves outside the data root), or None."""
        if self._inside is None:
            return None
        real = os.path.realpath(path)
        if (real + os.sep).startswith(self._inside):
            return None
        return f"resolves outside data.root (to {real}); data.allow_outside_root=true allows it"

    def resolve(self, name: str) -> tuple[Path | None, str]:
        """(the file `name` means, "") or (None, why not)."""
        name = name.strip()
        if not name:
            return None, "empty file name"
        direct = self.folder / name
        if direct.is_file():
            found = direct
        else:
            matches = self._stems().get(name, [])
            if len(matches) > 1:
                return None, f"ambiguous name: {len(matches)} files match ({', '.join(m.name for m in matches)})"
            if not matches:
                return None, "file not found"
            found = matches[0]
        why = self.outside(found)
        return (None, why) if why else (found, "")


def listed_twice(file_name: str, first: int, line: int, detail: str = "") -> str:
    """The problem of a row repeating a file: which lines, and what on_bad=skip does with them."""
    return f"listed twice ({file_name} lines {first} and {line}{detail}); the first row is used with data.on_bad=skip"


def read_name_list(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines of a name list such as `valid.txt`, as (line number, name)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.rstrip("\n") for line in _bounded_lines(f, path)]
    except UnicodeDecodeError as exc:
        raise LightcycleError(f"{path}: not UTF-8 text ({exc})") from exc
    return [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
