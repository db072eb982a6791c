"""Pure analyses of an `InterpretationResult`: counts and scores, no files and no figures.

Each reads what one task's collector kept (see collect.py) and the task's own settings (class
names, thresholds, void code), so the numbers match the training metrics on the same predictions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lightcycle.interpretation.collect import InterpretationResult


def top_loss_rows(result: "InterpretationResult", k: int | None = None) -> list[dict[str, Any]]:
    """One row per image, worst first: `file`, then the task's columns (`loss`, and what explains it)."""
    indices = result.top_losses(k)
    rows = result.task.top_loss_rows(result, indices)
    return [{"file": str(result.files[i]), **row} for i, row in zip(indices, rows)]


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
    true, size = result.targets[:, :-1].float(), result.targets[:, -1:].float()
    pred = result.outputs.reshape(true.shape)
    return ((pred - true) * size / 2).norm(dim=-1).mean(-1)
