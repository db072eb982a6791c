"""`data.batch_size=auto`: the batch size chosen from the number of training images.

A schedule needs optimizer steps to warm up, anneal and settle, and a fixed batch of 64 leaves a
small data set very few (160 images: 2 steps an epoch, 16 in an 8-epoch run; docs/benchmarks.md,
task defaults). `auto` takes the largest of AUTO_BATCH_SIZES that still gives an epoch at least
MIN_STEPS_PER_EPOCH batches, and the smallest when none does; large data sets keep batches of 64.
It counts batches of the whole training set in one process (under DDP each process runs 1/N of
them); a number instead of `auto` is used as given.
"""

from __future__ import annotations

import logging

from lightcycle.errors import LightcycleError

log = logging.getLogger(__name__)

AUTO = "auto"
AUTO_BATCH_SIZES: tuple[int, ...] = (64, 32, 16, 8)
MIN_STEPS_PER_EPOCH = 32


def parse_batch_size(value: int | str) -> int | None:
    """A batch size setting -> the number, or None for `auto`; anything else is a LightcycleError."""
    text = str(value).strip().lower()
    if text == AUTO:
        return None
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise LightcycleError(f"data.batch_size must be a whole number >= 1 or auto, got {value!r}")
    return int(text)


def auto_batch_size(n_train: int, min_steps: int = MIN_STEPS_PER_EPOCH, sizes: tuple[int, ...] = AUTO_BATCH_SIZES) -> int:
    """The largest of `sizes` giving at least `min_steps` full batches of `n_train` images, else the smallest."""
    ordered = sorted(sizes, reverse=True)
    return next((b for b in ordered if n_train // b >= min_steps), ordered[-1])


def resolve_auto(n_train: int, task: str, announce: bool = True) -> int:
    """`auto_batch_size` for a training set, with a log line saying what was chosen and why (unless
    `announce` is False: the same choice made again, e.g. by a recipe's next stage)."""
    chosen = auto_batch_size(n_train)
    if not announce:
        return chosen
    largest = max(AUTO_BATCH_SIZES)
    if chosen == largest:
        why = f"{n_train // chosen} batches an epoch"
    elif n_train // chosen >= MIN_STEPS_PER_EPOCH:
        why = f"{n_train // chosen} batches an epoch; {largest} would give {n_train // largest}"
    else:
        why = f"{n_train // chosen} batches an epoch, the most the smallest automatic size gives"
    log.info(
        "%s: data.batch_size=auto -> %d for %d training images (%s; auto aims at >= %d optimizer steps an epoch)",
        task, chosen, n_train, why, MIN_STEPS_PER_EPOCH,
    )
    return chosen
