"""Multi-label classification (Planet): any number of tags per image, each decided on its own.

Independent sigmoids and BCE with logits; thresholds tuned per tag on validation are kept in the
checkpoint and used for every decision (prediction, interpretation, export). BCE takes the soft
targets of MixUp/CutMix as they are (timm's Mixup in multi-label mode mixes the dense tag vectors).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError
from lightcycle.metrics import AccuracyMulti, FBetaMulti
from lightcycle.models.heads import ClassifierHead
from lightcycle.tasks.base import Task, register_task


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
