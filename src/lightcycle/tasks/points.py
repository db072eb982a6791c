"""Point regression (BIWI head pose): K (x, y) points per image, errors in original pixels.

Its outputs move with the image: a flip negates x and swaps symmetric points.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError
from lightcycle.metrics import PointDistance
from lightcycle.models.heads import ClassifierHead
from lightcycle.models.unet import SoftArgmaxHead
from lightcycle.tasks.base import Task, register_task


@register_task
class PointsTask(Task):
    """Point regression (BIWI head pose): K (x, y) points in [-1, 1], MSE, error in original pixels.

    Outputs are [B, 2K] raw, activated to [B, K, 2] coordinates (through fastai's `sigmoid_range`
    when `y_range` is set). Targets are [B, K + 1, 2]: the points, then the original (width, height)
    that `val_distance_px` scales errors with. `flip_pairs` name symmetric points (left/right eye)
    whose labels swap under a horizontal flip.

    `head`: `heatmap` (the default: a U-Net decoder and a soft-argmax per point on the encoder's
    feature maps, far more precise for the same epochs, docs/benchmarks.md) or `pooled` (fastai's: a
    classifier-style head regresses the coordinates from the pooled features; `y_range` applies to it only).
    Without `model.lr`, the heatmap head trains at 1e-2 and the pooled head at 3e-3, each its measured best.
    """

    name = "points"
    outputs_move_with_image = True
    max_outputs = 1_000  # a heatmap head predicts one map per point

    def __init__(
        self,
        num_points: int,
        y_range: tuple[float, float] | list[float] | None = None,
        flip_pairs: list[list[int]] | list[tuple[int, int]] | None = None,
        point_names: list[str] | None = None,
        head: str = "heatmap",
    ) -> None:
        if int(num_points) < 1:
            raise LightcycleError(f"points needs at least 1 point, got {num_points}")
        self.check_output_count(int(num_points), "points")
        if head not in ("pooled", "heatmap"):
            raise LightcycleError(f"points head must be pooled or heatmap, got {head!r}")
        self.num_points = int(num_points)
        self.head = head
        self.backbone_kind = "features" if head == "heatmap" else "pooled"
        # Measured per head (docs/benchmarks.md, task defaults): the heatmap head gains from 1e-2,
        # the pooled head keeps the image-level 3e-3.
        self.default_lr = 1e-2 if head == "heatmap" else Task.default_lr
        if y_range is not None:
            lo, hi = (float(v) for v in y_range)
            if not lo < hi:
                raise LightcycleError(f"y_range must be (low, high) with low < high, got {y_range}")
            self.y_range: tuple[float, float] | None = (lo, hi)
        else:
            self.y_range = None
        self.flip_pairs = [[int(a), int(b)] for a, b in (flip_pairs or [])]
        for a, b in self.flip_pairs:
            if not (0 <= a < self.num_points and 0 <= b < self.num_points) or a == b:
                raise LightcycleError(f"flip_pairs: {[a, b]} is not a pair of point indices 0..{self.num_points - 1}")
        self.point_names = list(point_names) if point_names else [f"p{i}" for i in range(self.num_points)]

    @property
    def ranged(self) -> bool:
        """Whether outputs go through `sigmoid_range` (`y_range` set, pooled head)."""
        return self.y_range is not None and self.head == "pooled"

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: Any, dropout: float) -> nn.Module:
        if self.head == "heatmap":
            info = backbone.feature_info
            return SoftArgmaxHead(info.channels(), info.reduction(), self.num_points)
        return ClassifierHead(num_features, 2 * self.num_points, dropout=dropout)

    def _points(self, target: torch.Tensor) -> torch.Tensor:
        return target[:, :-1].float()

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.activation(output), self._points(target))

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.activation(output), self._points(target), reduction="none").flatten(1).mean(1)

    def metrics(self) -> MetricCollection:
        return MetricCollection({"distance_px": PointDistance()})

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        coords = output.reshape(len(output), self.num_points, 2)
        if self.ranged:
            lo, hi = self.y_range  # type: ignore[misc]
            coords = coords.sigmoid() * (hi - lo) + lo
        return coords

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(activated.reshape(len(activated), self.num_points, 2), self._points(target))

    def swap_pairs(self, coords: torch.Tensor) -> torch.Tensor:
        """Swap the labels of symmetric points along dim -2 (points are [..., K, 2])."""
        if not self.flip_pairs:
            return coords
        order = list(range(self.num_points))
        for a, b in self.flip_pairs:
            order[a], order[b] = b, a
        return coords[..., order, :]

    def unflip(self, output: torch.Tensor) -> torch.Tensor:
        """Raw output of a flipped input -> raw output for the original: negate x, swap pairs."""
        coords = self.swap_pairs(self.activation(output)).clone()
        coords[..., 0] = -coords[..., 0]
        if self.ranged:  # back to logits, exact for any range
            lo, hi = self.y_range  # type: ignore[misc]
            coords = torch.logit(((coords - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6))
        return coords.reshape(output.shape)

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_points": self.num_points,
            "y_range": list(self.y_range) if self.y_range is not None else None,
            "flip_pairs": self.flip_pairs,
            "point_names": self.point_names,
            "head": self.head,
        }

    @property
    def output_names(self) -> list[str]:
        return list(self.point_names)

    def output_signature(self) -> dict[str, Any]:
        return {"num points": self.num_points}
