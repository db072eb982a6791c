"""Writing predictions: one CSV row or JSON record per image, plus side files such as mask PNGs.

What a row holds is the task's `prediction_record`; this module owns the file formats, and writes
every file atomically (lightcycle/atomic.py), so a failed run leaves no partial table.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from lightcycle.atomic import atomic_path, atomic_write
from lightcycle.errors import LightcycleError
from lightcycle.tasks import Task

OUTPUT_FORMATS: tuple[str, ...] = (".csv", ".json")


def _palette(n: int) -> list[int]:
    """A fixed, distinct colour per code index (values stay code indices: the PNG reads back as a mask)."""
    rng = np.random.default_rng(0)
    colours = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
    colours += [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(max(0, 256 - len(colours)))]
    return [c for rgb in colours[:256] for c in rgb]


def mask_image(mask: torch.Tensor, num_classes: int) -> Image.Image:
    """Code indices as a palette image (or 16-bit greyscale beyond 256 codes), like CamVid's masks."""
    arr = mask.cpu().numpy()
    if num_classes <= 256:
        img = Image.fromarray(arr.astype(np.uint8), mode="P")
        img.putpalette(_palette(num_classes))
    else:
        img = Image.fromarray(arr.astype(np.uint16))
    return img


def save_mask(mask: torch.Tensor, path: Path, num_classes: int) -> None:
    """The mask as a PNG file (`mask_image`), written atomically."""
    img = mask_image(mask, num_classes)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


class SideFiles:
    """Files written beside a prediction table, one per image, named after the image.

    A name's folders are kept (`a/b.jpg` -> `<folder>/a/b_P.png`), names that would leave the folder
    are flattened, and two images with one stem (a.jpg, a.png) get distinct files.
    """

    def __init__(self, folder: Path, output: Path) -> None:
        self.folder, self.output = folder, output
        self.used: set[Path] = set()

    def reserve(self, name: str, suffix: str) -> Path:
        """A fresh path for the side file of image `name`, ending in `suffix` (e.g. `_P.png`)."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            rel = Path(rel.name)
        path = self.folder / rel.parent / f"{rel.stem}{suffix}"
        k = 1
        while path in self.used:  # a.jpg and a.png in one folder
            path = self.folder / rel.parent / f"{rel.stem}-{k}{suffix}"
            k += 1
        self.used.add(path)
        return path

    def relative(self, path: Path) -> str:
        """`path` as the table names it: relative to the output file's folder, with forward slashes."""
        return Path(os.path.relpath(path, self.output.parent)).as_posix()

    def mask(self, name: str, mask: torch.Tensor, num_classes: int) -> str:
        """Save image `name`'s mask as `{stem}_P.png`; returns its path relative to the output."""
        path = self.reserve(name, "_P.png")
        save_mask(mask, path, num_classes)
        return self.relative(path)


def write_predictions(
    task: Task,
    predictions: Iterable[Any],
    names: Sequence[str],
    output: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
) -> int:
    """Write predictions (in the order of `names`) as CSV or JSON by `output`'s extension; returns the row count.

    Side files (segmentation masks) go to `masks_dir` (default `<output stem>_masks/` beside the
    output) as `{stem}_P.png`; the `mask` column holds their path relative to the output file.
    """
    output = Path(output).expanduser()
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise LightcycleError(f"output={output}: the extension must be .csv or .json")
    masks = Path(masks_dir).expanduser() if masks_dir else output.with_name(f"{output.stem}_masks")
    files = SideFiles(masks, output)
    try:
        return _write(task, predictions, names, output, suffix, files)
    except OSError as exc:  # e.g. a disk that fills up while writing: the table is atomic, never half-written
        where = f": {exc.filename}" if exc.filename else ""
        raise LightcycleError(f"output={output}: {exc.strerror or exc}{where}; the table was not written") from None


def _write(task: Task, predictions: Iterable[Any], names: Sequence[str], output: Path, suffix: str,
           files: SideFiles) -> int:
    rows = 0
    records: list[dict[str, Any]] = []
    with atomic_write(output, "w", newline="") as f:
        writer: csv.DictWriter | None = None
        for pred, name in zip(predictions, names):
            row, record = task.prediction_record(pred, name, files)
            if suffix == ".csv":
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
            else:
                records.append(record)
            rows += 1
        if suffix == ".json":
            json.dump(records, f, indent=1)
            f.write("\n")
    return rows
