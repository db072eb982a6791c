"""Learning-rate and momentum schedules as pure functions of the training step.

Pure functions make the schedules unit-testable with closed-form values and make resuming trivial:
the position in the schedule is just the global step, which Lightning already checkpoints.
Every function returns a *multiplier* of the peak learning rate (1.0 = `lr`), so one schedule drives
every parameter group, each with its own peak (discriminative learning rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lightcycle.errors import SettingError


def cosine_anneal(start: float, end: float, pct: float) -> float:
    """Cosine interpolation from `start` (pct=0) to `end` (pct=1), as fastai's SchedCos."""
    pct = min(max(pct, 0.0), 1.0)
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


@dataclass(frozen=True)
class OneCycle:
    """fastai's fit_one_cycle: warm up from lr/div to lr over pct_start, then anneal to lr/div_final.

    Momentum (SGD momentum or Adam beta1) runs the opposite way: moms[0] -> moms[1] -> moms[2].
    """

    total_steps: int
    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise SettingError(f"one-cycle needs at least one step, got total_steps={self.total_steps}")
        if not 0.0 <= self.pct_start <= 1.0:
            raise SettingError(f"schedule.pct_start must be in [0, 1], got {self.pct_start}")

    def _phase(self, step: int) -> tuple[bool, float]:
        warm = self.pct_start * self.total_steps
        pos = min(step, self.total_steps)
        if pos < warm:
            return True, pos / warm
        return False, (pos - warm) / max(self.total_steps - warm, 1e-12)

    def lr(self, step: int) -> float:
        warming, pct = self._phase(step)
        if warming:
            return cosine_anneal(1.0 / self.div, 1.0, pct)
        return cosine_anneal(1.0, 1.0 / self.div_final, pct)

    def momentum(self, step: int) -> float | None:
        warming, pct = self._phase(step)
        if warming:
            return cosine_anneal(self.moms[0], self.moms[1], pct)
        return cosine_anneal(self.moms[1], self.moms[2], pct)


@dataclass(frozen=True)
class SGDR:
    """Stochastic gradient descent with warm restarts (Loshchilov & Hutter; fastai 0.7's cycle_len/cycle_mult).

    Cycle i lasts `cycle_len * cycle_mult**i` epochs; within a cycle the multiplier anneals by cosine
    from 1 to `lr_min` (a fraction of the peak). An optional linear warmup over the first
    `warmup_steps` of the first cycle avoids a cold start at the peak rate.

    `epochs` fits the cycles into an epoch budget instead (what a recipe with a total epoch count
    needs): see `fit_cycles`; `cycle_len` is then ignored and `n_cycles` is the most cycles allowed.
    """

    steps_per_epoch: int
    cycle_len: int = 1
    cycle_mult: int = 1
    n_cycles: int = 3
    lr_min: float = 0.0
    warmup_steps: int = 0
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1 or self.cycle_len < 1 or self.cycle_mult < 1 or self.n_cycles < 1:
            raise SettingError(
                "SGDR needs steps_per_epoch, cycle_len, cycle_mult and n_cycles >= 1, got "
                f"{self.steps_per_epoch}, {self.cycle_len}, {self.cycle_mult}, {self.n_cycles}"
            )
        if self.epochs is not None and self.epochs < 1:
            raise SettingError(f"SGDR needs epochs >= 1 (or null), got {self.epochs}")

    def cycle_epochs(self) -> list[int]:
        """Length in epochs of each cycle."""
        if self.epochs is not None:
            return fit_cycles(self.epochs, self.cycle_mult, self.n_cycles)
        return [self.cycle_len * self.cycle_mult**i for i in range(self.n_cycles)]

    @property
    def total_epochs(self) -> int:
        return sum(self.cycle_epochs())

    @property
    def total_steps(self) -> int:
        return self.total_epochs * self.steps_per_epoch

    def cycle_end_steps(self) -> list[int]:
        """The last step (0-based) of every cycle: where snapshots are taken."""
        ends, acc = [], 0
        for epochs in self.cycle_epochs():
            acc += epochs * self.steps_per_epoch
            ends.append(acc - 1)
        return ends

    def restart_epochs(self) -> list[int]:
        """Epochs (0-based) at which a new cycle starts, the first one excluded."""
        starts, acc = [], 0
        for epochs in self.cycle_epochs()[:-1]:
            acc += epochs
            starts.append(acc)
        return starts

    def _position(self, step: int) -> tuple[int, int, int]:
        """(cycle index, step within the cycle, cycle length in steps)."""
        start = 0
        for i, epochs in enumerate(self.cycle_epochs()):
            length = epochs * self.steps_per_epoch
            if step < start + length:
                return i, step - start, length
            start += length
        cycles = self.cycle_epochs()
        last = cycles[-1] * self.steps_per_epoch
        return len(cycles) - 1, last, last

    def lr(self, step: int) -> float:
        cycle, pos, length = self._position(step)
        if cycle == 0 and pos < self.warmup_steps:
            return (pos + 1) / self.warmup_steps
        return cosine_anneal(1.0, self.lr_min, pos / length)

    def momentum(self, step: int) -> float | None:
        return None


