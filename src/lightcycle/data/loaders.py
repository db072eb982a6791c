"""Loaders for passes in dataset order: every DataLoader lightcycle builds comes from data/.

The DataModule serves training and validation (`ImageDataModule.train_dataloader`, `val_dataloader`)
and the passes of one's own over its data through `eval_loader` and `feature_loader`; the Predictor,
which has no DataModule, batches its inputs with `ordered_loader` as well.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def eval_sampler(dataset: Dataset) -> DistributedSampler | None:
    """Under DDP, shard evaluation data without padding, so every sample is scored exactly once.

    Lightning would inject a DistributedSampler, which pads the last shard by repeating samples;
    repeated samples would then count twice in validation, TTA and ensemble metrics. Ranks may get
    one batch more or less, which evaluation (no gradient, no buffer sync) tolerates. None when not
    distributed: a plain sequential loader.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if torch.distributed.get_world_size() < 2:
        return None

    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def ordered_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False, sharded: bool = False,
) -> DataLoader[Any]:
    """Every item of `dataset` once, in order, in batches (no persistent workers: a one-off pass).

    `sharded`: under DDP each process gets its shard and no item comes twice (`eval_sampler`), for
    passes whose results are reduced across processes; otherwise this process sees every item.
    """
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=False,
        sampler=eval_sampler(dataset) if sharded else None,
        num_workers=int(num_workers),
        pin_memory=bool(pin_memory),
    )
