"""lightcycle-train claims its run dir before Hydra writes into it.

Hydra creates `hydra.run.dir`, opens its log file there (appending) and writes `.hydra/` before the
task function runs, so a check inside the run would come too late: a refused second run would
already have replaced the first run's `.hydra/config.yaml` and appended to its `train.log`. This
Hydra callback (conf/train.yaml: hydra.callbacks.run_dir) claims the folder in `on_run_start`, the
moment before that (lightcycle.run.folder: the lock, the reuse check, overwrite=true moving the old
run aside), prints a refusal as one line and exits 1, and releases the lock in `on_run_end`.
Sweeps (`-m`) give every job a folder of its own, which `lightcycle.run.train` claims per job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightcycle.cli.common import user_errors_exit
from lightcycle.run.folder import RunFolder, claim_run_dir


class RunDirGuard(Callback):
    """Claim `hydra.run.dir` for this run before Hydra writes into it; release it when the run ends."""

    def __init__(self) -> None:
        self.folder: RunFolder | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # the same config object Hydra resolves the run dir from next (${now:...} is cached in it)
            run_dir = OmegaConf.select(config, "hydra.run.dir")
        except Exception:  # interpolations of runtime values Hydra has not set yet: the run claims it later
            return
        if run_dir is None:
            return
        self.folder = user_errors_exit("lightcycle-train")(claim_run_dir)(
            Path(str(run_dir)), resume=config.get("resume", False), overwrite=config.get("overwrite", False),
            setting="hydra.run.dir",
        )

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.folder is not None:
            self.folder.release()
            self.folder = None
