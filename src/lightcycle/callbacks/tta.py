"""Test-time augmentation: predict on the original plus n augmented views and merge (fastai `tta`).

Two kinds of views, chosen per task (`views="auto"`):
- `augment` (image-level tasks: classification, multi-label): the DataModule's *training* transform
  (random flips, zoom, rotate, lighting) applied to the validation images, as fastai does. Each
  (view, image) pair gets its own seed, so the views are identical on every run, for any number of
  workers and on every DDP rank.
- `flip_scale` (tasks whose outputs move with the image, `Task.outputs_move_with_image`: masks,
  points): deterministic, invertible views on the input tensor (horizontal flip, upscaling by 1.25,
  1.5, ...). A view's output is mapped back with `task.unflip(output)` (flip) and, for dense
  `[B, C, H, W]` outputs, resized back to the plain view's grid, so any task that implements
  `unflip` works.

Views are merged on activated outputs (probabilities, coordinates) with `merge_views`:
`beta` = fastai's `torch.lerp(mean(augmented), plain, beta)`, `mean` over all n+1 views, or `max`.

Streaming: for every batch all views are computed, merged and handed on (to `score_batches` or the
caller) before the next batch is read; memory never holds more than one batch of n+1 views.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightcycle.data.base import batch_transform_of, eval_sampler, one_thread_per_worker
from lightcycle.errors import LightcycleError
from lightcycle.evaluation import score_batches
from lightcycle.loggers import logged_step
from lightcycle.tasks import Task

log = logging.getLogger("lightcycle")

MERGES: tuple[str, ...] = ("beta", "mean", "max")
VIEW_KINDS: tuple[str, ...] = ("auto", "augment", "flip_scale")


def check_tta_args(n: int, beta: float, merge: str, views: str = "auto") -> None:
    """Fail early, naming the setting, on values that would only break at the end of training."""
    if isinstance(n, bool) or int(n) != n or int(n) < 0:
        raise LightcycleError(f"tta.n must be a whole number >= 0 (0 = off), got {n!r}")
    if merge not in MERGES:
        raise LightcycleError(f"tta.merge must be one of {', '.join(MERGES)}, got {merge!r}")
    if not 0.0 <= float(beta) <= 1.0:
        raise LightcycleError(f"tta.beta must be between 0 and 1, got {beta}")
    if views not in VIEW_KINDS:
        raise LightcycleError(f"tta.views must be one of {', '.join(VIEW_KINDS)}, got {views!r}")


def merge_views(plain: torch.Tensor, augmented: Sequence[torch.Tensor], merge: str = "beta", beta: float = 0.25) -> torch.Tensor:
    """Combine the plain view's activated output with those of the augmented views.

    `beta`: (1 - beta) * mean(augmented) + beta * plain (fastai's lerp); `mean`: mean of all views;
    `max`: elementwise max of all views. With no augmented views the plain output is returned.
    """
    if not len(augmented):
        return plain
    if merge == "beta":
        return torch.lerp(torch.stack(list(augmented)).mean(0), plain, float(beta))
    stacked = torch.stack([plain, *augmented])
    if merge == "mean":
        return stacked.mean(0)
    if merge == "max":
        return stacked.amax(0)
    raise LightcycleError(f"tta.merge must be one of {', '.join(MERGES)}, got {merge!r}")


# --- deterministic, invertible tensor views ---------------------------------------------------------
@dataclass(frozen=True)
class FlipScaleView:
    """Horizontal flip and/or upscaling of a normalised batch, with the inverse for its output."""

    flip: bool = False
    scale: float = 1.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return x.flip(-1) if self.flip else x

    def undo(self, output: torch.Tensor, task: Task, like: torch.Tensor) -> torch.Tensor:
        """Map a raw output of this view back to the frame of `like` (the plain view's raw output)."""
        if self.flip:
            output = task.unflip(output)
        if output.ndim == 4 and output.shape[-2:] != like.shape[-2:]:
            output = F.interpolate(output, size=like.shape[-2:], mode="bilinear", align_corners=False)
        return output


def flip_scale_views(n: int) -> list[FlipScaleView]:
    """n views in a fixed order: flip, x1.25, flip x1.25, x1.5, flip x1.5, ..."""
    views: list[FlipScaleView] = []
    k = 0
    while len(views) < n:
        scale = 1.0 + 0.25 * k
        views += [FlipScaleView(flip=False, scale=scale)] if k else []
        views += [FlipScaleView(flip=True, scale=scale)]
        k += 1
    return views[:n]


# --- seeded training-transform views ------------------------------------------------------------------
def view_seed(seed: int, view: int, index: int) -> int:
    """Seed of augmented view `view` of item `index`: independent of worker order, rank and run."""
    return int(np.random.SeedSequence([seed, view, index]).generate_state(1)[0])


class AugmentedViews(Dataset):
    """Item i = (stack of the plain view and n augmented views of image i, its target).

    One dataset (not n+1 loaders) so the views share the DataModule's workers and stay aligned.
    Every (seed, view, index) triple seeds the transform, so views do not depend on worker order.
    """

    def __init__(self, datamodule: Any, samples: Sequence[Any], n: int, seed: int = 0) -> None:
        self.plain = datamodule.dataset(samples, train=False)
        self.augmented = datamodule.dataset(samples, train=True)
        self.n = int(n)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.plain)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        one_thread_per_worker()
        sample = self.plain.samples[index]
        image = self.plain.image(index)  # decoded once for all views
        x, target = self.plain.encode(image, sample, self.plain.transform)
        views = [x]
        transform = self.augmented.transform
        for view in range(self.n):
            transform.set_random_seed(view_seed(self.seed, view, index))
            views.append(self.augmented.encode(image, sample, transform)[0])
        return torch.stack(views), target


def augmented_view_loader(datamodule: Any, n: int, seed: int = 0, samples: Sequence[Any] | None = None) -> DataLoader:
    """Batches of shape [B, n+1, C, H, W] over `samples` (default: the validation set), in order."""
    samples = datamodule.valid_samples if samples is None else samples
    dataset = AugmentedViews(datamodule, samples, n, seed)
    return DataLoader(
        dataset,
        batch_size=datamodule.batch_size,
        shuffle=False,
        sampler=eval_sampler(dataset),  # under DDP: each rank its shard, no sample twice
        num_workers=datamodule.num_workers,
        pin_memory=getattr(datamodule, "pin_memory", False),
    )


# --- running the views ------------------------------------------------------------------------------------
def _split(batch: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def tta_batches(
    model: nn.Module,
    task: Task,
    batches: Iterable[Any],
    n: int,
    merge: str = "beta",
    beta: float = 0.25,
    stacked: bool = False,
    context: Callable[[], ContextManager[Any]] | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, Any]]:
    """Yield (merged activated output, target) per batch; the caller decides what to keep.

    `stacked=False`: batches hold plain images [B, C, H, W] and the n views are `flip_scale_views(n)`.
    `stacked=True`: batches hold pre-made views [B, V, C, H, W] (view 0 plain, e.g. `augmented_view_loader`).
    `context`: a factory of a context manager around each forward (the Trainer's autocast).
    `prepare`: turns a batch on the device into model inputs (the DataModule's `batch_transform`:
    uint8 pixels normalised); views are made from its output.
    """
    tensor_views = [] if stacked else flip_scale_views(n)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            x, target = _split(batch)
            x = x.to(device, non_blocking=True)
            if prepare is not None:
                x = prepare(x)
            with torch.inference_mode(), (context or contextlib.nullcontext)():
                if stacked:
                    plain_raw = model(x[:, 0])
                    raws = [model(x[:, v]) for v in range(1, x.shape[1])]
                else:
                    plain_raw = model(x)
                    raws = [view.undo(model(view.apply(x)), task, plain_raw) for view in tensor_views]
                plain = task.activation(plain_raw.float())
                augmented = [task.activation(r.float()) for r in raws]
                merged = merge_views(plain, augmented, merge, beta)
            yield merged, target
    finally:
        model.train(was_training)


def resolve_views(task: Task, views: str, datamodule: Any = None) -> str:
    """`auto`: training-transform views for image-level tasks, flip/scale for outputs that move with the image."""
    if views == "auto":
        views = "flip_scale" if task.outputs_move_with_image else "augment"
        if views == "augment" and not hasattr(datamodule, "dataset"):
            views = "flip_scale"  # no DataModule to draw training transforms from
    if views == "augment" and not (hasattr(datamodule, "dataset") and hasattr(datamodule, "valid_samples")):
        raise LightcycleError("tta.views=augment needs an ImageDataModule (its training transform makes the views)")
    return views


def evaluate_tta(
    model: nn.Module,
    task: Task,
    datamodule: Any,
    n: int = 4,
    merge: str = "beta",
    beta: float = 0.25,
    views: str = "auto",
    seed: int = 0,
    context: Callable[[], ContextManager[Any]] | None = None,
    prefix: str = "tta",
) -> dict[str, float]:
    """TTA loss and metrics (`tta_loss`, `tta_<metric>`) on the DataModule's validation set.

    Under DDP every rank scores its shard of the validation set (no padding) and the results are
    reduced across ranks, so every image counts once and the numbers equal the single-process ones.
    """
    check_tta_args(n, beta, merge, views)
    kind = resolve_views(task, views, datamodule)
    if kind == "augment":
        loader: Iterable[Any] = augmented_view_loader(datamodule, n, seed)
    else:
        loader = datamodule.val_dataloader()
    merged = tta_batches(model, task, loader, n, merge, beta, stacked=kind == "augment", context=context,
                         prepare=batch_transform_of(datamodule))
    return score_batches(task, merged, prefix)


def predict_tta(
    model: nn.Module,
    task: Task,
    loader: Iterable[Any],
    n: int = 4,
    merge: str = "beta",
    beta: float = 0.25,
    stacked: bool = False,
    context: Callable[[], ContextManager[Any]] | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Merged activated outputs for every sample of `loader`, in order, on the CPU.

    Pass `augmented_view_loader(datamodule, n, samples=...)` with `stacked=True` for training-transform
    views, or a plain loader for flip/scale views (masks and points); `prepare=datamodule.batch_transform`
    when the DataModule leaves normalisation to the device.
    """
    check_tta_args(n, beta, merge)
    batches = tta_batches(model, task, loader, n, merge, beta, stacked, context, prepare)
    outputs = [merged.cpu() for merged, _ in batches]
    if not outputs:
        raise LightcycleError("predict with TTA: the loader yielded no images")
    return torch.cat(outputs)


class TTA(L.Callback):
    """After training, score the validation set with TTA; results in `final_metrics` (`tta_*`).

    Args:
        n: augmented views besides the original (0 = off).
        beta: weight of the plain view in the `beta` merge (fastai's default 0.25).
        merge: `beta` | `mean` | `max`.
        views: `auto` | `augment` | `flip_scale` (see the module docstring).
        seed: seeds the augmented views, so TTA metrics are deterministic (42: lightcycle-train's `seed`).
    """

    def __init__(self, n: int = 4, beta: float = 0.25, merge: str = "beta", views: str = "auto", seed: int = 42) -> None:
        check_tta_args(n, beta, merge, views)
        self.n, self.beta, self.merge, self.views, self.seed = int(n), float(beta), merge, views, int(seed)
        self.final_metrics: dict[str, float] = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.n == 0 or trainer.interrupted:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise LightcycleError("TTA needs the Trainer to be fitted with a datamodule")
        task = getattr(pl_module, "task", None)
        if task is None:
            raise LightcycleError("TTA needs a module with a `task` (like VisionModule)")
        context = getattr(trainer.precision_plugin, "forward_context", None)  # autocast under mixed precision
        self.final_metrics = evaluate_tta(
            pl_module, task, datamodule, self.n, self.merge, self.beta, self.views, self.seed, context
        )
        if trainer.is_global_zero:
            log.info("TTA (n=%d, %s merge): %s", self.n, self.merge, {k: round(v, 4) for k, v in self.final_metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(self.final_metrics, step=logged_step(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {}
