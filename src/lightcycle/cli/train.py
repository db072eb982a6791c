"""lightcycle-train: the Hydra entry point; the run itself is lightcycle.run.train (config -> metrics.json)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from lightcycle.cli.common import run_entry_point, user_errors_exit
from lightcycle.errors import LightcycleError
from lightcycle.run import config_dir, train


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@user_errors_exit("lightcycle-train")
def _main(cfg: DictConfig) -> float | None:
    if _process_rank() != 0:  # also in a launcher's job (submitit runs this function in every SLURM task)
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
    rank = _process_rank()
    if rank != 0:
        sys.argv += list(NOT_RANK_ZERO_OVERRIDES)
    run_entry_point(_main, logging.INFO if rank == 0 else logging.WARNING)


def _process_rank() -> int:
    """Global rank from the launcher's environment (Lightning's DDP launcher, torchrun, SLURM), else 0.

    A process on another node of Lightning's launcher has NODE_RANK > 0: positive, if not its exact rank.
    """
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    local = int(os.environ["LOCAL_RANK"]) if os.environ.get("LOCAL_RANK", "").isdigit() else 0
    node = int(os.environ["NODE_RANK"]) if os.environ.get("NODE_RANK", "").isdigit() else 0
    per_node = int(os.environ["LOCAL_WORLD_SIZE"]) if os.environ.get("LOCAL_WORLD_SIZE", "").isdigit() else 1
    return local if node == 0 else node * per_node + local


if __name__ == "__main__":
    main()
