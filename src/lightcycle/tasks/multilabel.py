"""Multi-label classification (Planet): any number of tags per image, each decided on its own.

Independent sigmoids and BCE with logits; thresholds tuned per tag on validation are kept in the
checkpoint and used for every decision (prediction, interpretation, export). BCE takes the soft
targets of MixUp/CutMix as they are (timm's Mixup in multi-label mode mixes the dense tag vectors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.analyses import InspectionView, ViewEntry, multilabel_per_class, random_picks, ranked_picks
from lightcycle.metrics import AccuracyMulti, FBetaMulti
from lightcycle.models.heads import ClassifierHead
from lightcycle.tasks.base import Table, Task, csv_number, output_score, register_task

if TYPE_CHECKING:
    from lightcycle.interpretation.collect import InterpretationResult
    from lightcycle.predict.writers import SideFiles


def tags_text(names: Sequence[str], decisions: torch.Tensor) -> str:
    """The tags that are on, space-separated (Planet's `tags` column)."""
    return " ".join(n for n, on in zip(names, decisions.tolist()) if on)


@register_task
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
            raise LightcycleError("multi-label classification needs at least 1 tag")
        self.check_output_count(len(class_names), "tags")
        if not 0.0 < float(thresh) < 1.0:
            raise LightcycleError(f"thresh must be between 0 and 1, got {thresh}")
        self.class_names = list(class_names)
        self.thresh = float(thresh)
        self.beta = float(beta)
        if thresholds is not None and len(thresholds) != len(self.class_names):
            raise LightcycleError(f"{len(thresholds)} thresholds for {len(self.class_names)} tags")
        self.thresholds = [float(t) for t in thresholds] if thresholds is not None else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def decision_thresholds(self) -> list[float]:
        """The threshold of every tag: tuned in training if it was, else `thresh`."""
        return list(self.thresholds) if self.thresholds is not None else [self.thresh] * self.num_classes

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: int, dropout: float) -> nn.Module:
        return ClassifierHead(num_features, self.num_classes, dropout=dropout)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target.float())

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target.float(), reduction="none").mean(-1)

    def mix_settings(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "label_smoothing": 0.0, "multi_label": True}

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

    # --- prediction: the tags over their thresholds -----------------------------------------------------
    def prediction(self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: Any = None) -> tuple[Any, Any]:
        decisions = self.decode(activated[None])[0]
        return [name for name, on in zip(self.class_names, decisions.tolist()) if on], decisions

    def prediction_record(self, pred: Any, name: str, files: "SideFiles") -> tuple[dict[str, Any], dict[str, Any]]:
        probs = pred.probs.tolist()
        row = {"file": name, "tags": " ".join(pred.label),
               **{f"prob_{c}": csv_number(p) for c, p in zip(self.class_names, probs)}}
        return row, {"file": name, "tags": list(pred.label), "probabilities": dict(zip(self.class_names, probs))}

    def served_record(self, pred: Any, name: str, files: "SideFiles") -> dict[str, Any]:
        """Also each tag's decision threshold (tuned in training, else `thresh`)."""
        record = self.prediction_record(pred, name, files)[1]
        return {**record, "thresholds": dict(zip(self.class_names, self.decision_thresholds))}

    # --- interpretation: scores per tag, and the tag furthest from its truth ----------------------------
    def top_loss_rows(self, result: "InterpretationResult", indices: list[int]) -> list[dict[str, Any]]:
        rows = []
        for i in indices:
            probs, true = result.outputs[i], result.targets[i]
            pred = self.decode(probs[None])[0]
            worst = int((probs - true.float()).abs().argmax())  # the tag that carries most of the loss
            rows.append({"actual": tags_text(self.class_names, true.bool()), "predicted": tags_text(self.class_names, pred),
                         "loss": float(result.losses[i]), "probability": float(probs[worst]),
                         "worst_tag": self.class_names[worst]})
        return rows

    def interpretation_tables(self, result: "InterpretationResult") -> dict[str, Table]:
        return {"per_class": (multilabel_per_class(result), None)}

    def interpretation_figures(self, result: "InterpretationResult") -> dict[str, Any]:
        rows = multilabel_per_class(result)
        fkey = f"f{self.beta:g}"
        series = {"precision": [r["precision"] for r in rows], "recall": [r["recall"] for r in rows],
                  "F1": [r["f1"] for r in rows]}
        if fkey != "f1":
            series[f"F{self.beta:g}"] = [r[fkey] for r in rows]
        return {"per_class": figures.bars([r["class"] for r in rows], series,
                                          f"Per-tag precision, recall and F (validation, {self.thresholds_used})", "score")}

    def inspection_views(self, result: "InterpretationResult", k: int, seed: int) -> dict[str, InspectionView]:
        """The course's views per tag, around that tag's decision threshold (tuned in training, else
        `thresh`): a decision is correct when p > threshold matches the truth, confident by how far p is
        from the threshold. The random views draw `k` (image, tag) decisions; the others give `k`
        images per tag: correct ones furthest from the threshold, wrong ones furthest from it, and the
        decisions closest to it."""
        probs, true = result.outputs.float(), result.targets.bool()
        thresholds = torch.tensor(self.decision_thresholds, dtype=probs.dtype)
        decided = probs > thresholds
        correct = decided == true
        distance = (probs - thresholds).abs()
        n_tags = self.num_classes
        columns = ["file", "tag", "actual", "predicted", "probability", "threshold", "distance"]

        def entry(flat: int, group: str = "", rank: int | None = None) -> ViewEntry:
            i, t = divmod(flat, n_tags)
            row = {"file": str(result.files[i]), "tag": self.class_names[t], "actual": int(true[i, t]),
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
            for t, name in enumerate(self.class_names):
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

    def draw_top_loss(self, ax: Any, result: "InterpretationResult", index: int, row: dict[str, Any]) -> str:
        return (f"{figures.short(result.files[index])}\nactual: {row['actual'] or '-'}\npredicted: {row['predicted'] or '-'}\n"
                f"loss {row['loss']:.3f}  {row['worst_tag']} p={row['probability']:.2f}")

    def cleaning_values(self, activated: torch.Tensor, target: torch.Tensor, window: Any, size: int) -> tuple[Any, Any]:
        """The actual tags and the tags over their decision thresholds, as lists of names."""
        decided = self.decode(activated[None])[0]
        return ([n for n, on in zip(self.class_names, target.bool().tolist()) if on],
                [n for n, on in zip(self.class_names, decided.tolist()) if on])

    def heatmap_score(self, output: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """The logit of tag `index` (default: each image's most probable tag)."""
        return output_score(output, index)

    def target_text(self, target: torch.Tensor) -> str:
        return tags_text(self.class_names, target.bool()) or "-"

    @property
    def thresholds_used(self) -> str:
        """Which thresholds the interpretation's decisions use, in words."""
        return "tuned per-tag thresholds" if self.thresholds is not None else f"threshold {self.thresh:g}"

    def summary_lines(self, result: "InterpretationResult", limit: int) -> list[str]:
        note = (f"per tag at the {self.thresholds_used} (precision / recall / F1 / support, threshold); "
                f"metrics.json's val_accuracy_multi, val_fbeta and val_f1 decide at thresh={self.thresh:g}:")
        return [note] + [
            f"  {r['class']}: {r['precision']:.3f} / {r['recall']:.3f} / {r['f1']:.3f} / {r['support']}, {r['threshold']:.3g}"
            for r in multilabel_per_class(result)
        ]

    # --- export ----------------------------------------------------------------------------------------
    def export_activation(self) -> dict[str, Any]:
        return {"name": "sigmoid"}

    def export_metadata(self) -> dict[str, Any]:
        return {"thresholds": self.decision_thresholds}
