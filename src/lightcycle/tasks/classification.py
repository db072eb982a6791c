"""Single-label classification (dogscats, ImageFolder, CSV labels): one class per image.

Softmax over the classes, cross-entropy (optionally label-smoothed), accuracy and error rate;
interpreted with fastai's confusion matrix, most-confused pairs and top losses. MixUp/CutMix hand
the loss soft targets that timm's Mixup has already smoothed, so the loss does not smooth them again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import (
    InspectionView, ViewEntry, confusion_matrix, most_confused, random_picks, ranked_picks, top2_margin,
)
from lightcycle.models.heads import ClassifierHead
from lightcycle.tasks.base import Table, Task, csv_number, output_score, register_task

if TYPE_CHECKING:
    from lightcycle.interpretation.collect import InterpretationResult
    from lightcycle.predict.writers import SideFiles


VIEW_COLUMNS = ["file", "actual", "predicted", "prob_actual", "prob_predicted", "margin"]  # inspection tables


class ErrorRate(MulticlassAccuracy):
    """1 - accuracy, fastai's `error_rate`, synchronised across processes like any torchmetric."""

    def compute(self) -> torch.Tensor:
        return 1.0 - super().compute()


@register_task
class ClassificationTask(Task):
    """Single-label classification: softmax over classes, cross-entropy, accuracy and error rate."""

    name = "classification"

    def __init__(self, class_names: list[str], label_smoothing: float = 0.0) -> None:
        if len(class_names) < 2:
            raise LightcycleError(f"classification needs at least 2 classes, got {class_names}")
        self.check_output_count(len(class_names))
        self.class_names = list(class_names)
        self.label_smoothing = 0.0
        self.set_label_smoothing(label_smoothing)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        return ClassifierHead(num_features, self.num_classes, dropout=dropout)

    def set_label_smoothing(self, value: float) -> None:
        if not 0.0 <= float(value) < 1.0:
            raise LightcycleError(f"model.label_smoothing must be in [0, 1), got {value}")
        self.label_smoothing = float(value)

    def _smoothing(self, target: torch.Tensor) -> float:
        # Soft targets (MixUp/CutMix) come smoothed from the mixer: smoothing them again would double it.
        return 0.0 if target.is_floating_point() else self.label_smoothing

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self._smoothing(target))

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Unsmoothed, as validation measures it: smoothing would lift every confident right answer.
        return F.cross_entropy(output, target, reduction="none")

    def validation_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)  # unsmoothed, like tta_loss and ensemble_loss

    def mix_settings(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "label_smoothing": self.label_smoothing, "multi_label": False}

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

    # --- prediction: the class name, its index and the probabilities ------------------------------------
    def prediction(self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Any = None) -> tuple[Any, Any]:
        index = int(activated.argmax())
        return self.class_names[index], index

    def prediction_record(self, pred: Any, name: str, files: "SideFiles") -> tuple[dict[str, Any], dict[str, Any]]:
        probs = pred.probs.tolist()
        row = {"file": name, "label": pred.label, **{f"prob_{c}": csv_number(p) for c, p in zip(self.class_names, probs)}}
        return row, {"file": name, "label": pred.label, "probabilities": dict(zip(self.class_names, probs))}

    # --- interpretation: confusion matrix, most confused, the probability of the wrong answer ----------
    def top_loss_rows(self, result: "InterpretationResult", indices: list[int]) -> list[dict[str, Any]]:
        rows = []
        for i in indices:
            probs = result.outputs[i]
            predicted = int(probs.argmax())
            rows.append({"actual": self.class_names[int(result.targets[i])], "predicted": self.class_names[predicted],
                         "loss": float(result.losses[i]), "probability": float(probs[predicted])})
        return rows

    def interpretation_tables(self, result: "InterpretationResult") -> dict[str, Table]:
        cm = confusion_matrix(result)
        names = self.class_names
        matrix = [{"actual": a, **{p: int(cm[i, j]) for j, p in enumerate(names)}} for i, a in enumerate(names)]
        pairs = [{"actual": a, "predicted": p, "count": n} for a, p, n in most_confused(result)]
        return {"confusion_matrix": (matrix, ["actual", *names]), "most_confused": (pairs, ["actual", "predicted", "count"])}

    def interpretation_figures(self, result: "InterpretationResult") -> dict[str, Any]:
        return {"confusion_matrix": figures.plot_confusion_matrix(result)}

    def inspection_views(self, result: "InterpretationResult", k: int, seed: int) -> dict[str, InspectionView]:
        """Correct = argmax is the actual class. Most correct of class c: its correct images by p(c),
        highest first; most incorrect: its wrong ones by p(c), lowest first (the highest losses);
        most uncertain: all its images by top-1 minus top-2 probability, smallest first."""
        probs, actual = result.outputs.float(), result.targets.long()
        predicted = probs.argmax(-1)
        correct = predicted == actual
        p_actual = probs.gather(1, actual[:, None])[:, 0]
        margin = top2_margin(probs)

        def entry(i: int, group: str = "", rank: int | None = None) -> ViewEntry:
            row = {"file": str(result.files[i]), "actual": self.class_names[int(actual[i])],
                   "predicted": self.class_names[int(predicted[i])], "prob_actual": float(p_actual[i]),
                   "prob_predicted": float(probs[i, predicted[i]]), "margin": float(margin[i])}
            if group:
                row = {"class": group, "rank": rank, **row}
            caption = (f"{figures.short(result.files[i])}\n{row['actual']} -> {row['predicted']}\n"
                       f"p(actual) {row['prob_actual']:.2f}  margin {row['margin']:.2f}")
            return ViewEntry(group, i, row, caption)

        def per_class(title: str, mask: torch.Tensor, score: torch.Tensor, descending: bool) -> InspectionView:
            name, rule = title.split("\n")
            view = InspectionView(f"{name} ({k} per class)\n{rule}", ["class", "rank", *VIEW_COLUMNS])
            for c, name in enumerate(self.class_names):
                picks = ranked_picks(mask & (actual == c), score, k, descending)
                view.entries += [entry(i, name, r) for r, i in enumerate(picks, start=1)]
            return view

        def at_random(title: str, mask: torch.Tensor) -> InspectionView:
            return InspectionView(f"{title} (seed {seed})", list(VIEW_COLUMNS),
                                  [entry(i) for i in random_picks(mask, k, seed)])

        return {
            "random_correct": at_random("Correct, at random", correct),
            "random_incorrect": at_random("Incorrect, at random", ~correct),
            "most_correct": per_class("Most correct\nhighest p(actual) among the correct", correct, p_actual, True),
            "most_incorrect": per_class("Most incorrect\nlowest p(actual) among the wrong", ~correct, p_actual, False),
            "most_uncertain": per_class("Most uncertain\nsmallest top-1 minus top-2 probability",
                                        torch.ones_like(correct), margin, False),
        }

    def draw_top_loss(self, ax: Any, result: "InterpretationResult", index: int, row: dict[str, Any]) -> str:
        return (f"{figures.short(result.files[index])}\nactual: {row['actual']}  predicted: {row['predicted']}\n"
                f"loss {row['loss']:.2f}  prob {row['probability']:.2f}")

    def cleaning_values(self, activated: torch.Tensor, target: torch.Tensor, window: Any, size: int) -> tuple[Any, Any]:
        """The actual and the predicted class name."""
        return self.class_names[int(target)], self.class_names[int(activated.argmax())]

    def heatmap_score(self, output: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """The logit of class `index` (default: the predicted class) of every image."""
        return output_score(output, index)

    def target_text(self, target: torch.Tensor) -> str:
        return self.class_names[int(target)]

    def summary_lines(self, result: "InterpretationResult", limit: int) -> list[str]:
        pairs = most_confused(result)
        lines = ["most confused (actual -> predicted: count):" if pairs else "no confusions: every image is right"]
        return lines + [f"  {a} -> {p}: {n}" for a, p, n in pairs[:limit]]

    # --- export ----------------------------------------------------------------------------------------
    def export_activation(self) -> dict[str, Any]:
        return {"name": "softmax", "axis": -1}
