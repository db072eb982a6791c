"""Snapshot ensembling (Huang et al., fastai 0.7): weights saved at the end of every SGDR cycle, averaged at the end.

Each SGDR cycle anneals to a different minimum; averaging the probabilities of the models at those
minima is an ensemble for the price of one training run. The callback writes
`snapshot-cycle{i}.ckpt` (i = 1-based cycle number) exactly after the last optimizer step of each
cycle, keeps the last `keep`, and at the end of training scores the ensemble on the validation
loader (`ensemble_loss`, `ensemble_accuracy`, ... in `final_metrics`).

Snapshot files are Lightning checkpoints without optimizer or callback state (`state_dict` +
`hyper_parameters`), written atomically and loadable with `torch.load(weights_only=True)`;
`lightcycle.ensemble` (the algorithm) finds, loads, averages and scores them.

With `ema.decay` set, a snapshot holds the EMA weights at the cycle's end, like every other
checkpoint of the run: the ensemble then averages the models that validation reported on and that
`Predictor` serves. When a cycle is much shorter than the EMA's horizon (about 1 / (1 - decay)
steps), consecutive snapshots are alike and the ensemble gains little; the log says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L

from lightcycle.atomic import atomic_path
from lightcycle.callbacks.ema import averaged_weights
from lightcycle.callbacks.interfaces import (
    ReportsFinalMetrics,
    WeightAverager,
    find_callback,
    position,
)
from lightcycle.data.base import batch_transform_of
from lightcycle.ensemble import evaluate_states, read_states, snapshot_name
from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")


class SnapshotEnsemble(L.Callback, ReportsFinalMetrics):
    """Save a weights-only snapshot after the last step of every SGDR cycle; score their ensemble at the end.

    Args:
        keep: how many of the most recent snapshots to keep on disk (older ones are deleted).
        dirpath: where snapshots go (default: the ModelCheckpoint's folder, else `<root>/checkpoints`).
        evaluate: score the ensemble on the validation loader when training ends.
        prefix: metric name prefix (`ensemble` -> `ensemble_loss`, `ensemble_accuracy`, ...).
    """

    def __init__(
        self, keep: int = 3, dirpath: str | os.PathLike | None = None, evaluate: bool = True, prefix: str = "ensemble"
    ) -> None:
        if int(keep) < 1:
            raise LightcycleError(f"snapshots.keep must be at least 1 to keep snapshots (0 = off), got {keep}")
        self.keep = int(keep)
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.evaluate = bool(evaluate)
        self.prefix = prefix
        self.snapshots: list[dict[str, Any]] = []  # {"file", "cycle", "step"}, oldest first
        self.final_metrics: dict[str, float] = {}
        self._cycle_ends: list[int] = []

    # --- Lightning state: resuming keeps the list (the files are on disk) ------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": [dict(s) for s in self.snapshots], "keep": self.keep}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots = [dict(s) for s in state_dict.get("snapshots", [])]

    @property
    def snapshot_paths(self) -> list[Path]:
        """Paths of the kept snapshots, oldest first."""
        assert self.dirpath is not None, "dirpath is known once training has started"
        return [self.dirpath / s["file"] for s in self.snapshots]

    # --- hooks ----------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plan = getattr(pl_module, "fit_plan", None)  # VisionModule's plan of this fit (lightcycle.plan)
        if plan is None or plan.name != "sgdr":
            raise LightcycleError(
                "snapshot ensembling (snapshots.keep>0) needs schedule=sgdr: snapshots are taken at the end of "
                "each SGDR cycle"
            )
        if self.dirpath is None:
            ckpt = trainer.checkpoint_callback
            dirpath = getattr(ckpt, "dirpath", None)
            self.dirpath = Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"
        self._cycle_ends = plan.cycle_end_steps()
        self._warn_if_ema_spans_cycles(trainer)
        missing = [p for p in self.snapshot_paths if not p.is_file()]
        if missing:
            log.warning("snapshots recorded in the checkpoint are missing on disk: %s", ", ".join(map(str, missing)))
            self.snapshots = [s for s in self.snapshots if (self.dirpath / s["file"]).is_file()]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step - 1  # the optimizer step just taken (global_step counts completed steps)
        if step not in self._cycle_ends:
            return
        cycle = self._cycle_ends.index(step) + 1
        if any(s["cycle"] == cycle for s in self.snapshots):
            return  # gradient accumulation: several batches end on the same step
        self._save(trainer, cycle, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not in on_fit_end: the module is still on its device and every process is alive.
        if not self.evaluate:
            return
        if not self.snapshots:
            log.warning("snapshot ensemble: no SGDR cycle finished, so there is no snapshot to evaluate")
            return
        trainer.strategy.barrier("snapshot-evaluation")  # rank 0 has written every snapshot file
        # Every rank scores its shard of the validation set; evaluation reduces across ranks.
        self.final_metrics = self.evaluate_ensemble(trainer, pl_module)

    # --- internals ------------------------------------------------------------------------------------
    def _warn_if_ema_spans_cycles(self, trainer: L.Trainer) -> None:
        averager = find_callback(trainer, WeightAverager)
        if averager is None or not self._cycle_ends:
            return
        if position(trainer, averager) > position(trainer, self):
            log.warning("snapshots: list the EMA callback before SnapshotEnsemble, or each snapshot misses the "
                        "average's update of its own last step")
        shortest = min(b - a for a, b in zip([-1, *self._cycle_ends], self._cycle_ends))
        horizon = averager.averaging_horizon()
        if shortest < horizon:
            log.warning(
                "snapshots with ema.decay=%g: the EMA averages over about %.0f steps, more than the shortest SGDR "
                "cycle (%d steps), so snapshots of consecutive cycles will be alike", 1.0 - 1.0 / horizon, horizon, shortest,
            )

    def _save(self, trainer: L.Trainer, cycle: int, step: int) -> None:
        assert self.dirpath is not None
        name = snapshot_name(cycle)
        final = self.dirpath / name
        with averaged_weights(trainer, trainer.lightning_module):  # EMA on: the averaged weights, as in last.ckpt
            if trainer.is_global_zero:  # a temp name unique to this process, renamed over the snapshot
                with atomic_path(final) as tmp:
                    trainer.save_checkpoint(tmp, weights_only=True)  # collective
            else:
                trainer.save_checkpoint(final, weights_only=True)  # the same collective; only rank 0 writes
        self.snapshots.append({"file": name, "cycle": cycle, "step": step})
        log.info("snapshot of cycle %d (step %d): %s", cycle, step, final)
        while len(self.snapshots) > self.keep:
            old = self.snapshots.pop(0)
            if trainer.is_global_zero:
                (self.dirpath / old["file"]).unlink(missing_ok=True)
        trainer.strategy.barrier("snapshot")

    def _val_loader(self, trainer: L.Trainer) -> Any:
        # A fresh loader from the datamodule: under DDP it shards without padding, so every sample
        # is counted exactly once (evaluation.score_batches reduces across ranks).
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "val_dataloader"):
            return datamodule.val_dataloader()
        loaders = trainer.val_dataloaders
        if loaders is None:
            raise LightcycleError("snapshot ensemble evaluation needs a validation dataloader")
        return loaders

    def evaluate_ensemble(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Score the mean of the snapshots' activated outputs on the validation loader."""
        task = getattr(pl_module, "task", None)
        if task is None:
            raise LightcycleError("snapshot ensembles need a module with a `task` (activation, loss, metrics)")
        states = read_states(self.snapshot_paths)
        metrics = evaluate_states(
            pl_module, task, states, self._val_loader(trainer), self.prefix,
            context=trainer.precision_plugin.forward_context,  # autocast under mixed precision
            prepare=batch_transform_of(trainer.datamodule),  # uint8 pixels normalised on the device
        )
        log.info(
            "snapshot ensemble of %d (cycles %s): %s",
            len(states),
            ", ".join(str(s["cycle"]) for s in self.snapshots),
            "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())),
        )
        return metrics
