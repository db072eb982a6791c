"""lightcycle-train: the Hydra entry point; the run itself is lightcycle.run.train (config -> metrics.json)."""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig

from lightcycle.cli.common import run_entry_point, user_errors_exit
from lightcycle.errors import LightcycleError
from lightcycle.run import config_dir, train


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
