"""lightcycle-train: the Hydra entry point; the run itself is lightcycle.run.train (config -> metrics.json)."""

from __future__ import annotations

import logging
import shlex
import sys

import hydra
from omegaconf import DictConfig

from lightcycle.cli.common import log_to_files, run_entry_point, user_errors_exit
from lightcycle.errors import LightcycleError
from lightcycle.ranks import is_global_zero
from lightcycle.run import config_dir, train
from lightcycle.run.train import RunInterrupted

INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's convention for Ctrl-C


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@user_errors_exit("lightcycle-train")
def _main(cfg: DictConfig) -> float | None:
    if not is_global_zero():  # also in a launcher's job (submitit runs this function in every SLURM task)
        logging.getLogger("lightcycle").setLevel(logging.WARNING)
    try:
        metrics = train(cfg)
    except RunInterrupted as stop:
        if is_global_zero():
            report_interrupt(stop)
        sys.exit(INTERRUPTED_EXIT)
    name = cfg.get("optimized_metric") or "val_loss"
    if name not in metrics:
        raise LightcycleError(f"optimized_metric={name!r} is not among this run's metrics: {sorted(metrics)}")
    return metrics[name]  # the objective of a Hydra sweeper (hparams_search=optuna)


# Every process of a DDP run composes the config and starts a Hydra job in the same run dir; on
# several nodes they would write .hydra/ and train.log at the same time. Processes other than global
# rank 0 write neither: their messages go to their own console.
NOT_RANK_ZERO_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=stdout")


def resume_command(run_dir: str) -> str:
    """This run's command line with `hydra.run.dir=<run dir> resume=true`, ready to paste into a shell."""
    from hydra.core.hydra_config import HydraConfig

    overrides = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") not in ("resume", "overwrite")]
    return shlex.join(["lightcycle-train", *overrides, f"hydra.run.dir={run_dir}", "resume=true"])


def report_interrupt(stop: RunInterrupted) -> None:
    """After Ctrl-C: where the checkpoint is and the exact command that continues the run."""
    lines = [f"lightcycle-train: {stop.describe()}"]
    if stop.checkpoint is not None:
        lines[0] += "; continue with:"
        lines.append(resume_command(str(stop.run_dir)))
    for line in lines:
        log_to_files(logging.WARNING, line)  # train.log keeps it too; the console shows it once
        print(line, file=sys.stderr, flush=True)


def main() -> None:
    """Console entry point (`lightcycle-train`)."""
    # DDP re-launches this script once per extra process, and every node runs it: only the first one narrates.
    rank_zero = is_global_zero()
    if not rank_zero:
        sys.argv += list(NOT_RANK_ZERO_OVERRIDES)
    run_entry_point(_main, logging.INFO if rank_zero else logging.WARNING)


if __name__ == "__main__":
    main()
