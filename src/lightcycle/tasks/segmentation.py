"""Semantic segmentation (CamVid): one code per pixel, a U-Net on the encoder's feature maps.

Its outputs move with the image: flips are undone for TTA, and a centre crop cannot be mapped
back to the whole picture (`check_framing`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError
from lightcycle.metrics import MeanIoU, PixelAccuracy
from lightcycle.models.unet import UnetDecoder
from lightcycle.tasks.base import Framed, Task, register_task

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


@register_task
class SegmentationTask(Task):
    """Semantic segmentation (CamVid): per-pixel softmax over `codes`, a U-Net on the encoder's features.

    Targets are [B, H, W] code indices; pixels of the void code (if any) are ignored by the loss and
    the metrics (`pixel_accuracy`, `miou`). Per-class IoU goes to TensorBoard after each epoch.
    `loss`: `ce_dice` (the default: cross-entropy plus soft Dice, which keeps small classes from
    drowning in the background; docs/benchmarks.md), `ce` or `dice`.
    """

    name = "segmentation"
    backbone_kind = "features"
    outputs_move_with_image = True
    max_outputs = 1_000  # every validation epoch sums a [C, C] pixel confusion matrix; each pixel has C logits

    def __init__(self, class_names: list[str], void_index: int | None = None, loss: str = "ce_dice") -> None:
        if len(class_names) < 2:
            raise LightcycleError(f"segmentation needs at least 2 codes, got {class_names}")
        self.check_output_count(len(class_names), "codes")
        if loss not in SEGMENTATION_LOSSES:
            raise LightcycleError(f"segmentation loss must be one of {', '.join(SEGMENTATION_LOSSES)}, got {loss!r}")
        if void_index is not None and not 0 <= int(void_index) < len(class_names):
            raise LightcycleError(f"void_index {void_index} is not a code index (0..{len(class_names) - 1})")
        self.class_names = list(class_names)
        self.void_index = None if void_index is None else int(void_index)
        self.loss_name = loss

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def _ignore(self) -> int:
        return -100 if self.void_index is None else self.void_index

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: Any, dropout: float) -> nn.Module:
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

    def scored_pixels(self, true: torch.Tensor) -> torch.Tensor:
        """Which pixels of a true mask count: a known code, and not void."""
        keep = (true >= 0) & (true < self.num_classes)
        return keep & (true != self.void_index) if self.void_index is not None else keep

    def check_framing(self, framing: Framed, where: str) -> None:
        """A mask covers every pixel of the original, which a centre crop does not show."""
        if framing.resize == "crop":
            raise LightcycleError(
                f"{where}: segmentation masks cannot be predicted through a centre crop (data.resize=crop), which "
                "leaves out the ends of the picture; predict with resize=pad or resize=squish"
            )
