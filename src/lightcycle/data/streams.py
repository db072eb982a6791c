"""The random streams of augmentation: which generator each copy of a transform draws from.

albumentations gives every `A.Compose` generators of its own (numpy and Python), independent of
`seed_everything`. Built once in the main process and copied into each DataLoader worker, every
worker would start from the same state and draw the same flips, crops and lighting for its batches,
and two runs with the same `seed=` would draw different ones. So each copy is seeded where it runs:

- in a DataLoader worker, from the worker's own torch seed (DataLoader gives each worker its own,
  drawn from the seeded main process each time the loader starts its workers; Lightning's
  `pl_worker_init_function`, when `seed_everything(workers=True)` added it, has already mixed in the
  rank) together with the global rank, the first time the worker prepares a sample;
- in the main process (`num_workers=0`), each time a loader starts an epoch (`AugmentingLoader`),
  from a number drawn from torch's generator, as DataLoader draws its workers' base seed.

Either way a run's augmentations follow from its seed, and every worker, rank and epoch draws its own.
`streams_restored` puts a transform's generators back after a block that drew from them (the LR
range test), as the rest of the random state is put back.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader


def global_rank() -> int:
    """This process's global rank as Lightning knows it (0 outside distributed runs)."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def seed_stream(transform: Any, *words: int) -> None:
    """Give every step of `transform` one shared numpy and Python generator, seeded from `words`.

    One generator for all steps, not albumentations' `set_random_seed`, which seeds each step with
    the same number so the flip and the lighting would draw the same values.
    """
    numpy_sequence, python_sequence = np.random.SeedSequence([int(w) % 2**64 for w in words]).spawn(2)
    numpy_generator = np.random.default_rng(numpy_sequence)
    python_generator = random.Random(int.from_bytes(python_sequence.generate_state(4, np.uint32).tobytes(), "little"))
    transform.set_random_state(numpy_generator, python_generator)


def seed_in_worker(transform: Any, seeded_with: int | None) -> int | None:
    """Inside a DataLoader worker, seed `transform` from the worker's torch seed and the rank unless
    it already was (`seeded_with`, the seed it was given there); returns the seed now in use.
    Outside a worker a no-op that returns `seeded_with`."""
    if torch.utils.data.get_worker_info() is None:
        return seeded_with
    seed = torch.initial_seed()
    if seed != seeded_with:
        seed_stream(transform, seed, global_rank())
    return seed


class AugmentingLoader(DataLoader):
    """A DataLoader that, without workers, reseeds its dataset's augmentation at each epoch's start.

    The number comes from the loader's generator (torch's global one by default, which
    `seed_everything` seeds), so epochs differ and runs with the same seed repeat. With workers
    the workers seed themselves (`seed_in_worker`).
    """

    def __iter__(self) -> Any:
        reseed = getattr(self.dataset, "reseed", None)
        if self.num_workers == 0 and callable(reseed):
            draw = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())
            reseed(draw, global_rank())
        return super().__iter__()


def _steps(transform: Any) -> list[Any]:
    """`transform` and every step nested in it."""
    steps = [transform]
    for child in getattr(transform, "transforms", None) or ():
        steps += _steps(child)
    return steps


def _state(generator: Any) -> Any:
    return generator.getstate() if isinstance(generator, random.Random) else generator.bit_generator.state


def _set_state(generator: Any, state: Any) -> None:
    if isinstance(generator, random.Random):
        generator.setstate(state)
    else:
        generator.bit_generator.state = state


@contextmanager
def streams_restored(*datasets: Any) -> Iterator[None]:
    """Run a block, then put the augmentation generators of `datasets` back exactly as they were:
    the same generator objects in every step (a reseed inside the block replaces them), in the same state.

    Only the main process's copies: workers started inside the block hold copies of their own.
    Datasets without a `transform` (cached features) are ignored.
    """
    holders = [d for d in datasets if getattr(d, "transform", None) is not None]
    seeds = [getattr(d, "stream_seed", None) for d in holders]
    steps = [(step, step.random_generator, step.py_random) for d in holders for step in _steps(d.transform)
             if hasattr(step, "random_generator") and hasattr(step, "py_random")]
    generators = {id(g): g for _, numpy_generator, python_generator in steps for g in (numpy_generator, python_generator)}
    states = [(g, _state(g)) for g in generators.values()]
    try:
        yield
    finally:
        for step, numpy_generator, python_generator in steps:
            step.random_generator, step.py_random = numpy_generator, python_generator
        for generator, state in states:
            _set_state(generator, state)
        for dataset, seed in zip(holders, seeds):
            if hasattr(dataset, "stream_seed"):
                dataset.stream_seed = seed
