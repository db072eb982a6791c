"""What a run across several machines needs from its config: one run dir, named the same on every node.

Every node runs `lightcycle-train` itself (torchrun, Lightning's launcher with NODE_RANK, srun), so
every node composes the config itself. The default run dir, `outputs/<date>/<time>`, is the time
at which that node started: two nodes starting a second apart would write into two folders, and
`resume=true` would find the checkpoint on one node only. So a multi-node run must name its run dir.
Sweeps (`-m`, e.g. Hydra's submitit launcher) are fine: the process that submits the sweep fixes
the sweep dir for every job and task.
"""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightcycle.errors import LightcycleError


def check_multinode_run_dir(cfg: DictConfig) -> None:
    """With `trainer.num_nodes` > 1, refuse a run dir that each node would compute from its own clock."""
    num_nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    if not isinstance(num_nodes, int) or num_nodes <= 1:
        return
    try:
        if not HydraConfig.initialized():
            return  # called from Python: the caller chose the folder
        hydra = HydraConfig.get()
        if hydra.mode == RunMode.MULTIRUN:
            return
        run_dir = str(OmegaConf.to_container(hydra.run, resolve=False).get("dir"))
    except Exception:  # a partial Hydra context (compose API): nothing to check
        return
    if "${now:" in run_dir:
        raise LightcycleError(
            f"trainer.num_nodes={num_nodes}: every node must write into the same run dir, but hydra.run.dir is "
            f"{run_dir}, which each node computes from its own start time; pass hydra.run.dir=PATH, the same "
            f"folder on a filesystem every node sees"
        )

