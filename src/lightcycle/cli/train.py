"""lightcycle-train: the Hydra entry point; the run itself is lightcycle.run.train (config -> metrics.json)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lightcycle.cli.common import run_entry_point, user_errors_exit
from lightcycle.errors import LightcycleError
from lightcycle.run import config_dir, train
from lightcycle.run.nodes import process_rank


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@user_errors_exit("lightcycle-train")
def _main(cfg: DictConfig) -> float | None:
    if process_rank() != 0:  # also in a launcher's job (submitit runs this function in every SLURM task)
        logging.getLogger("lightcycle").setLevel(logging.WARNING)
    metrics = train(cfg)
    name = cfg.get("optimized_metric") or "val_loss"
    if name not in metrics:
        raise LightcycleError(f"optimized_metric={name!r} is not among this run's metrics: {sorted(metrics)}")
    return metrics[name]  # the objective of a Hydra sweeper (hparams_search=optuna)


# Every process of a DDP run composes the config and starts a Hydra job in the same run dir; on
# several nodes they would write .hydra/ and train.log at the same time. Processes other than global
# rank 0 write neither: their messages go to their own console.
NOT_RANK_ZERO_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=stdout")


def main() -> None:
    """Console entry point (`lightcycle-train`)."""
    # DDP re-launches this script once per extra process, and every node runs it: only the first one narrates.
    rank = process_rank()
    if rank != 0:
        sys.argv += list(NOT_RANK_ZERO_OVERRIDES)
    run_entry_point(_main, logging.INFO if rank == 0 else logging.WARNING)


if __name__ == "__main__":
    main()
