"""Snapshot ensembles, the algorithm: find and load the snapshots of a run, average their outputs.

An ensemble's output is the mean of its models' activated outputs (probabilities, coordinates), as
Huang et al. and fastai 0.7 average the models at the SGDR cycles' minima. `SnapshotEnsemble`
(callbacks/snapshots.py) writes `snapshot-cycle{i}.ckpt` at each cycle's end and scores the ensemble
with `evaluate_states` when training ends; `Predictor` finds the snapshots beside a checkpoint with
`find_snapshots`; `load_snapshots` and `ensemble_predict` serve the same from Python.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from lightcycle.checkpoint_io import read_checkpoint
from lightcycle.errors import LightcycleError
from lightcycle.evaluation import score_batches
from lightcycle.module import VisionModule
from lightcycle.tasks import Task

SNAPSHOT_PATTERN = re.compile(r"snapshot-cycle(\d+)\.ckpt$")


def snapshot_name(cycle: int) -> str:
    """File name of the snapshot taken at the end of `cycle` (1-based)."""
    return f"snapshot-cycle{cycle}.ckpt"


def find_snapshots(dirpath: str | os.PathLike) -> list[Path]:
    """The snapshot files in a checkpoints folder, in cycle order."""
    found = []
    for path in Path(dirpath).glob("snapshot-cycle*.ckpt"):
        match = SNAPSHOT_PATTERN.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def load_snapshots(paths: Sequence[str | os.PathLike] | str | os.PathLike, map_location: str | torch.device = "cpu") -> list[Any]:
    """Load snapshot files (or every snapshot in a folder) as `VisionModule`s in eval mode, for prediction."""
    if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
        paths = find_snapshots(paths)
        if not paths:
            raise LightcycleError("no snapshot-cycle*.ckpt files found in that folder")
    elif isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    models = [VisionModule.load(p, map_location=map_location) for p in paths]
    for m in models:
        m.eval()
    return models


@torch.no_grad()
def ensemble_predict(models: Sequence[Any], x: torch.Tensor) -> torch.Tensor:
    """Mean of the models' activated outputs (probabilities, coordinates) for one batch."""
    if not models:
        raise LightcycleError("ensemble_predict needs at least one model")
    total = None
    for model in models:
        out = model.task.activation(model(x)).float()
        total = out if total is None else total + out
    return total / len(models)


def read_states(paths: Iterable[str | os.PathLike]) -> list[dict[str, torch.Tensor]]:
    """The weights (`state_dict`) of each snapshot file, read the safe way (checkpoint_io)."""
    return [read_checkpoint(path, "snapshot ensemble")["state_dict"] for path in paths]


def evaluate_states(
    model: nn.Module,
    task: Task,
    states: Sequence[Mapping[str, torch.Tensor]],
    loader: Iterable[Any],
    prefix: str = "ensemble",
    context: Callable[[], ContextManager[Any]] | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Score the mean of the activated outputs of `model` with each of `states` loaded, on `loader`'s
    (image, target) batches: `<prefix>_loss`, `<prefix>_<metric>` (reduced across DDP ranks by
    `score_batches`). `model` gets its own weights and train/eval modes back afterwards.

    `context`: a factory of a context manager around each forward (the Trainer's autocast);
    `prepare`: batch on the device -> model inputs (the DataModule's `batch_transform`).
    """
    if not states:
        raise LightcycleError("a snapshot ensemble needs at least one snapshot")
    own_weights = copy.deepcopy(model.state_dict())
    modes = {name: m.training for name, m in model.named_modules()}
    device = next(model.parameters()).device
    forward_context = context or contextlib.nullcontext

    def batches() -> Iterator[tuple[torch.Tensor, Any]]:
        for batch in loader:
            x, y = batch[0].to(device, non_blocking=True), batch[1]
            x = prepare(x) if prepare is not None else x
            total = None
            for state in states:
                model.load_state_dict(state)
                with forward_context():
                    out = task.activation(model(x)).float()
                total = out if total is None else total + out
            assert total is not None
            yield total / len(states), y

    model.eval()
    try:
        with torch.no_grad():
            return score_batches(task, batches(), prefix)
    finally:
        model.load_state_dict(own_weights)
        for name, m in model.named_modules():
            m.train(modes.get(name, m.training))
