"""Score merged predictions (TTA views, snapshot ensembles) with the task's own loss and metrics.

Streaming: batches are scored as they come, so evaluating n views or M snapshots never holds
more than one batch of outputs per view.

Distributed: each rank scores its own shard (the DataModule's `val_dataloader` shards without
padding under DDP), then the loss sums and the torchmetrics states are reduced across ranks, so
every sample counts exactly once and every rank returns the same numbers.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist

from lightcycle.errors import LightcycleError
from lightcycle.tasks import Task


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def score_batches(task: Task, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], prefix: str) -> dict[str, float]:
    """Mean loss and task metrics over (activated output, target) batches, keys as `<prefix>_<name>`."""
    metrics = task.metrics()
    device: torch.device | None = None
    totals = torch.zeros(2, dtype=torch.float64)  # loss sum, sample count
    for activated, target in batches:
        if device is None:  # metric states live where the outputs are (NCCL reduces device tensors)
            device = activated.device
            metrics = metrics.to(device)
        activated, target = activated.detach().float(), target.detach().to(device)
        totals[0] += float(task.activated_loss(activated, target)) * len(target)
        totals[1] += len(target)
        metrics.update(activated, target)
    if _distributed():
        if device is None:  # a rank with an empty shard still takes part in every reduction
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
            metrics = metrics.to(device)
        totals = totals.to(device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    if totals[1] == 0:
        raise LightcycleError(f"{prefix}_* metrics: no samples to score (the validation set is empty)")
    out = {f"{prefix}_loss": float(totals[0] / totals[1])}
    out.update({f"{prefix}_{name}": float(value) for name, value in metrics.compute().items() if value.numel() == 1})
    return out
