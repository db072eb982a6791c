"""Lightning callbacks: the fast.ai training toolbox plus run reporting."""

from lightcycle.callbacks.epoch_log import EpochLog

__all__ = ["EpochLog"]
