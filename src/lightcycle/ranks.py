"""Which process of a distributed launch this is, read from the launcher's environment.

One training run can be many processes: Lightning's DDP launcher re-runs the script once per extra
device with LOCAL_RANK (and NODE_RANK on other nodes) set; torchrun sets RANK, LOCAL_RANK and
GROUP_RANK; SLURM's srun sets SLURM_PROCID; MPI launchers set PMI_RANK or OMPI_COMM_WORLD_RANK.
Work that must happen once per run — taking the run folder's lock, refusing a reused folder,
narrating the run — asks `is_global_zero()` before any Trainer (and so any process group) exists.
"""

from __future__ import annotations

import os
from typing import Mapping

# Launchers that state the global rank itself, in the order they are trusted: torchrun's RANK
# wins over SLURM_PROCID when torchrun runs inside a SLURM allocation.
GLOBAL_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "JSM_NAMESPACE_RANK")


def _number(environ: Mapping[str, str], key: str) -> int | None:
    value = environ.get(key, "").strip()
    return int(value) if value.isdigit() else None


def process_rank(environ: Mapping[str, str] | None = None) -> int:
    """The global rank of this process (0 when nothing launched it as part of a group).

    Exact when the launcher states it (see GLOBAL_RANK_VARIABLES) or when LOCAL_WORLD_SIZE is set;
    for Lightning's own multi-node launch (NODE_RANK without the devices per node) the rank of a
    process on another node is positive but not its exact number.
    """
    env = os.environ if environ is None else environ
    for key in GLOBAL_RANK_VARIABLES:
        rank = _number(env, key)
        if rank is not None:
            return rank
    local = _number(env, "LOCAL_RANK") or 0
    node = _number(env, "NODE_RANK") or _number(env, "GROUP_RANK") or 0
    if node == 0:
        return local
    per_node = _number(env, "LOCAL_WORLD_SIZE") or 1
    return node * per_node + local


def is_global_zero(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this is the process that does a run's once-only work (rank 0 of the whole launch)."""
    return process_rank(environ) == 0


# Variables a launcher sets when it starts (or will start) more than one process for a run.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def several_processes(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is one of several of a launch (torchrun, Lightning's launcher with
    NODE_RANK or LOCAL_RANK, srun, MPI), read from the launcher's environment."""
    env = os.environ if environ is None else environ
    if any((_number(env, key) or 0) > 1 for key in WORLD_SIZE_VARIABLES):
        return True
    return any(key in env for key in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))
