"""Semantic segmentation (CamVid): one code per pixel, a U-Net on the encoder's feature maps.

Its outputs move with the image (flips are undone for TTA, masks come back at the original size),
and its interpretation never holds per-pixel outputs for the whole validation set: the pass keeps a
pixel confusion matrix and the masks of the worst images only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import segmentation_per_class
from lightcycle.interpretation.collect import Collector
from lightcycle.metrics import MeanIoU, PixelAccuracy
from lightcycle.tasks.base import Table, Task, register_task

if TYPE_CHECKING:
    from lightcycle.interpretation.collect import InterpretationResult
    from lightcycle.predict.writers import SideFiles

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
    top_losses_title = "Worst images: input | truth | prediction"
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

    def scored_pixels(self, true: torch.Tensor) -> torch.Tensor:
        """Which pixels of a true mask count: a known code, and not void."""
        keep = (true >= 0) & (true < self.num_classes)
        return keep & (true != self.void_index) if self.void_index is not None else keep

    # --- prediction: the mask at the original size, written as a PNG beside the table --------------------
    def check_framing(self, framing: Any, where: str) -> None:
        """A mask covers every pixel of the original, which a centre crop does not show."""
        if framing.resize == "crop":
            raise LightcycleError(
                f"{where}: segmentation masks cannot be predicted through a centre crop (data.resize=crop), which "
                "leaves out the ends of the picture; predict with resize=pad or resize=squish"
            )

    def prediction(self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Any = None) -> tuple[Any, Any]:
        """The mask at the original size: the input upsampled to its window, the padding cut off."""
        from lightcycle.data.framing import Window

        width, height = original_size
        window = window or Window(0, 0, width, height)
        if not window.covers(width, height):
            raise LightcycleError(f"the {width}x{height} picture's input shows only {window}: its mask cannot be predicted")
        probs = F.interpolate(activated[None], size=(window.height, window.width), mode="bilinear", align_corners=False)[0]
        probs = probs[:, -window.y0 : height - window.y0, -window.x0 : width - window.x0]
        mask = probs.argmax(0)
        return mask, mask

    def prediction_record(self, pred: Any, name: str, files: "SideFiles") -> tuple[dict[str, Any], dict[str, Any]]:
        mask_file = files.mask(name, pred.label, self.num_classes)
        return {"file": name, "mask": mask_file}, {"file": name, "mask": mask_file}

    def served_record(self, pred: Any, name: str, files: "SideFiles") -> dict[str, Any]:
        """Also the codes in mask order and each code's share of the picture's pixels."""
        record = self.prediction_record(pred, name, files)[1]
        counts = torch.bincount(pred.label.flatten().long(), minlength=self.num_classes).double()
        shares = (counts / max(1, pred.label.numel())).tolist()
        return {**record, "codes": self.class_names, "shares": dict(zip(self.class_names, shares))}

    # --- interpretation: IoU per code, the worst images with truth and prediction overlaid ---------------
    def interpretation_collector(self, keep: int) -> Collector:
        return WorstMasks(self, keep)

    def top_loss_rows(self, result: "InterpretationResult", indices: list[int]) -> list[dict[str, Any]]:
        return [{"loss": float(result.losses[i]), "pixel_accuracy": float(result.outputs[i])} for i in indices]

    def interpretation_tables(self, result: "InterpretationResult") -> dict[str, Table]:
        return {"per_class_iou": (segmentation_per_class(result), None)}

    def interpretation_figures(self, result: "InterpretationResult") -> dict[str, Any]:
        rows = [r for r in segmentation_per_class(result) if not r["void"]]
        miou = np.nanmean([r["iou"] for r in rows]) if any(r["iou"] == r["iou"] for r in rows) else float("nan")
        return {"per_class_iou": figures.bars([r["class"] for r in rows], {"IoU": [r["iou"] for r in rows]},
                                              f"Per-class IoU (validation, mean {miou:.3f})", "IoU")}

    def plot_top_losses(self, result: "InterpretationResult", indices: list[int]) -> Any:
        """One row per worst image: the input, the true mask over it, the predicted mask over it."""
        from matplotlib.patches import Patch

        palette = figures.palette(self.num_classes)
        fig = figures.figure(9.0, 3.0 * max(1, len(indices)) + 0.8)
        fig.suptitle(self.top_losses_title)
        for r, i in enumerate(indices):
            image = result.image(i)
            if i not in result.extra["masks"]:
                raise LightcycleError(f"image {i}'s masks were not kept: collect(keep_masks=...) must cover top_k")
            pred, true = (m.numpy() for m in result.extra["masks"][i])
            panels = [
                (image, f"{figures.short(result.files[i])}\nloss {float(result.losses[i]):.3f}"),
                (figures.overlay(image, true, palette, self.void_index), "truth"),
                (figures.overlay(image, pred, palette, None), f"prediction (pixel acc {float(result.outputs[i]):.2f})"),
            ]
            for c, (panel, title) in enumerate(panels):
                ax = fig.add_subplot(len(indices), 3, 3 * r + c + 1)
                ax.imshow(panel)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        handles = [Patch(color=palette[k] / 255, label=f"{name} (ignored in truth)" if k == self.void_index else name)
                   for k, name in enumerate(self.class_names)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)), fontsize=8)
        return fig

    def show_sample(self, ax: Any, image: Any, target: torch.Tensor) -> str:
        """The mask over its picture, one colour per code (void pixels show the plain picture)."""
        mask = target.long().numpy()
        ax.imshow(figures.overlay(image, mask, figures.palette(self.num_classes), self.void_index, alpha=0.6))
        present = [self.class_names[c] for c in np.unique(mask) if 0 <= c < self.num_classes and c != self.void_index]
        return ", ".join(present)

    def summary_lines(self, result: "InterpretationResult", limit: int) -> list[str]:
        return ["per-class IoU:"] + [f"  {r['class']}: {r['iou']:.3f}" for r in segmentation_per_class(result) if not r["void"]]

    # --- export ----------------------------------------------------------------------------------------
    def export_activation(self) -> dict[str, Any]:
        return {"name": "softmax", "axis": 1}

    def export_metadata(self) -> dict[str, Any]:
        return {"void_index": self.void_index}


class WorstMasks(Collector):
    """Per batch: the pixel confusion [C, C] (void left out), each image's pixel accuracy, and the
    (predicted, true) masks of the `keep` highest-loss images so far, because per-pixel outputs of a
    whole validation set need not fit in memory.

    The result's `outputs` are the pixel accuracies [N] (NaN for an all-void image), its `targets`
    are empty, and its `extra` holds `confusion` and `masks` {index: (predicted, true)}.
    """

    def __init__(self, task: SegmentationTask, keep: int) -> None:
        self.task, self.keep = task, int(keep)
        self.confusion = torch.zeros(task.num_classes, task.num_classes, dtype=torch.long)
        self.masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.accuracy: list[torch.Tensor] = []
        self.seen = 0

    def add(self, activated: torch.Tensor, target: torch.Tensor, losses: torch.Tensor) -> None:
        c = self.task.num_classes
        pred, true = self.task.decode(activated).cpu(), target.long().cpu()
        keep = self.task.scored_pixels(true)
        self.confusion += torch.bincount(true[keep] * c + pred[keep], minlength=c * c).view(c, c)
        hits = ((pred == true) & keep).flatten(1).sum(1).double()
        self.accuracy.append((hits / keep.flatten(1).sum(1)).float())  # 0/0 = NaN: all void
        for j in range(len(pred)):
            self.masks[self.seen + j] = (pred[j].to(torch.int16), true[j].to(torch.int16))
        self.seen += len(pred)
        if len(self.masks) > self.keep:  # drop all but the highest losses seen so far
            ranked = sorted(self.masks, key=lambda i: -float(torch.nan_to_num(losses[i], nan=-math.inf)))
            for i in ranked[self.keep:]:
                del self.masks[i]

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        outputs = torch.cat(self.accuracy) if self.accuracy else torch.empty(0)
        return outputs, torch.empty(0), {"confusion": self.confusion, "masks": self.masks}
