"""Plotting primitives for the interpretation report: matplotlib Figures, never pyplot's global state.

Figures are made with `matplotlib.figure.Figure` (no GUI backend, safe in workers and callbacks)
and imported only when a figure is drawn, so tasks can name these helpers without paying for
matplotlib at import time. Which figures a task shows is the task's choice (`Task.interpretation_figures`,
`Task.plot_top_losses`); this module only draws.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from lightcycle.interpretation.analyses import confusion_matrix

if TYPE_CHECKING:
    from lightcycle.interpretation.analyses import InspectionView
    from lightcycle.interpretation.collect import InterpretationResult

MAX_VIEW_GROUPS = 12  # rows of a per-class view's figure; its table lists every class
PANEL_W, PANEL_H = 2.4, 2.7  # inches per image panel: a 240 px picture under a two-line caption


def figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    """A Figure of width x height inches; a constrained layout by default (labels never overlap).
    Image grids pass layout=None and place their panels with `panel_grid`: the constrained solver
    costs seconds on the dozens of panels of a per-class view, a fixed grid nothing."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def panel_grid(rows: int, cols: int, title: str) -> tuple[Any, Callable[[int], Any]]:
    """A figure of rows x cols image panels under `title`, and `panel(n)` -> the n-th panel's axes
    (row-major, titled and axis-free by the caller): a fixed layout, no solver."""
    width, height = max(5.0, PANEL_W * cols), PANEL_H * rows + 0.5
    fig = figure(width, height, layout=None)
    fig.suptitle(title, y=1 - 0.12 / height)
    top = 1 - 0.5 / height
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.05, hspace=0.35)
    return fig, lambda n: fig.add_subplot(rows, cols, n + 1)


def render(fig: Any) -> np.ndarray:
    """Draw a Figure once into an HxWx3 uint8 picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png_bytes(fig: Any) -> "PNG":
    """Draw and encode a Figure once: the same PNG goes into the report folder and into TensorBoard
    (drawing a figure costs more than anything else in the report; zlib level 3 encodes several
    times faster than the default 6 for files about 10 % larger)."""
    import io

    from PIL import Image

    picture = render(fig)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=3)
    return PNG(buffer.getvalue(), picture.shape[0], picture.shape[1])


class PNG(bytes):
    """An encoded PNG and its size in pixels."""

    height: int
    width: int

    def __new__(cls, data: bytes, height: int, width: int) -> "PNG":
        png = super().__new__(cls, data)
        png.height, png.width = int(height), int(width)
        return png


def grid(n: int) -> tuple[int, int]:
    """(rows, columns) of the squarest grid that holds n panels."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def short(path: Path, width: int = 28) -> str:
    """A file name that fits a panel title: the end of it, where names differ."""
    name = path.name
    return name if len(name) <= width else "…" + name[-(width - 1):]


def picture(x: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A model input [3, H, W] back to an HxWx3 uint8 picture: a uint8 tensor as it is, a float one
    un-normalised with the backbone's `mean` and `std`."""
    if getattr(x, "dtype", None) is not None and str(x.dtype).endswith("uint8"):
        return x.detach().cpu().numpy().transpose(1, 2, 0)
    arr = x.detach().float().cpu().numpy().transpose(1, 2, 0)
    arr = arr * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)


def image_grid(
    result: "InterpretationResult", indices: list[int], title: str, draw: Callable[[Any, int], str]
) -> Any:
    """Validation images `indices` as the model saw them, one panel each; `draw(ax, i)` adds marks and returns the title."""
    rows, cols = grid(len(indices))
    fig, panel = panel_grid(rows, cols, title)
    for n, i in enumerate(indices):
        ax = panel(n)
        ax.imshow(result.image(i))
        ax.set_title(draw(ax, i), fontsize=8)
        ax.axis("off")
    return fig


def plot_view(result: "InterpretationResult", view: "InspectionView", max_groups: int = MAX_VIEW_GROUPS) -> Any:
    """An inspection view's images: one row per class or tag (the first `max_groups` that have any),
    or one squarish grid for a view without groups; each panel titled with its entry's caption."""
    groups: dict[str, list[Any]] = {}
    for entry in view.entries:
        groups.setdefault(entry.group, []).append(entry)
    title = view.title
    if len(groups) > max_groups:
        title += f" (the first {max_groups} of {len(groups)}; all of them in the table)"
        groups = dict(list(groups.items())[:max_groups])
    if not groups:
        fig = figure(5.0, 1.5)
        fig.suptitle(title)
        fig.text(0.5, 0.4, "no validation image fits this view", ha="center", va="center")
        return fig
    if list(groups) == [""]:
        rows, cols = grid(len(groups[""]))
        panels = [(n, e) for n, e in enumerate(groups[""])]
    else:
        rows, cols = len(groups), max(len(g) for g in groups.values())
        panels = [(r * cols + c, e) for r, g in enumerate(groups.values()) for c, e in enumerate(g)]
    fig, panel = panel_grid(rows, cols, title)
    for n, entry in panels:
        ax = panel(n)
        ax.imshow(result.image(entry.index))
        ax.set_title(entry.caption, fontsize=8)
        ax.axis("off")
    return fig


def plot_confusion_matrix(result: "InterpretationResult", normalize: bool = False) -> Any:
    """Counts (or row fractions) with the numbers written in every cell, fastai style."""
    cm = confusion_matrix(result).numpy()
    names = result.task.class_names
    c = len(names)
    values = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    side = min(24.0, max(4.0, 0.6 * c + 2.5))
    fig = figure(side, side)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set_xticks(range(c), names, rotation=90 if c > 6 else 0)
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix ({int(cm.sum())} validation images)")
    if c <= 30:
        threshold = values.max() / 2 if values.size else 0
        for i in range(c):
            for j in range(c):
                text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if values[i, j] > threshold else "black")
    return fig


def bars(names: list[str], series: dict[str, list[float]], title: str, ylabel: str) -> Any:
    """Grouped bars of scores in [0, 1] per name, one colour per series, values written on the bars."""
    n = len(names)
    fig = figure(min(24.0, max(5.0, 0.5 * n * len(series) + 2)), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(n)
    for k, (label, values) in enumerate(series.items()):
        values = [0.0 if v != v else v for v in values]  # NaN (void, absent) drawn as an empty slot
        drawn = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
        ax.bar_label(drawn, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names, rotation=90 if n > 8 else 0)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    return fig


def palette(n: int) -> np.ndarray:
    """[n, 3] uint8 colours, distinct for up to 20 codes (matplotlib's tab10 / tab20)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    return (np.asarray([cmap(i % cmap.N)[:3] for i in range(n)]) * 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, void: int | None, alpha: float = 0.5) -> np.ndarray:
    """A mask of code indices blended over its image; `void` pixels show the plain picture."""
    painted = colours[np.clip(mask, 0, len(colours) - 1)].astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + painted * alpha
    if void is not None:
        out[mask == void] = image[mask == void]
    return out.round().astype(np.uint8)
