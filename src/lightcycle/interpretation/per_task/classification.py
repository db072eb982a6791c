"""Single-label classification, interpreted as fastai does: confusion matrix, most-confused pairs,
the probability of the wrong answer, and the course's views per class."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import (
    InspectionView,
    ViewEntry,
    confusion_matrix,
    most_confused,
    random_picks,
    ranked_picks,
    top2_margin,
)
from lightcycle.interpretation.per_task.base import (
    Table,
    TaskInterpretation,
    output_score,
    task_interpretation,
)
from lightcycle.interpretation.result import InterpretationResult

VIEW_COLUMNS = ["file", "actual", "predicted", "prob_actual", "prob_predicted", "margin"]  # inspection tables


@task_interpretation.register("classification")
class ClassificationInterpretation(TaskInterpretation):
    """Confusion matrix, most confused, the probability of the wrong answer."""

    def top_loss_rows(self, result: InterpretationResult, indices: list[int]) -> list[dict[str, Any]]:
        names = self.task.class_names
        rows = []
        for i in indices:
            probs = result.outputs[i]
            predicted = int(probs.argmax())
            rows.append({"actual": names[int(result.targets[i])], "predicted": names[predicted],
                         "loss": float(result.losses[i]), "probability": float(probs[predicted])})
        return rows

    def interpretation_tables(self, result: InterpretationResult) -> dict[str, Table]:
        cm = confusion_matrix(result)
        names = self.task.class_names
        matrix = [{"actual": a, **{p: int(cm[i, j]) for j, p in enumerate(names)}} for i, a in enumerate(names)]
        pairs = [{"actual": a, "predicted": p, "count": n} for a, p, n in most_confused(result)]
        return {"confusion_matrix": (matrix, ["actual", *names]), "most_confused": (pairs, ["actual", "predicted", "count"])}

    def interpretation_figures(self, result: InterpretationResult) -> dict[str, Any]:
        return {"confusion_matrix": figures.plot_confusion_matrix(result)}

    def inspection_views(self, result: InterpretationResult, k: int, seed: int) -> dict[str, InspectionView]:
        """Correct = argmax is the actual class. Most correct of class c: its correct images by p(c),
        highest first; most incorrect: its wrong ones by p(c), lowest first (the highest losses);
        most uncertain: all its images by top-1 minus top-2 probability, smallest first."""
        class_names = self.task.class_names
        probs, actual = result.outputs.float(), result.targets.long()
        predicted = probs.argmax(-1)
        correct = predicted == actual
        p_actual = probs.gather(1, actual[:, None])[:, 0]
        margin = top2_margin(probs)

        def entry(i: int, group: str = "", rank: int | None = None) -> ViewEntry:
            row = {"file": str(result.files[i]), "actual": class_names[int(actual[i])],
                   "predicted": class_names[int(predicted[i])], "prob_actual": float(p_actual[i]),
                   "prob_predicted": float(probs[i, predicted[i]]), "margin": float(margin[i])}
            if group:
                row = {"class": group, "rank": rank, **row}
            caption = (f"{figures.short(result.files[i])}\n{row['actual']} -> {row['predicted']}\n"
                       f"p(actual) {row['prob_actual']:.2f}  margin {row['margin']:.2f}")
            return ViewEntry(group, i, row, caption)

        def per_class(title: str, mask: torch.Tensor, score: torch.Tensor, descending: bool) -> InspectionView:
            name, rule = title.split("\n")
            view = InspectionView(f"{name} ({k} per class)\n{rule}", ["class", "rank", *VIEW_COLUMNS])
            for c, name in enumerate(class_names):
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

    def draw_top_loss(self, ax: Any, result: InterpretationResult, index: int, row: dict[str, Any]) -> str:
        return (f"{figures.short(result.files[index])}\nactual: {row['actual']}  predicted: {row['predicted']}\n"
                f"loss {row['loss']:.2f}  prob {row['probability']:.2f}")

    def heatmap_score(self, output: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """The logit of class `index` (default: the predicted class) of every image."""
        return output_score(output, index)

    def summary_lines(self, result: InterpretationResult, limit: int) -> list[str]:
        pairs = most_confused(result)
        lines = ["most confused (actual -> predicted: count):" if pairs else "no confusions: every image is right"]
        return lines + [f"  {a} -> {p}: {n}" for a, p, n in pairs[:limit]]
