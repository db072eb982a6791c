"""Which images to predict: one file, every image under a folder, or the names a CSV lists.

Folders are listed and CSV names resolved by the same helpers as training data (data/checks.py,
data/files.py), so a name without its extension, an ambiguous name or a hidden file is treated
the same way in both; every image is decoded once up front, so a bad file is named before any
prediction runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from lightcycle.data.checks import (
    BAD_POLICIES,
    IMAGE_EXTENSIONS,
    find_bad_images,
    is_image_file,
    list_images,
)
from lightcycle.data.files import FileResolver, read_csv_rows
from lightcycle.data.problems import report_bad
from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")

NAME_COLUMNS: tuple[str, ...] = ("file", "fname", "image_name", "filename", "path", "image")


@dataclass
class Inputs:
    """Images to predict, in order: `paths` and the `names` written in the `file` column."""

    paths: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)  # rows naming no usable file


def list_inputs(inputs: str | os.PathLike, folder: str | os.PathLike | None = None, column: str | None = None) -> Inputs:
    """An image file, a folder (every image below it, sorted; hidden files left out), or a CSV naming images.

    CSV names are resolved against `folder` (default: the CSV's folder) and may omit the extension;
    the column is `column`, else the first of file, fname, image_name, filename, path, image, else the first.
    """
    path = Path(inputs).expanduser()
    if not path.exists():
        raise LightcycleError(f"inputs={inputs}: no such file or folder")
    if path.is_dir():
        return _folder_inputs(path, inputs)
    if path.suffix.lower() == ".csv":
        return _csv_inputs(path, folder, column)
    if is_image_file(path):
        return Inputs([path], [str(inputs)])
    raise LightcycleError(f"inputs={inputs}: not an image, a CSV of file names or a folder")


def _folder_inputs(path: Path, inputs: str | os.PathLike) -> Inputs:
    files = sorted(list_images(path), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise LightcycleError(f"inputs={inputs}: no image files in that folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
    others = sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) - len(files)
    if others:
        log.info("inputs: ignored %d file(s) in %s that are not images or sit in hidden folders", others, path)
    return Inputs(files, [p.relative_to(path).as_posix() for p in files])


def _csv_inputs(path: Path, folder: str | os.PathLike | None, column: str | None) -> Inputs:
    rows = read_csv_rows(path, [column] if column else [])
    header = list(rows[0][1])
    if column is None:
        column = next((c for c in NAME_COLUMNS if c in header), header[0] if header else None)
    if not column:
        raise LightcycleError(f"{path}: no column of file names")
    image_dir = Path(folder).expanduser() if folder else path.parent
    resolver = FileResolver(image_dir)
    out = Inputs()
    for line, row in rows:
        name = row.get(column, "").strip()
        found, why = resolver.resolve(name)
        if found is None:
            out.problems.append((image_dir / name, f"{why} ({path.name} line {line})"))
        else:
            out.paths.append(found)
            out.names.append(name)
    return out


def vet_inputs(inputs: Inputs, on_bad: str = "error", what: str = "inputs", report_file: Path | None = None) -> Inputs:
    """Decode every image once; `error`: fail naming the bad files; `skip`: drop them (no rows are
    written for them) and say how many. Like training's report (data/problems.py): the first 20 are
    named, and all of them go to `report_file` (a CSV of path, problem) when given."""
    if on_bad not in BAD_POLICIES:
        raise LightcycleError(f"on_bad must be one of {', '.join(BAD_POLICIES)}, got {on_bad!r}")
    reasons = dict(find_bad_images(inputs.paths))
    bad = list(inputs.problems) + [(p, reasons[p]) for p in inputs.paths if p in reasons]
    report_bad(bad, on_bad, what, report_file, noun="image", setting="on_bad", action="predict")
    if not bad:
        return inputs
    keep = [i for i, p in enumerate(inputs.paths) if p not in reasons]
    return Inputs([inputs.paths[i] for i in keep], [inputs.names[i] for i in keep], bad)
