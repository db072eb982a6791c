"""The learning rate and momentum of every layer group in TensorBoard, cheaply enough for GPU steps.

VisionModule's optimizer holds each layer group twice (with and without weight decay, on one
schedule), so Lightning's `LearningRateMonitor` would draw every curve twice; it also copies each
value into `trainer.callback_metrics` as a tensor on the device. This callback writes one learning
rate and one momentum (Adam's beta1) per layer group, in one `log_metrics` call, every
`trainer.log_every_n_steps` optimizer steps and at the first and last step of every epoch, so
SGDR's restarts (epoch boundaries) show exactly however large the interval.

Tags follow Lightning's: `lr-AdamW/group3` and `lr-AdamW/group3-momentum`.
"""

from __future__ import annotations

import re
from typing import Any

import lightning as L
from torch.optim import Optimizer

_TWIN_SUFFIX = re.compile(r"_(no_)?decay$")


def layer_group_name(group: dict[str, Any], index: int) -> str:
    """`group<i>` for VisionModule's groups (their `layer_group` key or name), else the group's name or index."""
    if "layer_group" in group:
        return f"group{int(group['layer_group'])}"
    name = group.get("name")
    return _TWIN_SUFFIX.sub("", str(name)) if name else f"pg{index}"


def layer_group_rates(optimizer: Optimizer, prefix: str, momentum: bool = True) -> dict[str, float]:
    """{tag: value} for the first parameter group of every layer group (its twins share the schedule)."""
    out: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        tag = f"{prefix}/{layer_group_name(group, index)}"
        if tag in out:
            continue
        out[tag] = float(group["lr"])
        if momentum:
            if "betas" in group:
                out[f"{tag}-momentum"] = float(group["betas"][0])
            elif "momentum" in group:
                out[f"{tag}-momentum"] = float(group["momentum"])
    return out


class LayerGroupLRMonitor(L.Callback):
    """Log each layer group's learning rate (and momentum) at the logging interval.

    Args:
        log_momentum: also log Adam's beta1 or SGD's momentum.
        every_n_steps: optimizer steps between points (default: `trainer.log_every_n_steps`, the
            interval of the training loss; 0 = only the epochs' first and last steps).
    """

    def __init__(self, log_momentum: bool = True, every_n_steps: int | None = None) -> None:
        self.log_momentum = bool(log_momentum)
        self.every_n_steps = every_n_steps
        self._logged_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._logged_step = -1  # every fit (a recipe's stages) counts its steps from its start

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.loggers or step == self._logged_step:  # accumulation: several batches share a step
            return
        every = trainer.log_every_n_steps if self.every_n_steps is None else int(self.every_n_steps)
        last = trainer.num_training_batches
        edge = batch_idx == 0 or (isinstance(last, int) and batch_idx == last - 1)
        if not (edge or (every > 0 and step % every == 0)):
            return
        self._logged_step = step
        metrics = self.rates(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def rates(self, trainer: L.Trainer) -> dict[str, float]:
        """The current values of every optimizer, tagged `lr-<Optimizer>[-<k>]/group<i>`."""
        out: dict[str, float] = {}
        seen: dict[str, int] = {}
        for optimizer in trainer.optimizers:
            name = f"lr-{type(optimizer).__name__}"
            seen[name] = seen.get(name, 0) + 1
            prefix = name if seen[name] == 1 else f"{name}-{seen[name] - 1}"
            out.update(layer_group_rates(optimizer, prefix, self.log_momentum))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
