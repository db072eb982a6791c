"""lightcycle-train: Hydra config -> DataModule + VisionModule + callbacks -> Trainer.fit -> metrics.json."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from lightcycle.checkpoint_io import with_atomic_checkpoints
from lightcycle.cli.common import build, config_dir, log, run_entry_point, user_errors_exit
from lightcycle.cli.toolbox import apply_schedule_epochs, collect_final_metrics, model_overrides, toolbox_callbacks
from lightcycle.errors import LightcycleError, brief_cause


def resume_checkpoint(resume: Any, output_dir: Path) -> str | None:
    """`resume`: false, true (this run dir's checkpoints/last.ckpt) or a checkpoint path."""
    if resume in (False, None, "false"):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if resume in (True, "true") else Path(str(resume)).expanduser()
    if not path.is_file():
        raise LightcycleError(
            f"resume: checkpoint {path} not found (to continue a run, pass the same hydra.run.dir=<its folder>)"
        )
    check_checkpoint(path, "resume")
    return str(path)


def check_checkpoint(path: Path, what: str) -> None:
    """Open `path` the way fit will (`weights_only=True`: tensors and plain data, no code run) and turn
    a truncated, foreign or code-carrying file into one line instead of torch's pages of advice."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: tensors are not read
    except Exception as exc:
        raise LightcycleError(
            f"{what}: cannot load checkpoint {path} with weights_only=True: truncated, not a checkpoint, "
            f"or it holds objects other than tensors and plain data ({brief_cause(exc, 120)})"
        ) from exc


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so a killed run never leaves half a metrics file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _flat_config(cfg: DictConfig) -> dict[str, Any]:
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


def _build_plugins(node: Any) -> Any:
    """trainer.plugins from the config: plugin names stay strings, `_target_` nodes are instantiated."""
    if node is None or isinstance(node, str):
        return node
    if isinstance(node, (list, tuple)):
        return [_build_plugins(item) for item in node]
    return build(OmegaConf.create(node))


def config_callbacks(cfg: DictConfig, logger: Any) -> list[L.Callback]:
    """The `callbacks` config group, instantiated (checkpointing, LR monitor, epoch log, divergence guard)."""
    callbacks = [build(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    if not logger:  # `~logger`: nothing to monitor the learning rate into (Lightning would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def build_trainer(trainer_cfg: dict[str, Any], callbacks: list[L.Callback], logger: Any) -> L.Trainer:
    """The Trainer from the `trainer` config: progress bar only on a terminal, atomic checkpoint writes."""
    trainer_cfg = dict(trainer_cfg)
    progress = trainer_cfg.pop("enable_progress_bar", None)
    plugins = with_atomic_checkpoints(_build_plugins(trainer_cfg.pop("plugins", None)))  # no half-written last.ckpt
    return build(
        OmegaConf.create(trainer_cfg),
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=sys.stderr.isatty() if progress is None else bool(progress),
        plugins=plugins,
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job from a composed config; returns the final metrics."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    # bad_items.csv (every problem the data check finds) goes into this run's dir unless data.report_dir is set
    in_run_dir = "report_dir" in cfg.data and not cfg.data.report_dir
    datamodule = build(cfg.data, **({"report_dir": str(output_dir)} if in_run_dir else {}))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build(cfg.model, task=datamodule.make_task(), **model_overrides(cfg))  # model.lr=auto: provisional lr
    logger = build(cfg.logger) if cfg.get("logger") else False
    if cfg.get("recipe"):  # experiment=fine_tune|world_class: several fits of the same model
        from lightcycle.recipes import run_recipe

        trainer, final = run_recipe(
            cfg, model, datamodule, logger, OmegaConf.to_container(cfg.trainer, resolve=True),
            resume=cfg.resume not in (False, None, "false"),
        )
        return _finish(cfg, trainer, model, datamodule, logger, final, output_dir)
    callbacks = config_callbacks(cfg, logger) + toolbox_callbacks(cfg)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    apply_schedule_epochs(cfg, trainer_cfg)  # schedule=sgdr: the cycles set max_epochs
    trainer = build_trainer(trainer_cfg, callbacks, logger)
    ckpt_path = resume_checkpoint(cfg.resume, output_dir)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)  # never unpickle code
    return _finish(cfg, trainer, model, datamodule, logger, collect_final_metrics(callbacks), output_dir)


def _finish(
    cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
    logger: Any, final: dict[str, float], output_dir: Path,
) -> dict[str, float]:
    """Final validation, merged with the callbacks' end-of-training metrics, into metrics.json."""
    results = trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items() if k.startswith("val_")}
    metrics.update(final)
    if any(not math.isfinite(v) for v in metrics.values()):
        log.warning("some final metrics are not finite: %s", metrics)
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", metrics)
        if logger:
            logger.log_hyperparams(_flat_config(cfg), metrics=metrics)
        log.info("final metrics (%s): %s", output_dir / "metrics.json", json.dumps(metrics, sort_keys=True))
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@user_errors_exit("lightcycle-train")
def _main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    name = cfg.get("optimized_metric") or "val_loss"
    if name not in metrics:
        raise LightcycleError(f"optimized_metric={name!r} is not among this run's metrics: {sorted(metrics)}")
    return metrics[name]  # the objective of a Hydra sweeper (hparams_search=optuna)


def main() -> None:
    """Console entry point (`lightcycle-train`)."""
    # DDP re-launches this script once per extra process: only the first one narrates.
    run_entry_point(_main, logging.INFO if _process_rank() == 0 else logging.WARNING)


def _process_rank() -> int:
    """Global rank from the launcher's environment (Lightning's DDP launcher, torchrun, SLURM), else 0."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


if __name__ == "__main__":
    main()
