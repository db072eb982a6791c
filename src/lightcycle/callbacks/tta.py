"""The TTA callback: score the validation set with test-time augmentation when training ends.

The algorithm (views, merging, streaming, evaluation) is `lightcycle.tta`; this is its thin callback,
reporting `tta_*` in `final_metrics` for metrics.json.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from lightcycle.callbacks.interfaces import ReportsFinalMetrics
from lightcycle.errors import LightcycleError
from lightcycle.loggers import logged_step
from lightcycle.tta import check_tta_args, evaluate_tta

log = logging.getLogger("lightcycle")


class TTA(L.Callback, ReportsFinalMetrics):
    """After training, score the validation set with TTA; results in `final_metrics` (`tta_*`).

    Args:
        n: augmented views besides the original (0 = off).
        beta: weight of the plain view in the `beta` merge (fastai's default 0.25).
        merge: `beta` | `mean` | `max`.
        views: `auto` | `augment` | `flip_scale` (see `lightcycle.tta`).
        seed: seeds the augmented views, so TTA metrics are deterministic (42: lightcycle-train's `seed`).
    """

    def __init__(self, n: int = 4, beta: float = 0.25, merge: str = "beta", views: str = "auto", seed: int = 42) -> None:
        check_tta_args(n, beta, merge, views)
        self.n, self.beta, self.merge, self.views, self.seed = int(n), float(beta), merge, views, int(seed)
        self.final_metrics: dict[str, float] = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.n == 0 or trainer.interrupted:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise LightcycleError("TTA needs the Trainer to be fitted with a datamodule")
        task = getattr(pl_module, "task", None)
        if task is None:
            raise LightcycleError("TTA needs a module with a `task` (like VisionModule)")
        context = getattr(trainer.precision_plugin, "forward_context", None)  # autocast under mixed precision
        self.final_metrics = evaluate_tta(
            pl_module, task, datamodule, self.n, self.merge, self.beta, self.views, self.seed, context
        )
        if trainer.is_global_zero:
            log.info("TTA (n=%d, %s merge): %s", self.n, self.merge, {k: round(v, 4) for k, v in self.final_metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(self.final_metrics, step=logged_step(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {}
