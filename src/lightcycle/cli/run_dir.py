"""lightcycle-train claims its run dir before Hydra writes into it.

Hydra creates `hydra.run.dir`, opens its log file there (appending) and writes `.hydra/` before the
task function runs, so a check inside the run would come too late: a refused second run would
already have replaced the first run's `.hydra/config.yaml` and appended to its `train.log`. This
Hydra callback (conf/train.yaml: hydra.callbacks.run_dir) claims the folder in `on_run_start`, the
moment before that (lightcycle.run.folder: the lock, the reuse check, overwrite=true moving the old
run aside), prints a refusal as one line and exits 1, and releases the lock in `on_run_end`.
It also keeps Hydra from writing the run's record (`.hydra/`) at all: the run writes it once it is
accepted, after a `resume=true` has been checked against the checkpoint (lightcycle.run.record), so
a refused run leaves the earlier run's record as it was. Any failure while claiming is one line and
exit 1 too: Hydra would turn an exception in a callback into a warning and go on without the guard.
Sweeps (`-m`) give every job a folder of its own, which `lightcycle.run.train` claims per job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightcycle.cli.common import user_errors_exit
from lightcycle.errors import LightcycleError, brief_cause
from lightcycle.run.folder import RunFolder, claim_run_dir
from lightcycle.run.record import defer_record


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
        self.folder = user_errors_exit("lightcycle-train")(self._claim)(Path(str(run_dir)), config)

    @staticmethod
    def _claim(run_dir: Path, config: DictConfig) -> RunFolder | None:
        try:
            folder = claim_run_dir(
                run_dir, resume=config.get("resume", False), overwrite=config.get("overwrite", False),
                setting="hydra.run.dir",
            )
        except LightcycleError:
            raise
        except Exception as exc:  # e.g. a damaged lock file: stop here, never run without the guard
            raise LightcycleError(f"hydra.run.dir={run_dir}: cannot claim the run dir ({brief_cause(exc, 160)})") from None
        try:
            if folder is not None:  # global rank 0: the run's record waits until the run is accepted
                defer_record(config, run_dir)
            return folder
        except BaseException as exc:
            if folder is not None:
                folder.release()
            if isinstance(exc, Exception) and not isinstance(exc, LightcycleError):
                raise LightcycleError(f"hydra.run.dir={run_dir}: cannot claim the run dir ({brief_cause(exc, 160)})") from None
            raise

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.folder is not None:
            self.folder.release()
            self.folder = None
