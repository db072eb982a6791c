"""The interpretation report's figures (image grids, inspection views, the confusion matrix, bars),
drawn with lightcycle.drawing's primitives, which this module also names for the per-task files.

Which figures a task shows is decided in `per_task/` (`interpretation_figures`, `plot_top_losses`);
this module only draws.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lightcycle.drawing import (
    PNG,
    figure,
    grid,
    overlay,
    palette,
    panel_grid,
    picture,
    png_bytes,
    render,
    short,
)
from lightcycle.interpretation.analyses import InspectionView, confusion_matrix
from lightcycle.interpretation.result import InterpretationResult

__all__ = [  # the primitives are named here too: the per-task files draw through this module
    "PNG", "bars", "figure", "grid", "image_grid", "overlay", "palette", "panel_grid", "picture", "plot_confusion_matrix",
    "plot_view", "png_bytes", "render", "short",
]

MAX_VIEW_GROUPS = 12  # rows of a per-class view's figure; its table lists every class


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
