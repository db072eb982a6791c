"""Pure analyses of an `InterpretationResult`: counts and scores, no files and no figures.

Each reads what one task's collector kept (see collect.py) and the task's own settings (class
names, thresholds, void code), so the numbers match the training metrics on the same predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lightcycle.interpretation.result import InterpretationResult
from lightcycle.point_coords import distances_px

# --- the course's inspection views (fastai 0.7, lesson 1) ---------------------------------------------
# "A few correct labels at random, a few incorrect at random, the most correct of each class, the most
# incorrect of each class, the most uncertain": the task decides what correct, confident and uncertain
# mean (per_task/: `inspection_views`); these helpers pick and rank.
VIEW_NAMES = ("random_correct", "random_incorrect", "most_correct", "most_incorrect", "most_uncertain")


@dataclass
class ViewEntry:
    """One picked image: its `group` (class or tag; "" for the random views), its index in the
    InterpretationResult, its table row and the caption drawn above it."""

    group: str
    index: int
    row: dict[str, Any]
    caption: str


@dataclass
class InspectionView:
    """One inspection view: the table (`rows`, written as `<name>.csv`) and the figure (one row of
    images per group, `<name>.png`) of the images it picked, best first within each group."""

    title: str
    columns: list[str]
    entries: list[ViewEntry] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [e.row for e in self.entries]


def random_picks(mask: torch.Tensor, k: int, seed: int) -> list[int]:
    """Up to `k` indices where `mask` holds, drawn without replacement, the same for the same `seed`."""
    candidates = torch.nonzero(mask.flatten()).flatten()
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(int(seed)))
    return candidates[order[: max(0, int(k))]].tolist()


def ranked_picks(mask: torch.Tensor, score: torch.Tensor, k: int, descending: bool) -> list[int]:
    """The `k` indices where `mask` holds with the highest (or lowest) `score`; ties keep dataset order."""
    candidates = torch.nonzero(mask.flatten()).flatten()
    order = torch.argsort(score.flatten()[candidates].double(), descending=descending, stable=True)
    return candidates[order[: max(0, int(k))]].tolist()


def top2_margin(probs: torch.Tensor) -> torch.Tensor:
    """[N] top-1 minus top-2 probability: how undecided a many-class prediction is (2|p - 0.5| for two
    classes, so ranking by it is fastai's `abs(probs - 0.5)`)."""
    top = probs.topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


# --- classification -----------------------------------------------------------------------------------
def confusion_matrix(result: "InterpretationResult") -> torch.Tensor:
    """[C, C] counts, rows = actual class, columns = predicted class (argmax)."""
    c = len(result.task.class_names)
    actual = result.targets.long()
    predicted = result.outputs.argmax(-1)
    return torch.bincount(actual * c + predicted, minlength=c * c).view(c, c)


def most_confused(result: "InterpretationResult", min_count: int = 1) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) for off-diagonal cells with at least `min_count`, most frequent first."""
    cm = confusion_matrix(result)
    names = result.task.class_names
    pairs = [
        (names[i], names[j], int(cm[i, j]))
        for i in range(len(names))
        for j in range(len(names))
        if i != j and cm[i, j] >= min_count
    ]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


# --- multi-label ------------------------------------------------------------------------------------------
def multilabel_per_class(result: "InterpretationResult") -> list[dict[str, Any]]:
    """Per tag: precision, recall, F1 and F-beta of the task's decisions (tuned thresholds if any)."""
    task = result.task
    pred = task.decode(result.outputs).bool()
    true = result.targets.bool()
    tp = (pred & true).sum(0).double()
    fp = (pred & ~true).sum(0).double()
    fn = (~pred & true).sum(0).double()
    b2 = task.beta**2
    thresholds = task.decision_thresholds
    rows = []
    for i, name in enumerate(task.class_names):
        precision = float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] > 0 else 0.0
        recall = float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] > 0 else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        fbeta = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall > 0 else 0.0
        rows.append(
            {
                "class": name, "precision": precision, "recall": recall, "f1": f1, f"f{task.beta:g}": fbeta,
                "support": int(true[:, i].sum()), "predicted": int(pred[:, i].sum()), "threshold": float(thresholds[i]),
            }
        )
    return rows


# --- segmentation -----------------------------------------------------------------------------------------
def segmentation_confusion(result: "InterpretationResult") -> torch.Tensor:
    """[C, C] pixel counts (rows actual, columns predicted) over all validation images, void excluded."""
    return result.extra["confusion"]


def segmentation_per_class(result: "InterpretationResult") -> list[dict[str, Any]]:
    """Per code: IoU over the validation set (NaN for void or codes absent from truth and prediction)."""
    task = result.task
    cm = segmentation_confusion(result).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    rows = []
    for i, name in enumerate(task.class_names):
        void = i == task.void_index
        iou = float("nan") if void or union[i] == 0 else float(inter[i] / union[i])
        rows.append({"class": name, "iou": iou, "pixels": int(cm[i].sum()), "predicted_pixels": int(cm[:, i].sum()),
                     "void": void})
    return rows


# --- points ------------------------------------------------------------------------------------------------
def point_distances(result: "InterpretationResult") -> torch.Tensor:
    """[N] mean distance between predicted and true points in original pixels (like `val_distance_px`)."""
    return distances_px(result.outputs, result.targets.float()).mean(-1)
