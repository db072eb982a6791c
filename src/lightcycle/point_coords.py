"""Point coordinates: pixels <-> the [-1, 1] values a points model learns, and its error in pixels.

Pixel-centre convention: pixel x of a picture `width` pixels wide is (2x + 1) / width - 1, so a
horizontal flip (x -> width - 1 - x) is exactly x -> -x, which TTA and flip augmentation rely on.

A points target is [K + 1, 2]: the K points in [-1, 1], then the picture's original (width, height);
an error in [-1, 1] units times half that size is an error in the original picture's pixels, whatever
size the model was trained at. `val_distance_px` (metrics.PointDistance) and interpretation's distances
are this one formula.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def scale_points(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """[K, 2] (x, y) pixels of a width x height picture -> [-1, 1] (pixel-centre convention)."""
    return np.stack([(2 * xy[:, 0] + 1) / width - 1, (2 * xy[:, 1] + 1) / height - 1], axis=1)


def unscale_points(coords: np.ndarray | torch.Tensor, width: int, height: int) -> Any:
    """[..., 2] values in [-1, 1] -> pixels of a width x height picture (the inverse of `scale_points`);
    numpy in, numpy out; a tensor in, a tensor out."""
    x = ((coords[..., 0] + 1) * width - 1) / 2
    y = ((coords[..., 1] + 1) * height - 1) / 2
    return np.stack([x, y], -1) if isinstance(coords, np.ndarray) else torch.stack([x, y], -1)


def distances_px(coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, K] Euclidean distance between predicted points (`coords`, [B, K, 2] or [B, 2K] in [-1, 1])
    and a [B, K + 1, 2] points target, in pixels of each original picture."""
    true, size = target[:, :-1], target[:, -1:]
    return ((coords.reshape(true.shape) - true) * size / 2).norm(dim=-1)