def fit_cycles(epochs: int, cycle_mult: int, max_cycles: int) -> list[int]:
    """SGDR cycle lengths that fill exactly `epochs`, growing by `cycle_mult`, at most `max_cycles`.

    The most cycles of an exact geometric series first (6 epochs, mult 2 -> [2, 4]; 7 -> [1, 2, 4]),
    because every cycle end is a snapshot; where no series of two or more cycles fits exactly, cycles
    of 1, mult, mult^2... epochs with the last one stretched to the budget (8 -> [1, 2, 5]).
    """
    if epochs < 1 or cycle_mult < 1 or max_cycles < 1:
        raise SettingError(f"fit_cycles needs epochs, cycle_mult and max_cycles >= 1, got {epochs}, {cycle_mult}, {max_cycles}")
    for n in range(max_cycles, 1, -1):
        unit = sum(cycle_mult**i for i in range(n))
        if epochs % unit == 0:
            return [epochs // unit * cycle_mult**i for i in range(n)]
    cycles: list[int] = []
    while len(cycles) < max_cycles and sum(cycles) + cycle_mult ** len(cycles) <= epochs:
        cycles.append(cycle_mult ** len(cycles))
    cycles[-1] += epochs - sum(cycles)
    return cycles


@dataclass(frozen=True)
class Constant:
    """A flat learning rate (fastai's `fit`): useful for debugging and as a baseline."""

    def lr(self, step: int) -> float:
        return 1.0

    def momentum(self, step: int) -> float | None:
        return None


Schedule = OneCycle | SGDR | Constant
SCHEDULES = ("one_cycle", "sgdr", "constant")


def build_schedule(config: dict | None, total_steps: int, steps_per_epoch: int) -> Schedule:
    """Build a schedule from its Hydra config (`name` plus that schedule's parameters)."""
    config = dict(config or {"name": "one_cycle"})
    name = config.pop("name", "one_cycle")
    if name == "one_cycle":
        moms = config.pop("moms", (0.95, 0.85, 0.95))
        return OneCycle(total_steps=total_steps, moms=tuple(moms), **config)
    if name == "sgdr":
        return SGDR(steps_per_epoch=steps_per_epoch, **config)
    if name == "constant":
        return Constant()
    raise SettingError(f"schedule.name must be one of {', '.join(SCHEDULES)}, got {name!r}")


class ScheduleLR(LRScheduler):
    """Drive every parameter group's lr (and momentum / Adam beta1) from a pure schedule.

    Each group keeps its own peak (`initial_lr`), so discriminative learning rates keep their ratios.
    Lightning steps it every batch and checkpoints `last_epoch` (= the step), which is all resuming
    needs; the schedule itself is rebuilt from config, so checkpoints hold no pickled objects.
    """

    def __init__(self, optimizer: Optimizer, schedule: Schedule, last_epoch: int = -1) -> None:
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = max(self.last_epoch, 0)
        momentum = self.schedule.momentum(step)
        if momentum is not None:
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (momentum, *tuple(group["betas"])[1:])
                elif "momentum" in group:
                    group["momentum"] = momentum
        multiplier = self.schedule.lr(step)
        return [base * multiplier for base in self.base_lrs]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule")}
