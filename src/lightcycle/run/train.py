"""One training run, config to metrics.json: data + model -> callbacks -> Trainer.fit (or a recipe's
stages) -> final validation, merged with the callbacks' end-of-training metrics -> metrics.json.

Before any data is read the run checks that it trains at all and claims its folder
(lightcycle.run.folder: one run per folder, one process per run). Ctrl-C ends it with
`RunInterrupted`, which says where the checkpoint to resume from is."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lightcycle.atomic import write_json
from lightcycle.checkpoint_io import read_checkpoint
from lightcycle.plan import schedule_epochs
from lightcycle.quiet import quiet_known_noise
from lightcycle.ranks import is_global_zero
from lightcycle.run.callbacks import (
    collect_final_metrics,
    model_overrides,
    run_callbacks,
)
from lightcycle.run.config import build, hydra_job_files
from lightcycle.run.folder import run_folder
from lightcycle.run.nodes import check_multinode_run_dir
from lightcycle.run.recipe import plan_recipe, run_recipe
from lightcycle.run.record import write_record
from lightcycle.run.trainer import (
    apply_schedule_epochs,
    build_trainer,
    check_same_model,
    check_training_length,
    resume_checkpoint,
    run_trainer,
)

log = logging.getLogger("lightcycle")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run. `checkpoint`: what `resume=true` continues from (None: nothing saved yet)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoint = latest_checkpoint(self.run_dir)
        self.step: int | None = None
        if self.checkpoint is not None:
            try:
                self.step = int(read_checkpoint(self.checkpoint).get("global_step"))
            except Exception:  # unreadable or without a step: say where it is all the same
                pass
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.checkpoint is None:
            return (
                f"interrupted before the first checkpoint: {self.run_dir / 'checkpoints' / 'last.ckpt'} does not exist "
                "yet (it is written at every epoch end, and every N steps with checkpoint_every_n_steps=N), so there is "
                "nothing to resume; to start again in this run dir, add overwrite=true"
            )
        after = f", saved after step {self.step}" if self.step is not None else ""
        return f"interrupted; the last checkpoint is {self.checkpoint}{after}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """checkpoints/last.ckpt, else the newest recipe stage checkpoint; None when there is neither."""
    folder = Path(run_dir) / "checkpoints"
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    stages = sorted(folder.glob("stage-*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return stages[-1] if stages else None


def check_run_length(cfg: DictConfig) -> None:
    """Refuse, before any data is read, a run whose fit would train nothing (trainer.max_epochs=0)."""
    if cfg.get("recipe"):
        plan_recipe(cfg)  # every stage's epochs, checked
        return
    schedule = OmegaConf.to_container(cfg.schedule, resolve=True) if cfg.get("schedule") else None
    check_training_length(schedule_epochs(schedule, cfg.trainer.get("max_epochs")), cfg.trainer.get("max_steps"))


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job from a composed `train` config; returns the final metrics.

    Raises LightcycleError when the run dir is in use or holds another run (see lightcycle.run.folder),
    RunInterrupted (a KeyboardInterrupt) on Ctrl-C.
    """
    quiet_known_noise()
    check_multinode_run_dir(cfg)
    check_run_length(cfg)
    output_dir = Path(cfg.paths.output_dir)
    keep = hydra_job_files(output_dir)
    try:
        with run_folder(
            output_dir, resume=cfg.get("resume", False), overwrite=cfg.get("overwrite", False), keep=keep,
            setting="hydra.run.dir" if keep else "paths.output_dir",
        ) as folder:
            if folder is not None:
                folder.log_notes()
            return _train(cfg)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(output_dir) from None


def _train(cfg: DictConfig) -> dict[str, float]:
    output_dir = Path(cfg.paths.output_dir)
    resuming = cfg.get("resume") not in (False, None, "false", "False", "")
    if not resuming:  # accepted with its folder: the run's record (lightcycle.run.record) now
        write_record(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # bad_items.csv (every problem the data check finds) goes into this run's dir unless data.report_dir is
    # set; every DDP process checks the data, and only global rank 0 writes into the run dir (the others
    # write their identical list into the cache)
    in_run_dir = "report_dir" in cfg.data and not cfg.data.report_dir and is_global_zero()
    datamodule = build(cfg.data, **({"report_dir": str(cfg.paths.output_dir)} if in_run_dir else {}))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build(cfg.model, task=datamodule.make_task(), **model_overrides(cfg))  # model.lr=auto: provisional lr
    if resuming:  # accepted once the checkpoint it continues is this model's; the record is rewritten only then
        check_resume(cfg, model)
        write_record(cfg, output_dir)
    logger = build(cfg.logger) if cfg.get("logger") else False
    if cfg.get("recipe"):  # experiment=fine_tune|world_class: several fits of the same model
        trainer, final = run_recipe(cfg, model, datamodule, logger)
    else:
        trainer, final = fit(cfg, model, datamodule, logger)
    return finish(cfg, trainer, model, datamodule, logger, final)


def check_resume(cfg: DictConfig, model: L.LightningModule) -> None:
    """Refuse a resume whose checkpoint holds another task, backbone or class list than `model`, before
    the run touches its folder (a recipe checks its newest checkpoint; each stage checks its own later)."""
    output_dir = Path(cfg.paths.output_dir)
    if not cfg.get("recipe"):
        resume_checkpoint(cfg.resume, output_dir, model)
        return
    newest = latest_checkpoint(output_dir)
    if newest is not None:
        check_same_model(read_checkpoint(newest, "resume"), model, newest, "resume")


def fit(cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule, logger: Any) -> tuple[L.Trainer, dict[str, float]]:
    """One Trainer.fit with the run's callbacks (resuming when asked); returns it and their final metrics."""
    callbacks = run_callbacks(cfg)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    apply_schedule_epochs(cfg, trainer_cfg)  # schedule=sgdr: the cycles set max_epochs
    trainer = build_trainer(trainer_cfg, callbacks, logger)
    ckpt_path = resume_checkpoint(cfg.resume, Path(cfg.paths.output_dir), model)  # same task, backbone, classes
    run_trainer(trainer, "fit", model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)  # never unpickle code
    return trainer, collect_final_metrics(trainer.callbacks)


def finish(
    cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
    logger: Any, final: dict[str, float],
) -> dict[str, float]:
    """Final validation, merged with the callbacks' end-of-training metrics, into metrics.json."""
    output_dir = Path(cfg.paths.output_dir)
    loggers, trainer.loggers = trainer.loggers, []  # the last epoch logged this model's validation already
    try:
        results = run_trainer(trainer, "validate", model, datamodule=datamodule, verbose=False)
    finally:
        trainer.loggers = loggers
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items() if k.startswith("val_")}
    metrics.update(final)
    if any(not math.isfinite(v) for v in metrics.values()):
        log.warning("some final metrics are not finite: %s", metrics)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        if logger:
            logger.log_hyperparams(flat_config(cfg), metrics=metrics)
            if hasattr(logger, "close"):  # lightcycle's TensorBoardLogger keeps one event file open until here
                logger.close()
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
