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

from lightcycle.cli.common import build, config_dir, log, user_errors_exit
from lightcycle.cli.toolbox import apply_schedule_epochs, collect_final_metrics, model_overrides, toolbox_callbacks
from lightcycle.errors import LightcycleError


def resume_checkpoint(resume: Any, output_dir: Path) -> str | None:
    """`resume`: false, true (this run dir's checkpoints/last.ckpt) or a checkpoint path."""
    if resume in (False, None, "false"):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if resume in (True, "true") else Path(str(resume)).expanduser()
    if not path.is_file():
        raise LightcycleError(
            f"resume: checkpoint {path} not found (to continue a run, pass the same hydra.run.dir=<its folder>)"
        )
    return str(path)


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


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job from a composed config; returns the final metrics."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build(cfg.model, task=datamodule.make_task(), **model_overrides(cfg))  # model.lr=auto: provisional lr
    logger = build(cfg.logger) if cfg.get("logger") else False
    callbacks = [build(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    if not logger:  # `~logger`: nothing to monitor the learning rate into (Lightning would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    callbacks += toolbox_callbacks(cfg)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    apply_schedule_epochs(cfg, trainer_cfg)  # schedule=sgdr: the cycles set max_epochs
    progress = trainer_cfg.pop("enable_progress_bar", None)
    trainer = build(
        OmegaConf.create(trainer_cfg),
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=sys.stderr.isatty() if progress is None else bool(progress),
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg.resume, output_dir))
    results = trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items() if k.startswith("val_")}
    metrics.update(collect_final_metrics(callbacks))
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
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # DDP re-launches this script once per extra process: only the first one narrates.
    logging.getLogger("lightcycle").setLevel(logging.INFO if _process_rank() == 0 else logging.WARNING)
    _main()


def _process_rank() -> int:
    """Global rank from the launcher's environment (Lightning's DDP launcher, torchrun, SLURM), else 0."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


if __name__ == "__main__":
    main()
