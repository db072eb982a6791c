"""One small object per task: its head, loss, metrics, activation and how to describe itself.

`VisionModule` and the callbacks stay task-agnostic by asking the task. A task serialises to plain
data (`to_config`) so checkpoints keep class names and thresholds without pickled objects and can be
loaded with `weights_only=True`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightcycle.metrics import AccuracyMulti, FBetaMulti, MeanIoU, PixelAccuracy, PointDistance
from lightcycle.models.heads import ClassifierHead


class Task:
    """The interface every task implements."""

    name: ClassVar[str]
    monitor: ClassVar[str] = "val_loss"  # what "best" checkpoints optimise
    monitor_mode: ClassVar[str] = "min"
    # What the head consumes: "pooled" = one feature vector per image (classifier-style heads);
    # "features" = the encoder's feature maps, stride 2 to 32 (timm features_only), for dense heads.
    backbone_kind: ClassVar[str] = "pooled"
    # Peak learning rate when model.lr is not set: each task's measured best (docs/benchmarks.md, task defaults).
    default_lr: ClassVar[float] = 3e-3

    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of every sample, shape [N], from raw outputs (what "top losses" ranks).

        The generic version calls `loss` once per sample; tasks override it with `reduction="none"`.
        """
        return torch.stack([self.loss(output[i : i + 1], target[i : i + 1]) for i in range(len(output))])

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        """Map raw model outputs to what users consume (probabilities, coordinates)."""
        raise NotImplementedError

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss computed from activated outputs (probabilities, coordinates).

        TTA and snapshot ensembles merge activated outputs, so their loss must start from there.
        """
        raise NotImplementedError

    def unflip(self, output: torch.Tensor) -> torch.Tensor:
        """Map the output for a horizontally flipped input back to the unflipped frame (for TTA).

        Image-level outputs (classes, tags) do not move with a flip; dense and spatial tasks
        (masks, points) override this.
        """
        return output

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        """Turn activated outputs into final answers (class index, tag decisions, mask, points)."""
        return activated

    def on_validation_epoch_end(self, metrics: MetricCollection) -> dict[str, float]:
        """Read what a validation epoch learned beyond scalar metrics (per-class IoU, tuned thresholds).

        Called with the module's (already updated) validation metrics; may update the task's own
        state, which the module then writes into the checkpoint's hyperparameters. Returns extra
        scalars for the loggers only (TensorBoard), not for metrics.json.
        """
        return {}

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError


class ErrorRate(MulticlassAccuracy):
    """1 - accuracy, fastai's `error_rate`, synchronised across processes like any torchmetric."""

    def compute(self) -> torch.Tensor:
        return 1.0 - super().compute()


class ClassificationTask(Task):
    """Single-label classification: softmax over classes, cross-entropy, accuracy and error rate."""

    name = "classification"

    def __init__(self, class_names: list[str], label_smoothing: float = 0.0) -> None:
        if len(class_names) < 2:
            raise ValueError(f"classification needs at least 2 classes, got {class_names}")
        self.class_names = list(class_names)
        self.label_smoothing = float(label_smoothing)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        return ClassifierHead(num_features, self.num_classes, dropout=dropout)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing, reduction="none")

    def metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(self.num_classes, average="micro"),
                "error_rate": ErrorRate(self.num_classes, average="micro"),
            }
        )

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return output.softmax(dim=-1)

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(activated.clamp_min(1e-8).log(), target)

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.argmax(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "class_names": self.class_names, "label_smoothing": self.label_smoothing}


