"""The Task interface: what defines a task's outputs (classification, tags, masks, points).

A task answers for:
- training: head, loss (hard or soft targets), per-sample loss, metrics, activation, decoding, what
  an epoch learned; whether its targets can be mixed (MixUp/CutMix) and smoothed;
- TTA: whether outputs move with the image (`outputs_move_with_image`) and how to undo a flip;
- identity and checks: `to_config` (plain data, so checkpoints load with `weights_only=True`),
  `check_compatible` (does a DataModule's task describe the same outputs), `check_framing`
  (can predictions through a framing be given for the original picture).

What a consumer does with a task's outputs lives beside that consumer, one file per task chosen
by the task's registered `name` (tasks/per_task.py): interpretation's tables, figures and views
(interpretation/per_task/), prediction's answers and records (predict/per_task/), export's
metadata (export/per_task/), a drawn training sample (data/show/). So adding a task is one file in
this package (a `Task` subclass decorated with `@register_task`), its DataModule (whose `make_task`
builds it), a data config, and one file in each consumer whose defaults do not fit it.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError


class Framed(Protocol):
    """What `check_framing` reads of a framing (data/framing.py's `Framing`, a layer above tasks)."""

    resize: str


class Task:
    """The interface every task implements; the defaults suit an image-level task."""

    name: ClassVar[str]
    monitor: ClassVar[str] = "val_loss"  # what "best" checkpoints optimise
    monitor_mode: ClassVar[str] = "min"
    # What the head consumes: "pooled" = one feature vector per image (classifier-style heads);
    # "features" = the encoder's feature maps, stride 2 to 32 (timm features_only), for dense heads.
    backbone_kind: ClassVar[str] = "pooled"
    # Peak learning rate when model.lr is not set: the task's measured best (docs/benchmarks.md, task defaults).
    default_lr: ClassVar[float] = 3e-3
    # Whether outputs are tied to positions in the picture (masks, points): then TTA and prediction
    # use invertible flip/scale views and map each view's output back with `unflip`, and a centre
    # crop cannot be undone; image-level outputs (classes, tags) use training-transform views.
    outputs_move_with_image: ClassVar[bool] = False
    # The most outputs (classes, tags, codes, points) a model of this task may have: far above real
    # models, low enough that the [C, C] confusion matrices of interpretation stay below 1 GB.
    max_outputs: ClassVar[int] = 10_000

    @classmethod
    def check_output_count(cls, count: int, what: str = "classes") -> None:
        """Refuse more outputs than `max_outputs` (a label file or record that would allocate without bound)."""
        if count > cls.max_outputs:
            raise LightcycleError(f"{cls.name}: {count:,} {what}, more than the {cls.max_outputs:,} a model may have")

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: Any, dropout: float) -> nn.Module:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss. Tasks that allow mixing (`mix_settings`) also take soft targets, as
        MixUp/CutMix make them: [N, C] probabilities, already label-smoothed by the mixer."""
        raise NotImplementedError

    def validation_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss validation reports (`val_loss`): the training loss without training-only
        regularisers such as label smoothing (as timm validates), so `val_loss`, `tta_loss` and
        `ensemble_loss` measure the same thing whatever the training recipe."""
        return self.loss(output, target)

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of every sample, shape [N], from raw outputs (what "top losses" ranks and shows),
        measured as `validation_loss` measures it (no label smoothing).

        The generic version calls `validation_loss` once per sample; tasks override it with `reduction="none"`.
        """
        return torch.stack([self.validation_loss(output[i : i + 1], target[i : i + 1]) for i in range(len(output))])

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        """Map raw model outputs to what users consume (probabilities, coordinates)."""
        raise NotImplementedError

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss computed from activated outputs (probabilities, coordinates).

        TTA and snapshot ensembles merge activated outputs, so their loss must start from there.
        """
        raise NotImplementedError

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        """Turn activated outputs into final answers (class index, tag decisions, mask, points)."""
        return activated

    def set_label_smoothing(self, value: float) -> None:
        """`model.label_smoothing`: only single-label classification smooths its targets."""
        if float(value) != 0.0:
            raise LightcycleError(
                f"model.label_smoothing={value}: the {self.name} task has no label smoothing "
                "(it applies to single-label classification); set model.label_smoothing=0"
            )

    def mix_settings(self) -> dict[str, Any]:
        """What timm's `Mixup` needs to mix this task's targets (`num_classes`, `label_smoothing`,
        `multi_label`); tasks whose targets are not image-level labels refuse."""
        raise LightcycleError(
            f"mixup/cutmix: the {self.name} task's targets cannot be mixed: MixUp and CutMix blend image-level "
            "labels (classification, multilabel), not masks or points; set mixup.alpha=0 cutmix.alpha=0"
        )

    def on_validation_epoch_end(self, metrics: MetricCollection) -> dict[str, float]:
        """Read what a validation epoch learned beyond scalar metrics (per-class IoU, tuned thresholds).

        Called with the module's (already updated) validation metrics; may update the task's own
        state, which the module then writes into the checkpoint's hyperparameters. Returns extra
        scalars for the loggers only (TensorBoard), not for metrics.json.
        """
        return {}

    # --- TTA -------------------------------------------------------------------------------------
    def unflip(self, output: torch.Tensor) -> torch.Tensor:
        """Map the raw output for a horizontally flipped input back to the unflipped frame.

        Only called when `outputs_move_with_image`; image-level outputs do not move with a flip.
        """
        return output

    # --- identity --------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def output_names(self) -> list[str]:
        """What each output channel means (class names, tags, codes, point names), for exports."""
        return list(getattr(self, "class_names", []) or [])

    def output_signature(self) -> dict[str, Any]:
        """What a checkpoint and a DataModule must agree on, by readable name (e.g. `class names`)."""
        return {"class names": self.output_names}

    def check_compatible(self, data_task: "Task", where: str) -> None:
        """Raise when `data_task` (a DataModule's) describes other outputs than this (a checkpoint's)."""
        if self.name != data_task.name:
            raise LightcycleError(f"{where}: the data is for {data_task.name} but the checkpoint is {self.name}")
        theirs = data_task.output_signature()
        for key, ours in self.output_signature().items():
            if ours != theirs.get(key):
                raise LightcycleError(
                    f"{where}: the data has {key} {theirs.get(key)} but the checkpoint was trained on {ours}"
                )

    def check_framing(self, framing: Framed, where: str) -> None:
        """Raise when predictions made through `framing`'s eval input cannot be given for the original picture."""


T = TypeVar("T", bound=type[Task])
TASKS: dict[str, type[Task]] = {}


def register_task(cls: T) -> T:
    """Make `cls` loadable from checkpoints by its `name` (`task_from_config`)."""
    TASKS[cls.name] = cls
    return cls


def task_from_config(config: dict[str, Any] | Task) -> Task:
    """Rebuild a task from the plain data stored in a checkpoint.

    A task not registered yet is looked up in `lightcycle.tasks.<name>` (a task file is named after
    its task), so a new task needs no registry edits elsewhere.
    """
    if isinstance(config, Task):
        return config
    config = dict(config)
    name = config.pop("name", None)
    if name not in TASKS and isinstance(name, str) and name.isidentifier():
        try:
            importlib.import_module(f"lightcycle.tasks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lightcycle.tasks.{name}":  # the task file exists but needs something missing
                raise
    if name not in TASKS:
        raise LightcycleError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    try:
        return TASKS[name](**config)
    except TypeError as exc:  # a setting the task does not take (a damaged or crafted record)
        raise LightcycleError(f"task {name}: {exc}") from None

