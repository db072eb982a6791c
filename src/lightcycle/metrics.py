"""torchmetrics for the multi-label, segmentation and point tasks, fed with *activated* outputs.

Every metric here takes what `Task.activation` returns (probabilities, coordinates), because the
same metrics score plain validation, TTA and snapshot ensembles, and the last two merge activated
outputs. States are sums (or concatenations) that torchmetrics reduces across DDP processes, so
every sample counts exactly once.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from lightcycle.point_coords import distances_px

# Thresholds tried when tuning per-class decision thresholds on validation predictions.
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


# --- multi-label ---------------------------------------------------------------------------------
class AccuracyMulti(Metric):
    """fastai's `accuracy_multi`: the fraction of (sample, tag) decisions that are right at `thresh`."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresh: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thresh = float(thresh)
        self.add_state("correct", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += ((probs > self.thresh) == target.bool()).sum().float()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp_min(1)


def samples_fbeta(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-sample F-beta of boolean [N, C] decisions (sklearn's average='samples' per row).

    A sample with no true and no predicted tags scores 1 (nothing to find, nothing claimed); sklearn
    would call that 0/0 and fall back to 0, which punishes correct empty predictions.
    """
    pred, target = pred.float(), target.float()
    tp = (pred * target).sum(-1)
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * (target.sum(-1) - tp) + (pred.sum(-1) - tp)
    return torch.where(denom > 0, (1 + b2) * tp / denom.clamp_min(1e-12), torch.ones_like(tp))


def tune_thresholds(
    probs: torch.Tensor, target: torch.Tensor, beta: float, grid: tuple[float, ...] = THRESHOLD_GRID
) -> torch.Tensor:
    """Per-class threshold from `grid` maximising that class's F-beta over the samples.

    Ties go to the threshold nearest 0.5, so a class that is always right keeps the neutral choice.
    """
    t = torch.tensor(grid, dtype=probs.dtype, device=probs.device)  # [G]
    pred = (probs.unsqueeze(0) > t.view(-1, 1, 1)).float()  # [G, N, C]
    truth = target.float().unsqueeze(0)
    tp = (pred * truth).sum(1)  # [G, C]
    fp = (pred * (1 - truth)).sum(1)
    fn = ((1 - pred) * truth).sum(1)
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * fn + fp
    score = torch.where(denom > 0, (1 + b2) * tp / denom.clamp_min(1e-12), torch.ones_like(tp))
    score = score - 1e-6 * (t.view(-1, 1) - 0.5).abs()  # tie-break towards 0.5
    return t[score.argmax(0)]


class FBetaMulti(Metric):
    """Samples-averaged F-beta at a fixed threshold, like fastai's `FBetaMulti(beta, average='samples')`.

    With `tune=True` it also keeps the probabilities and, on `compute`, tunes per-class thresholds
    (`tuned_thresholds`, `tuned_score`) on the synchronised validation set: the task reads them at
    the end of each validation epoch and stores them in the checkpoint for prediction.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, beta: float = 2.0, thresh: float = 0.5, tune: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta, self.thresh, self.tune = float(beta), float(thresh), bool(tune)
        self.add_state("score_sum", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")
        if self.tune:
            self.add_state("probs", [], dist_reduce_fx="cat")
            self.add_state("targets", [], dist_reduce_fx="cat")
        self.tuned_thresholds: torch.Tensor | None = None
        self.tuned_score: float | None = None

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.score_sum += samples_fbeta(probs > self.thresh, target.bool(), self.beta).sum()
        self.count += len(target)
        if self.tune:
            self.probs.append(probs.detach().float())
            self.targets.append(target.detach().float())

    def compute(self) -> torch.Tensor:
        if self.tune and len(self.probs):
            probs = torch.cat(self.probs) if isinstance(self.probs, list) else self.probs
            targets = torch.cat(self.targets) if isinstance(self.targets, list) else self.targets
            self.tuned_thresholds = tune_thresholds(probs, targets, self.beta).cpu()
            pred = probs > self.tuned_thresholds.to(probs.device)
            self.tuned_score = float(samples_fbeta(pred, targets.bool(), self.beta).mean())
        return self.score_sum / self.count.clamp_min(1)


# --- segmentation ----------------------------------------------------------------------------------
class _Confusion(Metric):
    """Pixel confusion matrix [true, predicted] over all classes, void pixels left out."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.add_state("confmat", torch.zeros(self.num_classes, self.num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        pred = probs.argmax(1).flatten()
        target = target.flatten().long()
        keep = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        index = target[keep] * self.num_classes + pred[keep]
        self.confmat += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)


class PixelAccuracy(_Confusion):
    """Fraction of non-void pixels classified right (fastai's `acc_camvid`)."""

    def compute(self) -> torch.Tensor:
        cm = self.confmat.double()
        return (cm.diag().sum() / cm.sum().clamp_min(1)).float()


class MeanIoU(_Confusion):
    """Mean intersection-over-union over the non-void classes present in target or prediction.

    Classes absent from both are left out of the mean rather than counted as 0 or 1.
    `per_class` (NaN for absent classes) is kept after `compute` for TensorBoard.
    """

    per_class: torch.Tensor | None = None

    def compute(self) -> torch.Tensor:
        cm = self.confmat.double()
        inter = cm.diag()
        union = cm.sum(0) + cm.sum(1) - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
        if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            iou[self.ignore_index] = float("nan")
        self.per_class = iou.float().cpu()
        present = ~torch.isnan(iou)
        return (iou[present].mean() if present.any() else torch.tensor(0.0, dtype=torch.double)).float()


# --- points ------------------------------------------------------------------------------------------
class PointDistance(Metric):
    """Mean Euclidean distance between predicted and true points, in pixels of the original image.

    Targets are `[B, K + 1, 2]`: K points in [-1, 1] and, last, the original (width, height), so a
    point's error is scaled back with its own image's size whatever the training resolution.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.double), dist_reduce_fx="sum")

    def update(self, coords: torch.Tensor, target: torch.Tensor) -> None:
        dist = distances_px(coords, target)
        self.total += dist.double().sum()
        self.count += dist.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()
