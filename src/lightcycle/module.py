"""VisionModule: one LightningModule for every task, around any timm backbone.

The task object supplies head, loss, metrics and activation; this module supplies what is common:
layer groups with discriminative learning rates, AdamW without weight decay on norms and biases,
the per-batch schedule, and freezing that keeps BatchNorm trainable (fastai's `train_bn`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
import torchmetrics
from torch import nn

from lightcycle.checkpoint_io import read_checkpoint
from lightcycle.checkpoint_record import INFERENCE_KEY, check_checkpoint_record  # noqa: F401  (INFERENCE_KEY: public here too)
from lightcycle.errors import LightcycleError
from lightcycle.inference_config import InferenceConfig
from lightcycle.loggers import logged_step
from lightcycle.models.backbone import (
    backbone_layer_groups,
    create_backbone,
    create_encoder,
    num_features,
    stochastic_depth,
)
from lightcycle.plan import FitPlan, plan_fit, warn_few_steps
from lightcycle.schedules import ScheduleLR
from lightcycle.tasks import Task, task_from_config

log = logging.getLogger(__name__)

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
LR_SPREADS = ("geometric", "body")  # fastai's slice(lr / lr_mult, lr) and slice(lr) (see group_lrs)


def compile_arguments(compile: bool | str | dict[str, Any]) -> dict[str, Any] | None:
    """`compile` setting -> torch.compile keyword arguments, or None when off."""
    if compile in (False, None, "false"):
        return None
    if compile in (True, "true"):
        return {}
    if isinstance(compile, str):
        return {"mode": compile}
    if isinstance(compile, dict):
        return dict(compile)
    raise LightcycleError(f"model.compile must be false, true, a torch.compile mode or a dict, got {compile!r}")


class VisionModule(L.LightningModule):
    """A timm backbone plus a task head, trained the fastai way.

    Args:
        task: the Task (or its `to_config()` dict, as stored in checkpoints).
        backbone: any timm model name.
        pretrained: "auto" (weights from a pip package, else timm's cached or downloaded ImageNet weights,
            else an error), False, True (timm hub weights), "bundled" (pip package only) or a weights file.
        weights_match: how a local file maps onto the backbone: 'name' or 'order'.
        pool: pooling before the head ('catavgmax' = fastai's concat pooling).
        dropout: head dropout (fastai's `ps`).
        lr: peak learning rate of the last layer group (the head); None = the task's own default
            (`Task.default_lr`, measured per task: docs/benchmarks.md, task defaults).
        lr_mult: ratio between the head's and the first group's learning rate (fastai's
            `slice(lr / lr_mult, lr)`), spread geometrically across the groups; 1 = one rate for all.
        lr_spread: how `lr_mult` spreads the rates: 'geometric' (fastai's `slice(lr / lr_mult, lr)`)
            or 'body' (every group but the head at `lr / lr_mult`: fastai's `slice(lr)` is
            `lr_mult=10`, what `fine_tune` gives the frozen body in its first stage).
        wd: decoupled weight decay, not applied to norm and bias parameters.
        betas, eps: AdamW's; fastai uses (0.9, 0.99) and 1e-5.
        schedule: schedule config (`name` = one_cycle | sgdr | constant and its parameters).
        train_bn: keep BatchNorm layers of frozen groups trainable; off, they neither train nor update
            their statistics (eval mode, as fastai 0.7 froze layers).
        channels_last: NHWC memory format for weights and inputs: oneDNN's fast path on CPU (training
            steps of efficientnet_lite0 1.9x faster, bench/channels_last.py) and faster convolutions
            on recent GPUs, above all under fp16/bf16.
        compile: torch.compile the backbone and head in place (`nn.Module.compile`, so checkpoint
            keys do not change): false, true, a mode name ('reduce-overhead', 'max-autotune') or a
            dict of torch.compile arguments.
        label_smoothing: the task's label smoothing (single-label classification; stored in the
            task's config, so in checkpoints); None keeps the task's own.
        drop_path: stochastic depth, timm's `drop_path_rate` (0 = off).
    """

    def __init__(
        self,
        task: Task | dict[str, Any],
        backbone: str = "efficientnet_lite0",
        pretrained: bool | str = "auto",
        weights_match: str = "name",
        pool: str = "catavgmax",
        dropout: float = 0.5,
        lr: float | None = None,
        lr_mult: float = 1.0,
        lr_spread: str = "geometric",
        wd: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-5,
        schedule: dict[str, Any] | None = None,
        train_bn: bool = True,
        channels_last: bool = True,
        compile: bool | str | dict[str, Any] = False,
        label_smoothing: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.task = task_from_config(task)
        lr = self.task.default_lr if lr is None else lr  # saved below as the lr this model trains with
        if isinstance(lr, str) or not math.isfinite(float(lr)) or float(lr) <= 0:
            raise LightcycleError(f"model.lr must be a positive number, got {lr!r}")
        if float(lr_mult) < 1:
            raise LightcycleError(f"model.lr_mult must be >= 1, got {lr_mult}")
        if label_smoothing is not None:
            self.task.set_label_smoothing(label_smoothing)
        if lr_spread not in LR_SPREADS:
            raise LightcycleError(f"model.lr_spread must be one of {', '.join(LR_SPREADS)}, got {lr_spread!r}")
        self.save_hyperparameters(ignore=["task"])
        self.hparams["task"] = self.task.to_config()
        self.hparams["pretrained"] = str(pretrained) if isinstance(pretrained, (os.PathLike,)) else pretrained
        depth = stochastic_depth(backbone, drop_path)
        if self.task.backbone_kind == "features":  # dense heads (U-Net) read every feature map
            self.backbone = create_encoder(backbone, pretrained, weights_match=weights_match, **depth)
            self.head = self.task.build_head(self.backbone, self.backbone.feature_info.channels(), dropout)
        else:
            self.backbone = create_backbone(backbone, pretrained, pool=pool, weights_match=weights_match, **depth)
            self.head = self.task.build_head(self.backbone, num_features(self.backbone), dropout)
        self.val_metrics = self.task.metrics().clone(prefix="val_")
        # A metric, not a logged mean: under DDP ranks hold shards of different sizes, and a
        # sample-weighted sum across ranks is the only mean that equals the single-process one.
        self.val_loss = torchmetrics.MeanMetric()
        self._compile_args = compile_arguments(compile)
        self._bn_params = {
            id(p) for m in self.modules() if isinstance(m, _BN_TYPES) for p in m.parameters(recurse=False)
        }
        # How inputs were framed in training (size, mean, std, ...): saved in checkpoints for prediction;
        # None until a fit with an ImageDataModule saves or a checkpoint with it loads.
        self.inference_config: InferenceConfig | None = None
        # The length of the current fit (epochs, steps, SGDR cycles), set in configure_optimizers.
        self.fit_plan: FitPlan | None = None
        # Warn before a fit with too few optimizer steps to learn (lightcycle.plan); a recipe turns this
        # off for its stages and checks their total once instead.
        self.warn_few_steps = True
        # Optimizer state (Adam's moments and step counts) that the next fit's optimizer starts from, by
        # parameter: a recipe keeps it across its stages as fastai's Learner keeps its optimizer between
        # fits (lightcycle.run.recipe); None = a fresh optimizer.
        self.carried_optimizer_state: dict[Any, dict[str, Any]] | None = None
        # fastai 0.7's `learn.bn_freeze(True)`: every BatchNorm layer keeps its running statistics in
        # training (eval mode), its weights still train; a recipe stage sets it (lightcycle.run.recipe).
        self.bn_freeze = False
        self._precomputed = False
        self._mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None

    # --- checkpoints -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "VisionModule":
        """Load a checkpoint for inference: weights come from the file, never from the hub.

        A truncated, foreign or code-carrying file is refused in one line (LightcycleError); nothing
        in it runs (`weights_only=True`), and a field out of bounds (an image size or class count
        that would allocate gigabytes) is refused before anything is built (`checkpoint_record`)."""
        path = Path(path)
        if not path.is_file():
            raise LightcycleError(f"checkpoint {path} not found")
        checkpoint = read_checkpoint(path)
        hparams = checkpoint.get("hyper_parameters")
        if "state_dict" not in checkpoint or not isinstance(hparams, dict) or not isinstance(hparams.get("task"), dict):
            raise LightcycleError(
                f"checkpoint {path} is not a lightcycle checkpoint: it has no state_dict and hyper_parameters.task "
                "(lightcycle-train and VisionModule write them)"
            )
        check_checkpoint_record(checkpoint, path)  # sizes, class lists, framing: in bounds before anything is built
        return cls.load_from_checkpoint(path, map_location=map_location, pretrained=False, weights_only=True)

    def configure_model(self) -> None:
        """Memory format and compilation, applied once the module is on its device."""
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        if self._compile_args is not None and not getattr(self, "_compiled", False):
            self.backbone.compile(**self._compile_args)
            self.head.compile(**self._compile_args)
            self._compiled = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store how the current datamodule frames images (plain data), so prediction needs no data config."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        self.inference_config = InferenceConfig.of_datamodule(datamodule) or self.inference_config
        if self.inference_config is not None:
            checkpoint[INFERENCE_KEY] = self.inference_config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(INFERENCE_KEY)
        if stored is None:  # saved before INFERENCE_KEY existed: the datamodule's own state has the size
            sizes = [v["size"] for k, v in checkpoint.items() if k.endswith("DataModule") and isinstance(v, dict) and "size" in v]
            self.inference_config = InferenceConfig.from_dict({"size": sizes[0]}) if sizes else None
        else:
            self.inference_config = InferenceConfig.from_dict(stored)

    # --- forward and steps -----------------------------------------------------------------------
    def use_precomputed(self, on: bool) -> None:
        """Inputs are backbone activations (the Precompute callback), not images: forward runs the head only."""
        if on and self.task.backbone_kind != "pooled":
            raise LightcycleError("precomputed activations need a head on pooled features")
        self._precomputed = bool(on)

    @property
    def precomputed(self) -> bool:
        """Whether inputs are cached backbone activations (see `use_precomputed`)."""
        return self._precomputed

    def mix_batches(self, mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """Mix every training batch with `mix(x, y) -> (x, soft y)` before the loss (the MixUp
        callback installs timm's Mixup here); None = off. Only `training_step` mixes, so validation,
        TTA and interpretation see plain images; the LR range test, which runs `training_step`, sweeps
        the mixed loss that training minimises. Cached activations are not images: batches are
        not mixed while `precomputed`."""
        self._mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._precomputed:
            return self.head(x)
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.task.backbone_kind == "features":  # dense outputs come back at the input's resolution
            return self.head(self.backbone(x), size=x.shape[-2:])
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self._mix is not None and not self._precomputed:
            x, y = self._mix(x, y)
        loss = self.task.loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        output = self(x)
        loss = self.task.validation_loss(output, y)
        # Metrics read activated outputs, as they do for TTA and snapshot ensembles (evaluation.py).
        self.val_metrics.update(self.task.activation(output.detach()), y)
        self.val_loss.update(loss.detach(), weight=len(x))
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True, batch_size=len(x))

    def on_validation_epoch_end(self) -> None:
        """Let the task read non-scalar results (per-class IoU, tuned thresholds) into TensorBoard and
        into its own config, which the checkpoint saved after this epoch then carries."""
        if self.trainer.sanity_checking:
            return
        extra = self.task.on_validation_epoch_end(self.val_metrics)
        self.hparams["task"] = self.task.to_config()
        if extra and self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(extra, step=logged_step(self.trainer))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.task.activation(self(x))

    # --- layer groups, freezing, optimizer -------------------------------------------------------
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters split into groups, input side first: timm's backbone groups, then the head."""
        params = dict(self.backbone.named_parameters())
        groups = [[params[n] for n in names] for names in backbone_layer_groups(self.backbone)]
        return groups + [list(self.head.parameters())]

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups before index `n` (negative counts from the end, like fastai).

        BatchNorm parameters of frozen groups stay trainable when `train_bn` (fastai's default):
        re-fitting the normalisation to new data is cheap and helps a frozen backbone a lot.
        """
        groups = self.layer_groups()
        n = n % len(groups) if n < 0 else min(n, len(groups))
        for i, group in enumerate(groups):
            for p in group:
                p.requires_grad_(i >= n or (self.hparams.train_bn and id(p) in self._bn_params))
        self.train(self.training)  # BatchNorm of fully frozen groups: see `train`

    def train(self, mode: bool = True) -> "VisionModule":
        """Training mode, except for BatchNorm layers none of whose parameters train (a frozen group with
        `train_bn` off): they stay in eval mode and keep their statistics, as fastai 0.7 froze layers.
        Then a frozen body computes exactly what precomputed activations cached (lightcycle.precomputed).
        With `bn_freeze` every BatchNorm layer keeps its statistics (its weights still train)."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, _BN_TYPES) and (self.bn_freeze or (
                        m.weight is not None and not any(p.requires_grad for p in m.parameters(recurse=False)))):
                    m.eval()
        return self

    def backbone_frozen(self) -> bool:
        """No backbone parameter trains, BatchNorm kept trainable by `train_bn` aside: its output
        for an image is then fixed, which is what precomputed activations rely on."""
        head = {id(p) for p in self.layer_groups()[-1]}
        return not any(
            p.requires_grad for p in self.parameters() if id(p) not in head and id(p) not in self._bn_params
        )

    def group_lrs(self, lr: float | None = None) -> list[float]:
        """Peak learning rate of every layer group, as fastai's `Optimizer.set_hyper` spreads a slice:
        `lr_spread='geometric'`: from lr/lr_mult (first group) to lr (head), `slice(lr / lr_mult, lr)`;
        `'body'`: lr/lr_mult for every group but the head, `slice(lr)` with lr_mult=10."""
        lr = float(self.hparams.lr if lr is None else lr)
        n = len(self.layer_groups())
        mult = float(self.hparams.lr_mult)
        if n == 1 or mult == 1:
            return [lr] * n
        if self.hparams.get("lr_spread", "geometric") == "body":
            return [lr / mult] * (n - 1) + [lr]
        return [lr / mult ** ((n - 1 - i) / (n - 1)) for i in range(n)]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: each layer group twice, with and without weight decay.

        Created once with every parameter (frozen ones too), so unfreezing later needs no new
        optimizer and the one schedule drives all groups.
        """
        no_decay_names = set(getattr(self.backbone, "no_weight_decay", lambda: set())())
        no_decay_ids = {id(p) for n, p in self.backbone.named_parameters() if n in no_decay_names}
        out = []
        for i, (group, lr) in enumerate(zip(self.layer_groups(), self.group_lrs())):
            decay = [p for p in group if p.ndim > 1 and id(p) not in no_decay_ids]
            plain = [p for p in group if p.ndim <= 1 or id(p) in no_decay_ids]
            for params, wd, kind in ((decay, self.hparams.wd, "decay"), (plain, 0.0, "no_decay")):
                if params:
                    out.append(
                        {"params": params, "lr": lr, "weight_decay": wd, "name": f"group{i}_{kind}", "layer_group": i}
                    )
        return out

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over `param_groups`, stepped per batch by the schedule of this fit's plan; on CUDA
        the fused implementation (one kernel per group instead of several per tensor)."""
        fused = True if all(p.device.type == "cuda" for p in self.parameters()) else None
        optimizer = torch.optim.AdamW(
            self.param_groups(), lr=float(self.hparams.lr), betas=tuple(self.hparams.betas), eps=float(self.hparams.eps),
            fused=fused,
        )
        if self.carried_optimizer_state:
            carry_optimizer_state(optimizer, self.carried_optimizer_state)
        self.fit_plan = plan_fit(self.trainer, self.hparams.schedule)  # once per fit, read by the callbacks
        if self.warn_few_steps:
            warn_few_steps(self.trainer, self.fit_plan.total_steps, self.fit_plan.epochs)
        scheduler = ScheduleLR(optimizer, self.fit_plan.build_schedule())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


def carry_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[Any, dict[str, Any]]) -> int:
    """Give `optimizer`'s parameters the state another optimizer over the same parameters built up
    (fastai's Learner keeps one optimizer across fits); the groups' settings stay `optimizer`'s own.
    Copies: an LR range test's optimizer, made before the fit's own, must not move the moments the fit
    starts from. Returns how many parameters got state."""
    carried = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p in state:
                optimizer.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state[p].items()}
                carried += 1
    return carried
