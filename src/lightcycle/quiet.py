"""Known noise from the libraries, silenced one message at a time where a run or a command starts.

Each filter names one message and where it comes from, so anything else the libraries say still
shows. Called by `lightcycle.run.train` and by every console script before Hydra starts.

- Lightning's `_pytree` builds torch's deprecated `LeafSpec` on every batch it moves, and torch
  warns (FutureWarning) about Lightning's code, not about anything a user can change.
- Lightning's logger connector advertises its cloud logger ("litlogger") on every Trainer.
- Lightning's accelerator banners (`GPU available: ...`, `TPU available: ...`, `HPU available: ...`)
  and "Loading `train_dataloader` to estimate number of stepping batches." on every fit: the run's
  own lines say what trains where (the device in the model summary, the batches in the plan).
- Lightning's "The number of training batches (N) is smaller than the logging interval" warning:
  lightcycle says once, in its own words, when a run has too few optimizer steps (lightcycle.plan),
  and its LR monitor and divergence guard log the first and last step of each epoch anyway.
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


class _DropPrefixes(logging.Filter):
    """Drop log records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


_LITLOGGER_TIP = _DropMessage("[litlogger](")
_BANNERS = _DropPrefixes("GPU available:", "TPU available:", "HPU available:",
                         "Loading `train_dataloader` to estimate number of stepping batches")
_LOG_INTERVAL = r"The number of training batches \(\d+\) is smaller than the logging interval"


def quiet_known_noise() -> None:
    """Install the filters above (idempotent: calling it again adds nothing)."""
    warnings.filterwarnings("ignore", message=_LEAFSPEC, category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    warnings.filterwarnings("ignore", message=_LOG_INTERVAL)
    for name in _TIP_LOGGERS:
        logger = logging.getLogger(name)
        for noise in (_LITLOGGER_TIP, _BANNERS):
            if noise not in logger.filters:
                logger.addFilter(noise)
