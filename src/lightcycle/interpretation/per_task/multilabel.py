"""Multi-label classification, interpreted per tag: scores at each tag's decision threshold, the
tag furthest from its truth, and the course's views around the thresholds."""

from __future__ import annotations

from typing import Any

import torch

from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import (
    InspectionView,
    ViewEntry,
    multilabel_per_class,
    random_picks,
    ranked_picks,
)
from lightcycle.interpretation.per_task.base import (
    Table,
    TaskInterpretation,
    output_score,
    task_interpretation,
)
from lightcycle.interpretation.result import InterpretationResult
from lightcycle.tasks.multilabel import tags_text


def thresholds_used(task: Any) -> str:
    """Which thresholds a multilabel task's decisions use, in words."""
    return "tuned per-tag thresholds" if task.thresholds is not None else f"threshold {task.thresh:g}"


@task_interpretation.register("multilabel")
class MultiLabelInterpretation(TaskInterpretation):
    """Scores per tag, and the tag furthest from its truth."""

    def top_loss_rows(self, result: InterpretationResult, indices: list[int]) -> list[dict[str, Any]]:
        task = self.task
        rows = []
        for i in indices:
            probs, true = result.outputs[i], result.targets[i]
            pred = task.decode(probs[None])[0]
            worst = int((probs - true.float()).abs().argmax())  # the tag that carries most of the loss
            rows.append({"actual": tags_text(task.class_names, true.bool()), "predicted": tags_text(task.class_names, pred),
                         "loss": float(result.losses[i]), "probability": float(probs[worst]),
                         "worst_tag": task.class_names[worst]})
        return rows

    def interpretation_tables(self, result: InterpretationResult) -> dict[str, Table]:
        return {"per_class": (multilabel_per_class(result), None)}

    def interpretation_figures(self, result: InterpretationResult) -> dict[str, Any]:
        beta = self.task.beta
        rows = multilabel_per_class(result)
        fkey = f"f{beta:g}"
        series = {"precision": [r["precision"] for r in rows], "recall": [r["recall"] for r in rows],
                  "F1": [r["f1"] for r in rows]}
        if fkey != "f1":
            series[f"F{beta:g}"] = [r[fkey] for r in rows]
        return {"per_class": figures.bars([r["class"] for r in rows], series,
                                          f"Per-tag precision, recall and F (validation, {thresholds_used(self.task)})", "score")}

    def inspection_views(self, result: InterpretationResult, k: int, seed: int) -> dict[str, InspectionView]:
        """The course's views per tag, around that tag's decision threshold (tuned in training, else
        `thresh`): a decision is correct when p > threshold matches the truth, confident by how far p is
        from the threshold. The random views draw `k` (image, tag) decisions; the others give `k`
        images per tag: correct ones furthest from the threshold, wrong ones furthest from it, and the
        decisions closest to it."""
        class_names = self.task.class_names
        probs, true = result.outputs.float(), result.targets.bool()
        thresholds = torch.tensor(self.task.decision_thresholds, dtype=probs.dtype)
        decided = probs > thresholds
        correct = decided == true
        distance = (probs - thresholds).abs()
        n_tags = len(class_names)
        columns = ["file", "tag", "actual", "predicted", "probability", "threshold", "distance"]

        def entry(flat: int, group: str = "", rank: int | None = None) -> ViewEntry:
            i, t = divmod(flat, n_tags)
            row = {"file": str(result.files[i]), "tag": class_names[t], "actual": int(true[i, t]),
                   "predicted": int(decided[i, t]), "probability": float(probs[i, t]),
                   "threshold": float(thresholds[t]), "distance": float(distance[i, t])}
            if group:
                row = {"rank": rank, **row}
            truth = "has" if row["actual"] else "lacks"
            caption = (f"{figures.short(result.files[i])}\n{truth} {row['tag']}\n"
                       f"p {row['probability']:.2f} (threshold {row['threshold']:.2f})")
            return ViewEntry(group, i, row, caption)

        def per_tag(title: str, mask: torch.Tensor, descending: bool) -> InspectionView:
            name, rule = title.split("\n")
            view = InspectionView(f"{name} ({k} per tag)\n{rule}", ["rank", *columns])
            for t, name in enumerate(class_names):
                picks = ranked_picks(mask[:, t], distance[:, t], k, descending)
                view.entries += [entry(i * n_tags + t, name, r) for r, i in enumerate(picks, start=1)]
            return view

        def at_random(title: str, mask: torch.Tensor) -> InspectionView:
            return InspectionView(f"{title} (seed {seed})", columns, [entry(f) for f in random_picks(mask, k, seed)])

        return {
            "random_correct": at_random("Correct tag decisions, at random", correct),
            "random_incorrect": at_random("Wrong tag decisions, at random", ~correct),
            "most_correct": per_tag("Most correct\nright decisions furthest from the threshold", correct, True),
            "most_incorrect": per_tag("Most incorrect\nwrong decisions furthest from the threshold", ~correct, True),
            "most_uncertain": per_tag("Most uncertain\ndecisions closest to the threshold", torch.ones_like(correct), False),
        }

    def draw_top_loss(self, ax: Any, result: InterpretationResult, index: int, row: dict[str, Any]) -> str:
        return (f"{figures.short(result.files[index])}\nactual: {row['actual'] or '-'}\npredicted: {row['predicted'] or '-'}\n"
                f"loss {row['loss']:.3f}  {row['worst_tag']} p={row['probability']:.2f}")

    def heatmap_score(self, output: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """The logit of tag `index` (default: each image's most probable tag)."""
        return output_score(output, index)

    def summary_lines(self, result: InterpretationResult, limit: int) -> list[str]:
        used = thresholds_used(self.task)
        note = (f"per tag at the {used} (precision / recall / F1 / support, threshold); "
                f"metrics.json's val_accuracy_multi, val_fbeta and val_f1 decide at thresh={self.task.thresh:g}:")
        return [note] + [
            f"  {r['class']}: {r['precision']:.3f} / {r['recall']:.3f} / {r['f1']:.3f} / {r['support']}, {r['threshold']:.3g}"
            for r in multilabel_per_class(result)
        ]
