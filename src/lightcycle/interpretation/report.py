"""The interpretation report: the task's tables as CSV, its figures as PNG, and a few summary lines.

Every report has `top_losses.csv` (every validation image, worst first: the list to walk through
when cleaning labels) and, when `top_k > 0`, `top_losses.png`; the task adds its own tables and
figures (see `per_task/`: `interpretation_tables` / `interpretation_figures`), and, when `views` are given
(`inspection_views`), the course's views as `<name>.csv` and `<name>.png` each. Files are written
atomically, so a killed run never leaves half a table or picture.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightcycle.atomic import atomic_write, save_figure, write_bytes
from lightcycle.errors import LightcycleError, for_console
from lightcycle.interpretation.analyses import InspectionView
from lightcycle.interpretation.figures import plot_view
from lightcycle.interpretation.per_task import task_interpretation
from lightcycle.interpretation.result import InterpretationResult


def top_loss_rows(result: "InterpretationResult", k: int | None = None) -> list[dict[str, Any]]:
    """One row per image, worst first: `file`, then the task's columns (`loss`, and what explains it)."""
    indices = result.top_losses(k)
    rows = task_interpretation(result.task).top_loss_rows(result, indices)
    return [{"file": str(result.files[i]), **row} for i, row in zip(indices, rows)]


def inspection_views(result: "InterpretationResult", k: int = 4, seed: int = 0) -> dict[str, "InspectionView"]:
    """The course's views of `result` (random / most correct / most incorrect / most uncertain), `k`
    images each (per class or tag), the random ones drawn with `seed`; empty for segmentation and points."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LightcycleError(f"interpretation view_size must be a whole number >= 1, got {k!r}")
    return task_interpretation(result.task).inspection_views(result, int(k), int(seed))


def plot_top_losses(result: "InterpretationResult", k: int = 9) -> Any:
    """The k worst validation images, drawn and titled the task's way."""
    return task_interpretation(result.task).plot_top_losses(result, result.top_losses(k))


def make_figures(
    result: "InterpretationResult", top_k: int = 9, views: "dict[str, InspectionView] | None" = None
) -> dict[str, Any]:
    """name -> matplotlib Figure: the task's figures, `top_losses` (unless `top_k` is 0), then the views'."""
    figures = dict(task_interpretation(result.task).interpretation_figures(result))
    if top_k > 0:
        figures["top_losses"] = plot_top_losses(result, top_k)
    for name, view in (views or {}).items():
        figures[name] = plot_view(result, view)
    return figures


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """`rows` as a CSV with `columns` (default: the first row's keys); floats to 6 significant digits."""
    columns = columns or (list(rows[0]) if rows else [])
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def write_tables(
    result: "InterpretationResult", output_dir: str | os.PathLike, views: "dict[str, InspectionView] | None" = None
) -> dict[str, Path]:
    """`top_losses.csv`, the task's tables and the views' tables in `output_dir`; returns name -> path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"top_losses": write_csv(out / "top_losses.csv", top_loss_rows(result))}
    for name, (rows, columns) in task_interpretation(result.task).interpretation_tables(result).items():
        written[name] = write_csv(out / f"{name}.csv", rows, columns)
    for name, view in (views or {}).items():
        written[name] = write_csv(out / f"{name}.csv", view.rows, view.columns)
    return written


def write_report(
    result: "InterpretationResult", output_dir: str | os.PathLike, top_k: int = 9, figures: dict[str, Any] | None = None,
    views: "dict[str, InspectionView] | None" = None,
) -> dict[str, Path]:
    """Write the task's CSV tables and PNG figures (and the `views`' tables and figures, when given)
    into `output_dir`; returns name -> path (`<name>` for a table, `<name>_png` for a figure).
    `figures` may hold matplotlib Figures or PNGs already encoded (`figures.png_bytes`); only the
    views among them are drawn, while every view's table is written."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LightcycleError(f"{out}: cannot create the output folder ({exc})") from exc
    written = write_tables(result, out, views)
    for name, fig in (figures if figures is not None else make_figures(result, top_k, views)).items():
        path = out / f"{name}.png"
        written[f"{name}_png"] = write_bytes(path, fig) if isinstance(fig, bytes) else save_figure(path, fig)
    return written


def summary_lines(result: "InterpretationResult", limit: int = 10) -> list[str]:
    """A few human lines: the task's (most confused pairs, per-class scores), then the worst files."""
    lines = list(task_interpretation(result.task).summary_lines(result, limit))
    lines.append("top losses:")
    lines += ["  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
              for row in top_loss_rows(result, min(limit, 5))]
    return [for_console(line) for line in lines]  # class and file names from the data: no escapes, no fake lines