class MultiLabelTask(Task):
    """Multi-label classification (Planet): independent sigmoids, BCE with logits.

    Metrics at the fixed `thresh`: `accuracy_multi` (per decision), and samples-averaged `fbeta`
    (`beta`, Planet's F2) and `f1` like fastai's `FBetaMulti(average='samples')`. Each validation
    epoch also tunes one threshold per tag (maximising that tag's F-beta over a grid); they are stored
    as plain floats in `to_config` (so in the checkpoint) and used by `decode` for prediction.
    """

    name = "multilabel"

    def __init__(
        self, class_names: list[str], thresh: float = 0.5, beta: float = 2.0, thresholds: list[float] | None = None
    ) -> None:
        if not class_names:
            raise ValueError("multi-label classification needs at least 1 tag")
        if not 0.0 < float(thresh) < 1.0:
            raise ValueError(f"thresh must be between 0 and 1, got {thresh}")
        self.class_names = list(class_names)
        self.thresh = float(thresh)
        self.beta = float(beta)
        if thresholds is not None and len(thresholds) != len(self.class_names):
            raise ValueError(f"{len(thresholds)} thresholds for {len(self.class_names)} tags")
        self.thresholds = [float(t) for t in thresholds] if thresholds is not None else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        return ClassifierHead(num_features, self.num_classes, dropout=dropout)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target.float())

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target.float(), reduction="none").mean(-1)

    def metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "accuracy_multi": AccuracyMulti(self.thresh),
                "fbeta": FBetaMulti(self.beta, self.thresh, tune=True),
                "f1": FBetaMulti(1.0, self.thresh),
            },
            compute_groups=False,
        )

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return output.sigmoid()

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy(activated.clamp(1e-7, 1 - 1e-7), target.float())

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        """Tag decisions [N, C]: tuned per-tag thresholds when training produced them, else `thresh`."""
        if self.thresholds is None:
            return activated > self.thresh
        return activated > torch.tensor(self.thresholds, dtype=activated.dtype, device=activated.device)

    def on_validation_epoch_end(self, metrics: MetricCollection) -> dict[str, float]:
        fbeta = next((m for m in metrics.values() if isinstance(m, FBetaMulti) and m.tune), None)
        if fbeta is None or fbeta.update_count == 0:
            return {}
        fbeta.compute()
        if fbeta.tuned_thresholds is None:
            return {}
        self.thresholds = [round(float(t), 4) for t in fbeta.tuned_thresholds]
        logs = {"val_fbeta_tuned": float(fbeta.tuned_score or 0.0)}
        logs.update({f"threshold/{name}": t for name, t in zip(self.class_names, self.thresholds)})
        return logs

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class_names": self.class_names,
            "thresh": self.thresh,
            "beta": self.beta,
            "thresholds": self.thresholds,
        }


SEGMENTATION_LOSSES: tuple[str, ...] = ("ce", "dice", "ce_dice")


def dice_loss(probs: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Soft Dice (1 - mean over classes present) on probabilities, void pixels left out."""
    num_classes = probs.shape[1]
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    onehot = F.one_hot(target.clamp(0, num_classes - 1).long(), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    weight = keep.unsqueeze(1).to(probs.dtype)
    inter = (probs * onehot * weight).sum((0, 2, 3))
    total = ((probs + onehot) * weight).sum((0, 2, 3))
    present = onehot.mul(weight).sum((0, 2, 3)) > 0
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        present[ignore_index] = False
    dice = (2 * inter + 1.0) / (total + 1.0)
    return 1 - dice[present].mean() if present.any() else probs.sum() * 0


class SegmentationTask(Task):
    """Semantic segmentation (CamVid): per-pixel softmax over `codes`, a U-Net on the encoder's features.

    Targets are [B, H, W] code indices; pixels of the void code (if any) are ignored by the loss and
    the metrics (`pixel_accuracy`, `miou`). Per-class IoU goes to TensorBoard after each epoch.
    `loss`: `ce_dice` (the default: cross-entropy plus soft Dice, which keeps small classes from
    drowning in the background; docs/benchmarks.md), `ce` or `dice`.
    """

    name = "segmentation"
    backbone_kind = "features"

    def __init__(self, class_names: list[str], void_index: int | None = None, loss: str = "ce_dice") -> None:
        if len(class_names) < 2:
            raise ValueError(f"segmentation needs at least 2 codes, got {class_names}")
        if loss not in SEGMENTATION_LOSSES:
            raise ValueError(f"segmentation loss must be one of {', '.join(SEGMENTATION_LOSSES)}, got {loss!r}")
        if void_index is not None and not 0 <= int(void_index) < len(class_names):
            raise ValueError(f"void_index {void_index} is not a code index (0..{len(class_names) - 1})")
        self.class_names = list(class_names)
        self.void_index = None if void_index is None else int(void_index)
        self.loss_name = loss

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def _ignore(self) -> int:
        return -100 if self.void_index is None else self.void_index

    def build_head(self, backbone: nn.Module, num_features: Any, dropout: float) -> nn.Module:
        from lightcycle.models.unet import UnetDecoder

        return UnetDecoder(list(backbone.feature_info.channels()), self.num_classes)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        total = output.new_zeros(())
        if self.loss_name in ("ce", "ce_dice"):
            total = total + F.cross_entropy(output, target, ignore_index=self._ignore)
        if self.loss_name in ("dice", "ce_dice"):
            total = total + dice_loss(output.softmax(1), target, self.void_index)
        return total

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per image: cross-entropy averaged over its non-void pixels (NaN if all are void), + its Dice loss."""
        if self.loss_name != "ce":
            return super().per_sample_loss(output, target)
        target = target.long()
        pixels = F.cross_entropy(output, target, ignore_index=self._ignore, reduction="none")
        keep = (target != self._ignore).flatten(1)
        return pixels.flatten(1).sum(1) / keep.sum(1)  # 0/0 = NaN: nothing to score in that image

    def metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "pixel_accuracy": PixelAccuracy(self.num_classes, self.void_index),
                "miou": MeanIoU(self.num_classes, self.void_index),
            }
        )

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        return output.softmax(dim=1)

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        total = activated.new_zeros(())
        if self.loss_name in ("ce", "ce_dice"):
            total = total + F.nll_loss(activated.clamp_min(1e-8).log(), target, ignore_index=self._ignore)
        if self.loss_name in ("dice", "ce_dice"):
            total = total + dice_loss(activated, target, self.void_index)
        return total

    def unflip(self, output: torch.Tensor) -> torch.Tensor:
        return output.flip(-1)

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.argmax(1)

    def on_validation_epoch_end(self, metrics: MetricCollection) -> dict[str, float]:
        miou = next((m for m in metrics.values() if isinstance(m, MeanIoU)), None)
        if miou is None or miou.update_count == 0:
            return {}
        miou.compute()
        if miou.per_class is None:
            return {}
        return {
            f"val_iou/{name}": float(v)
            for name, v in zip(self.class_names, miou.per_class.tolist())
            if v == v  # NaN: the class is void or absent from this validation set
        }

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "class_names": self.class_names, "void_index": self.void_index, "loss": self.loss_name}


