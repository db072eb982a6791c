"""One training run, config to metrics.json: data + model -> callbacks -> Trainer.fit (or a recipe's
stages) -> final validation, merged with the callbacks' end-of-training metrics -> metrics.json."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lightcycle.atomic import write_json
from lightcycle.run.callbacks import collect_final_metrics, config_callbacks, model_overrides, toolbox_callbacks
from lightcycle.run.config import build
from lightcycle.run.recipe import run_recipe
from lightcycle.run.trainer import apply_schedule_epochs, build_trainer, resume_checkpoint

log = logging.getLogger("lightcycle")


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job from a composed `train` config; returns the final metrics."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # bad_items.csv (every problem the data check finds) goes into this run's dir unless data.report_dir is set
    in_run_dir = "report_dir" in cfg.data and not cfg.data.report_dir
    datamodule = build(cfg.data, **({"report_dir": str(cfg.paths.output_dir)} if in_run_dir else {}))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build(cfg.model, task=datamodule.make_task(), **model_overrides(cfg))  # model.lr=auto: provisional lr
    logger = build(cfg.logger) if cfg.get("logger") else False
    if cfg.get("recipe"):  # experiment=fine_tune|world_class: several fits of the same model
        trainer, final = run_recipe(cfg, model, datamodule, logger)
    else:
        trainer, final = fit(cfg, model, datamodule, logger)
    return finish(cfg, trainer, model, datamodule, logger, final)


def fit(cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule, logger: Any) -> tuple[L.Trainer, dict[str, float]]:
    """One Trainer.fit with the run's callbacks (resuming when asked); returns it and their final metrics."""
    callbacks = config_callbacks(cfg, logger) + toolbox_callbacks(cfg)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    apply_schedule_epochs(cfg, trainer_cfg)  # schedule=sgdr: the cycles set max_epochs
    trainer = build_trainer(trainer_cfg, callbacks, logger)
    ckpt_path = resume_checkpoint(cfg.resume, Path(cfg.paths.output_dir))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)  # never unpickle code
    return trainer, collect_final_metrics(trainer.callbacks)


def finish(
    cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
    logger: Any, final: dict[str, float],
) -> dict[str, float]:
    """Final validation, merged with the callbacks' end-of-training metrics, into metrics.json."""
    output_dir = Path(cfg.paths.output_dir)
    results = trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items() if k.startswith("val_")}
    metrics.update(final)
    if any(not math.isfinite(v) for v in metrics.values()):
        log.warning("some final metrics are not finite: %s", metrics)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        if logger:
            logger.log_hyperparams(flat_config(cfg), metrics=metrics)
        log.info("final metrics (%s): %s", output_dir / "metrics.json", json.dumps(metrics, sort_keys=True))
    return metrics


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as `a.b.c: value` pairs (TensorBoard's hparams take scalars only)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not str(k).startswith("_"):
                    walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
