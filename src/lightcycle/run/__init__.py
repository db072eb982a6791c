"""Assembling a training run from a composed Hydra config, as `lightcycle-train` does.

    config.py     where conf/ lives, `build` (hydra instantiate), config sections
    callbacks.py  SECTIONS: each config key (the callbacks group, unfreeze, resize, tta, ...) -> its callbacks, in order
    trainer.py    the Trainer (its epochs from lightcycle.plan, atomic checkpoints), resume checks, Ctrl-C
    folder.py     the run folder: one run per folder (reuse refused, overwrite moves aside), one process (a lock)
    record.py     the run's record (.hydra/): read as data by every command that looks at a run, written once accepted
    recipe.py     multi-stage recipes (experiment=fine_tune|world_class): the stage plan and loop
    train.py      `train(cfg)`: config -> fit -> final validation -> metrics.json
"""

from lightcycle.run.callbacks import (
    SECTIONS,
    config_callbacks,
    run_callbacks,
    toolbox_callbacks,
)
from lightcycle.run.config import build, config_dir
from lightcycle.run.train import train
from lightcycle.run.trainer import build_trainer

__all__ = [
    "SECTIONS", "build", "build_trainer", "config_callbacks", "config_dir", "run_callbacks", "toolbox_callbacks", "train",
]
