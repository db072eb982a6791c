"""Known noise from the libraries, silenced one message at a time where a run or a command starts.

Each filter names one message and where it comes from, so anything else the libraries say still
shows. Called by `lightcycle.run.train` and by every console script before Hydra starts.

- Lightning's `_pytree` builds torch's deprecated `LeafSpec` on every batch it moves, and torch
  warns (FutureWarning) about Lightning's code, not about anything a user can change.
- Lightning's logger connector advertises its cloud logger ("litlogger") on every Trainer.
"""

from __future__ import annotations

import logging
import warnings

_LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
_TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropMessage(logging.Filter):
    """Drop log records whose message contains `text`; let everything else through."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


_LITLOGGER_TIP = _DropMessage("[litlogger](")


def quiet_known_noise() -> None:
    """Install the filters above (idempotent: calling it again adds nothing)."""
    warnings.filterwarnings("ignore", message=_LEAFSPEC, category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    for name in _TIP_LOGGERS:
        logger = logging.getLogger(name)
        if _LITLOGGER_TIP not in logger.filters:
            logger.addFilter(_LITLOGGER_TIP)
