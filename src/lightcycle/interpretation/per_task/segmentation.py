"""Semantic segmentation, interpreted per code: IoU per code, and the worst images with truth and
prediction laid over them. The pass never holds per-pixel outputs for the whole validation set:
it keeps a pixel confusion matrix and the masks of the worst images only (`WorstMasks`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import segmentation_per_class
from lightcycle.interpretation.per_task.base import (
    Table,
    TaskInterpretation,
    task_interpretation,
)
from lightcycle.interpretation.result import Collector, InterpretationResult
from lightcycle.tasks.segmentation import SegmentationTask


@task_interpretation.register("segmentation")
class SegmentationInterpretation(TaskInterpretation):
    """IoU per code, the worst images with truth and prediction overlaid."""

    top_losses_title = "Worst images: input | truth | prediction"

    def interpretation_collector(self, keep: int) -> Collector:
        return WorstMasks(self.task, keep)

    def top_loss_rows(self, result: InterpretationResult, indices: list[int]) -> list[dict[str, Any]]:
        return [{"loss": float(result.losses[i]), "pixel_accuracy": float(result.outputs[i])} for i in indices]

    def interpretation_tables(self, result: InterpretationResult) -> dict[str, Table]:
        return {"per_class_iou": (segmentation_per_class(result), None)}

    def interpretation_figures(self, result: InterpretationResult) -> dict[str, Any]:
        rows = [r for r in segmentation_per_class(result) if not r["void"]]
        miou = np.nanmean([r["iou"] for r in rows]) if any(r["iou"] == r["iou"] for r in rows) else float("nan")
        return {"per_class_iou": figures.bars([r["class"] for r in rows], {"IoU": [r["iou"] for r in rows]},
                                              f"Per-class IoU (validation, mean {miou:.3f})", "IoU")}

    def plot_top_losses(self, result: InterpretationResult, indices: list[int]) -> Any:
        """One row per worst image: the input, the true mask over it, the predicted mask over it."""
        # deferred: matplotlib is imported only when a figure is drawn (figures.py's rule)
        from matplotlib.patches import Patch

        task = self.task
        palette = figures.palette(task.num_classes)
        fig = figures.figure(9.0, 3.0 * max(1, len(indices)) + 0.8)
        fig.suptitle(self.top_losses_title)
        for r, i in enumerate(indices):
            image = result.image(i)
            if i not in result.extra["masks"]:
                raise LightcycleError(f"image {i}'s masks were not kept: collect(keep_masks=...) must cover top_k")
            pred, true = (m.numpy() for m in result.extra["masks"][i])
            panels = [
                (image, f"{figures.short(result.files[i])}\nloss {float(result.losses[i]):.3f}"),
                (figures.overlay(image, true, palette, task.void_index), "truth"),
                (figures.overlay(image, pred, palette, None), f"prediction (pixel acc {float(result.outputs[i]):.2f})"),
            ]
            for c, (panel, title) in enumerate(panels):
                ax = fig.add_subplot(len(indices), 3, 3 * r + c + 1)
                ax.imshow(panel)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        handles = [Patch(color=palette[k] / 255, label=f"{name} (ignored in truth)" if k == task.void_index else name)
                   for k, name in enumerate(task.class_names)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)), fontsize=8)
        return fig

    def summary_lines(self, result: InterpretationResult, limit: int) -> list[str]:
        return ["per-class IoU:"] + [f"  {r['class']}: {r['iou']:.3f}" for r in segmentation_per_class(result) if not r["void"]]


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
