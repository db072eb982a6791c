"""Drawing primitives on matplotlib Figures, never pyplot's global state: one look for every picture
lightcycle draws (interpretation's report, a look at the training samples, the LR range test).

Figures are made with `matplotlib.figure.Figure` (no GUI backend, safe in workers and callbacks)
and matplotlib is imported only when a figure is drawn, so modules can name these helpers without
paying for it at import time.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

PANEL_W, PANEL_H = 2.4, 2.7  # inches per image panel: a 240 px picture under a two-line caption


def figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    """A Figure of width x height inches; a constrained layout by default (labels never overlap).
    Image grids pass layout=None and place their panels with `panel_grid`: the constrained solver
    costs seconds on the dozens of panels of a per-class view, a fixed grid nothing."""
    # deferred: matplotlib loads only when a figure is drawn
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
    # deferred: matplotlib loads only when a figure is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png_bytes(fig: Any) -> "PNG":
    """Draw and encode a Figure once: the same PNG goes into the report folder and into TensorBoard
    (drawing a figure costs more than anything else in the report; zlib level 3 encodes several
    times faster than the default 6 for files about 10 % larger)."""
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


def palette(n: int) -> np.ndarray:
    """[n, 3] uint8 colours, distinct for up to 20 codes (matplotlib's tab10 / tab20)."""
    # deferred: matplotlib loads only when a figure is drawn
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
