"""Intra-op threads of the training process on CPU: the cores the DataLoader workers leave.

torch starts one intra-op thread per core. With DataLoader workers beside it (one per core beyond the
first, lightcycle.data.base.default_num_workers) a 2-core machine then runs 3 busy threads on 2 cores,
and under any other load the OpenMP threads spin against each other: the demo took 18 minutes instead
of about 1.5 on a loaded 2-core machine (docs/benchmarks.md, training threads). So on CPU accelerators
the training process takes `cores // processes - workers` threads (at least 1). An explicit
`OMP_NUM_THREADS` (or `MKL_NUM_THREADS`) in the environment is the user's choice and is left alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator

from lightcycle.data.base import available_cores

log = logging.getLogger("lightcycle")

USER_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def training_threads(cores: int, workers: int, processes: int = 1) -> int:
    """Intra-op threads for each of `processes` training processes on `cores` cores, each with `workers`
    DataLoader workers busy beside it: the cores left to it, never fewer than one."""
    return max(1, int(cores) // max(1, int(processes)) - max(0, int(workers)))


def user_thread_setting(environ: Any = None) -> str | None:
    """`NAME=value` of the thread setting the user gave in the environment, None when there is none."""
    environ = os.environ if environ is None else environ
    for name in USER_SETTINGS:
        if environ.get(name, "").strip():
            return f"{name}={environ[name]}"
    return None


def set_training_threads(trainer: Any, datamodule: Any) -> int | None:
    """Before a fit on CPU: torch's intra-op threads from the cores the workers leave; returns the count
    set, None when the accelerator is not a CPU or the user set the threads."""
    if not isinstance(getattr(trainer, "accelerator", None), CPUAccelerator) or user_thread_setting():
        return None
    workers = int(getattr(datamodule, "num_workers", 0) or 0)
    threads = training_threads(available_cores(), workers, getattr(trainer, "num_devices", 1))
    if threads != torch.get_num_threads():
        log.info("torch threads: %d (%d core(s), %d DataLoader worker(s); set OMP_NUM_THREADS to choose)",
                 threads, available_cores(), workers)
        torch.set_num_threads(threads)
    return threads
