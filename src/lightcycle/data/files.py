"""Finding the files a label file names: CSV rows, name lists like valid.txt, names without extensions.

Every layout with a label file (classification CSVs, Planet, BIWI points, CamVid's valid.txt) resolves
names the same way, so a missing or ambiguous file is reported the same way too.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightcycle.data.checks import is_image_file
from lightcycle.errors import LightcycleError


def read_csv_rows(path: Path, required: list[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV as (line number, row) after checking the header names the required columns."""
    if not path.is_file():
        raise LightcycleError(f"{path}: CSV file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise LightcycleError(f"{path}: missing column(s) {missing}; the header has {header}")
            rows = [(i + 2, {k: (v or "") for k, v in row.items() if k is not None}) for i, row in enumerate(reader)]
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
    """

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise LightcycleError(f"{folder}: image folder not found")
        self.folder = folder
        self._by_stem: dict[str, list[Path]] | None = None

    def _stems(self) -> dict[str, list[Path]]:
        if self._by_stem is None:
            self._by_stem = {}
            for p in self.folder.rglob("*"):
                if is_image_file(p):
                    rel = p.relative_to(self.folder)
                    self._by_stem.setdefault(str(rel.with_suffix("")), []).append(p)
        return self._by_stem

    def resolve(self, name: str) -> tuple[Path | None, str]:
        name = name.strip()
        if not name:
            return None, "empty file name"
        direct = self.folder / name
        if direct.is_file():
            return direct, ""
        matches = self._stems().get(name, [])
        if len(matches) == 1:
            return matches[0], ""
        if len(matches) > 1:
            return None, f"ambiguous name: {len(matches)} files match ({', '.join(m.name for m in matches)})"
        return None, "file not found"


def read_name_list(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines of a name list such as `valid.txt`, as (line number, name)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise LightcycleError(f"{path}: not UTF-8 text ({exc})") from exc
    return [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
