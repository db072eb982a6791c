"""Point regression (BIWI head pose): K (x, y) points per image, errors in original pixels.

Its outputs move with the image: a flip negates x and swaps symmetric points, predictions come back
in pixels of the original picture, and the worst predictions are drawn over the image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import point_distances
from lightcycle.metrics import PointDistance
from lightcycle.models.heads import ClassifierHead
from lightcycle.point_coords import unscale_points
from lightcycle.tasks.base import Task, csv_number, register_task

if TYPE_CHECKING:
    from lightcycle.interpretation.collect import InterpretationResult
    from lightcycle.predict.writers import SideFiles

POINTS_NOTE = (
    "activated outputs are (x, y) in [-1, 1] of the size x size input, which shows the window "
    "(x0, y0, width, height) of the original picture (input.framing): "
    "x_px = x0 + ((x + 1) * size - 1) / 2 * width / size, likewise y with y0 and height"
)


def input_pixels(coords: torch.Tensor, width: int, height: int) -> np.ndarray:
    """[-1, 1] (lightcycle.point_coords) -> pixel coordinates of a width x height input, as numpy."""
    return unscale_points(coords.detach().float().cpu().numpy(), width, height)


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
    top_losses_title = "Top losses (truth: green circles, predicted: red crosses)"
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
    def _ranged(self) -> bool:
        return self.y_range is not None and self.head == "pooled"

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: Any, dropout: float) -> nn.Module:
        if self.head == "heatmap":
            from lightcycle.models.unet import SoftArgmaxHead

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
        if self._ranged:
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
        if self._ranged:  # back to logits, exact for any range
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

    # --- prediction: points in pixels of the original picture --------------------------------------------
    def prediction(self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Any = None) -> tuple[Any, Any]:
        """Points in pixels of the original picture, exactly through any crop or padding (`window`)."""
        from lightcycle.data.framing import Window

        window = window or Window(0, 0, *original_size)
        pixels = window.to_original(unscale_points(activated.double(), input_size, input_size), input_size).float()
        return pixels, pixels

    def prediction_record(self, pred: Any, name: str, files: "SideFiles") -> tuple[dict[str, Any], dict[str, Any]]:
        points = pred.label.tolist()
        row = {"file": name}
        for i, (x, y) in enumerate(points):
            row[f"x{i}"], row[f"y{i}"] = csv_number(x), csv_number(y)
        return row, {"file": name, "points": points}

    def cleaning_values(self, activated: torch.Tensor, target: torch.Tensor, window: Any, size: int) -> tuple[Any, Any]:
        """The true and the predicted points, [[x, y], ...] in pixels of the original picture."""
        frame = window()
        true, pred = (self.prediction(coords, (frame.width, frame.height), size, frame)[0] for coords in (target[:-1], activated))
        return [[round(v, 2) for v in p] for p in true.tolist()], [[round(v, 2) for v in p] for p in pred.tolist()]

    # --- interpretation: distances in original pixels, truth and prediction drawn on the image ------------
    def top_loss_rows(self, result: "InterpretationResult", indices: list[int]) -> list[dict[str, Any]]:
        distances = point_distances(result)
        return [{"loss": float(result.losses[i]), "distance_px": float(distances[i])} for i in indices]

    def draw_top_loss(self, ax: Any, result: "InterpretationResult", index: int, row: dict[str, Any]) -> str:
        x = result.dataset[index][0]
        height, width = x.shape[-2:]
        true = input_pixels(result.targets[index][:-1], width, height)
        pred = input_pixels(result.outputs[index].reshape(-1, 2), width, height)
        for (tx, ty), (px, py) in zip(true, pred):
            ax.plot([tx, px], [ty, py], color="yellow", linewidth=1)
        ax.scatter(true[:, 0], true[:, 1], s=60, facecolors="none", edgecolors="lime", linewidths=2, label="truth")
        ax.scatter(pred[:, 0], pred[:, 1], s=60, marker="x", color="red", linewidths=2, label="predicted")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        return f"{figures.short(result.files[index])}\nloss {row['loss']:.4f}  error {row['distance_px']:.1f}px"

    def show_sample(self, ax: Any, image: Any, target: torch.Tensor) -> str:
        """The points on their picture, numbered (point 0 first)."""
        height, width = image.shape[:2]
        ax.imshow(image)
        points = input_pixels(target[:-1], width, height)
        ax.scatter(points[:, 0], points[:, 1], s=50, facecolors="none", edgecolors="lime", linewidths=2)
        for i, (x, y) in enumerate(points):
            ax.annotate(self.point_names[i], (x, y), color="yellow", fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        return f"{len(points)} point(s)"

    # --- export ----------------------------------------------------------------------------------------
    def export_activation(self) -> dict[str, Any]:
        reshape = [-1, self.num_points, 2]
        if self._ranged:
            lo, hi = self.y_range  # type: ignore[misc]
            return {"name": "sigmoid_range", "low": lo, "high": hi, "reshape": reshape}
        return {"name": "identity", "reshape": reshape}

    def export_metadata(self) -> dict[str, Any]:
        return {"points": POINTS_NOTE}
