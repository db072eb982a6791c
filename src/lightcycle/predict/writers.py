"""Writing predictions: one CSV row or JSON record per image, plus side files such as mask PNGs.

What a row holds is the task's `prediction_record` (`per_task/`); this module owns the file formats, and writes
every file atomically (lightcycle/atomic.py), so a failed run leaves no partial table.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from lightcycle.atomic import atomic_write
from lightcycle.errors import LightcycleError
from lightcycle.predict.per_task import task_predictions
from lightcycle.predict.side_files import SideFiles, mask_image, save_mask
from lightcycle.tasks import Task

__all__ = ["OUTPUT_FORMATS", "SideFiles", "mask_image", "save_mask", "write_predictions"]

OUTPUT_FORMATS: tuple[str, ...] = (".csv", ".json")


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
    answers = task_predictions(task)
    records: list[dict[str, Any]] = []
    with atomic_write(output, "w", newline="") as f:
        writer: csv.DictWriter | None = None
        for pred, name in zip(predictions, names):
            row, record = answers.prediction_record(pred, name, files)
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