class PointsTask(Task):
    """Point regression (BIWI head pose): K (x, y) points in [-1, 1], MSE, error in original pixels.

    Outputs are [B, 2K] raw, activated to [B, K, 2] coordinates (through fastai's `sigmoid_range`
    when `y_range` is set). Targets are [B, K + 1, 2]: the points, then the original (width, height)
    that `val_distance_px` scales errors with. `flip_pairs` name symmetric points (left/right eye)
    whose labels swap under a horizontal flip.

    `head`: `heatmap` (the default: a U-Net decoder and a soft-argmax per point on the encoder's
    feature maps, far more precise for the same epochs, docs/benchmarks.md) or `pooled` (fastai's: a
    classifier-style head regresses the coordinates from the pooled features; `y_range` applies to it only).
    """

    name = "points"

    def __init__(
        self,
        num_points: int,
        y_range: tuple[float, float] | list[float] | None = None,
        flip_pairs: list[list[int]] | list[tuple[int, int]] | None = None,
        point_names: list[str] | None = None,
        head: str = "heatmap",
    ) -> None:
        if int(num_points) < 1:
            raise ValueError(f"points needs at least 1 point, got {num_points}")
        if head not in ("pooled", "heatmap"):
            raise ValueError(f"points head must be pooled or heatmap, got {head!r}")
        self.num_points = int(num_points)
        self.head = head
        self.backbone_kind = "features" if head == "heatmap" else "pooled"
        if y_range is not None:
            lo, hi = (float(v) for v in y_range)
            if not lo < hi:
                raise ValueError(f"y_range must be (low, high) with low < high, got {y_range}")
            self.y_range: tuple[float, float] | None = (lo, hi)
        else:
            self.y_range = None
        self.flip_pairs = [[int(a), int(b)] for a, b in (flip_pairs or [])]
        for a, b in self.flip_pairs:
            if not (0 <= a < self.num_points and 0 <= b < self.num_points) or a == b:
                raise ValueError(f"flip_pairs: {[a, b]} is not a pair of point indices 0..{self.num_points - 1}")
        self.point_names = list(point_names) if point_names else [f"p{i}" for i in range(self.num_points)]

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
        if self.y_range is not None and self.head == "pooled":
            lo, hi = self.y_range
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
        if self.y_range is not None and self.head == "pooled":  # back to logits, exact for any range
            lo, hi = self.y_range
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


TASKS: dict[str, type[Task]] = {
    task.name: task for task in (ClassificationTask, MultiLabelTask, SegmentationTask, PointsTask)
}


def task_from_config(config: dict[str, Any] | Task) -> Task:
    """Rebuild a task from the plain data stored in a checkpoint."""
    if isinstance(config, Task):
        return config
    config = dict(config)
    name = config.pop("name", None)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name](**config)
