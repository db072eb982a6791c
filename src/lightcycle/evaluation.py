"""Score merged predictions (TTA views, snapshot ensembles) with the task's own loss and metrics.

Streaming: batches are scored as they come, so evaluating n views or M snapshots never holds
more than one batch of outputs per view.
"""

from __future__ import annotations

from typing import Iterable

import torch

from lightcycle.tasks import Task


def score_batches(task: Task, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], prefix: str) -> dict[str, float]:
    """Mean loss and task metrics over (activated output, target) batches, keys as `<prefix>_<name>`."""
    metrics = task.metrics()
    total_loss, count = 0.0, 0
    for activated, target in batches:
        activated, target = activated.detach().float().cpu(), target.detach().cpu()
        total_loss += float(task.activated_loss(activated, target)) * len(target)
        count += len(target)
        metrics.update(activated, target)
    if count == 0:
        raise ValueError("score_batches got no samples")
    out = {f"{prefix}_loss": total_loss / count}
    out.update({f"{prefix}_{name}": float(value) for name, value in metrics.compute().items() if value.numel() == 1})
    return out
