"""Predict with a trained checkpoint: fastai's `learn.predict`, batched, with TTA and snapshot ensembles.

    from lightcycle import Predictor
    p = Predictor.from_checkpoint("outputs/demo/checkpoints/last.ckpt")
    label, index, probs = p.predict("cat.jpg")
    predictions = p.predict_files(paths)            # batched, in the order of `paths`
    cam = p.heatmap("cat.jpg")                      # where it looks: [H, W] in [0, 1] (Grad-CAM)

Everything inference needs comes from the checkpoint: the task (class names, tuned multi-label
thresholds, points' ranges), the eval image size, the framing (`data.resize`: crop, pad or squish;
a checkpoint saved before framing was recorded means squish) and the backbone's normalization.
Images are framed exactly like validation images (`eval_transform`), cross the DataLoader as uint8 and
are normalised on the prediction device (`normalize_batch`); outputs that move with the image come
back through the eval input's `Window` (points exactly, masks onto the original pixels); TTA reuses
`lightcycle.tta` (seeded
training-transform views for image-level tasks, de-augmented flips and scales for outputs that move
with the image); `ensemble=True` averages the activated outputs of the `snapshot-cycle*.ckpt` files
beside the checkpoint. What one image's answer is (a class, tags, a mask at the original size,
points in original pixels) is the task's `prediction`.

Prediction runs in one process, in input order, so the same inputs always give the same file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lightcycle.checkpoint_record import MAX_INPUT_SIZE, MIN_INPUT_SIZE
from lightcycle.data.base import one_thread_per_worker
from lightcycle.data.checks import _to_rgb, load_image
from lightcycle.data.framing import Framing
from lightcycle.data.loaders import ordered_loader
from lightcycle.data.transforms import eval_transform, normalize_batch, train_transform
from lightcycle.ensemble import find_snapshots
from lightcycle.errors import LightcycleError
from lightcycle.inference_config import InferenceConfig
from lightcycle.interpretation import heatmaps
from lightcycle.module import VisionModule
from lightcycle.predict.per_task import task_predictions
from lightcycle.tasks import Task
from lightcycle.tta import check_tta_args, tta_batches, view_seed

log = logging.getLogger("lightcycle")

DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")


@dataclass
class Prediction:
    """One image's prediction; unpacks like fastai's `learn.predict`: `label, index, probs = p`.

    - classification: `label` class name, `index` class index, `probs` [C] probabilities (sum 1);
    - multilabel: `label` list of tags over their thresholds, `index` [C] bool decisions, `probs` [C];
    - segmentation: `label` and `index` the [H, W] mask of code indices at the original image size,
      `probs` [C, h, w] probabilities at the model's input size;
    - points: `label` and `index` [K, 2] (x, y) in pixels of the original image, `probs` the model's
      [K, 2] coordinates in [-1, 1].
    """

    label: Any
    index: Any
    probs: torch.Tensor
    file: str | None = None
    size: tuple[int, int] = (0, 0)  # original (width, height)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.label, self.index, self.probs))


def resolve_device(device: str) -> torch.device:
    """`cpu`, `cuda` (fails clearly without a GPU), `auto` (the GPU when there is one), or `cuda:1`."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LightcycleError(f"device={device}: no CUDA GPU is available (use device=cpu or device=auto)")
    if not (device == "cpu" or device.startswith("cuda")):
        raise LightcycleError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    return torch.device(device)


# --- the dataset ---------------------------------------------------------------------------------------
class PredictDataset(Dataset):
    """Item i = (eval-framed image [C, H, W], or [1 + n, C, H, W] with n seeded augmented views;
    the original (width, height))."""

    def __init__(self, items: Sequence[Any], transform: Any, augment: Any = None, n: int = 0, seed: int = 0) -> None:
        self.items = list(items)
        self.transform, self.augment, self.n, self.seed = transform, augment, int(n), int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        one_thread_per_worker()
        image = as_image(self.items[index])
        height, width = image.shape[:2]
        x = self.transform(image=image)["image"]
        if self.augment is not None:
            views = [x]
            for view in range(self.n):
                self.augment.set_random_seed(view_seed(self.seed, view, index))
                views.append(self.augment(image=image)["image"])
            x = torch.stack(views)
        return x, torch.tensor([width, height])


def as_image(item: Any) -> np.ndarray:
    """A path, PIL image or HxWx3 uint8 array -> HxWx3 uint8 RGB array."""
    if isinstance(item, (str, os.PathLike)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return np.asarray(_to_rgb(item))
    if isinstance(item, np.ndarray):
        if item.ndim == 2:
            item = np.stack([item] * 3, -1)
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise LightcycleError(f"expected an HxWx3 uint8 image array, got shape {item.shape} {item.dtype}")
        return item
    raise LightcycleError(f"cannot predict on a {type(item).__name__}: pass a file path, a PIL image or a uint8 array")


# --- the predictor ------------------------------------------------------------------------------------
class Predictor:
    """Batched inference from one checkpoint (or its snapshot ensemble), with optional TTA.

    Args:
        models: VisionModules sharing one task (several = an ensemble: their activated outputs are averaged).
        size: eval image size (default: the one recorded in the checkpoint).
        resize: `crop` | `pad` | `squish` instead of the checkpoint's framing (a segmentation model
            trained with crop predicts whole pictures with `pad` or `squish`); None = the checkpoint's.
        tta: augmented views besides the original (0 = off; `True` = 4); `tta_beta`, `tta_merge`,
            `tta_views` (`auto` | `augment` | `flip_scale`) and `tta_seed` as in training's TTA.
        batch_size, num_workers: the DataLoader's.
        device: `cpu` (default), `cuda`, `auto`.
        engine: runs in place of the model's forward pass (normalised batch -> logits), e.g. an
            `OnnxEngine`; one model without TTA only (its views and ensembles run in torch).
    """

    def __init__(
        self,
        models: Sequence[Any],
        *,
        size: int | None = None,
        resize: str | None = None,
        tta: int | bool = 0,
        tta_beta: float = 0.25,
        tta_merge: str = "beta",
        tta_views: str = "auto",
        tta_seed: int = 42,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str = "cpu",
        source: str = "the model",
        engine: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not models:
            raise LightcycleError("Predictor needs at least one model")
        n = (4 if tta else 0) if isinstance(tta, bool) else tta
        check_tta_args(n, tta_beta, tta_merge, tta_views)
        if int(batch_size) < 1:
            raise LightcycleError(f"batch_size must be at least 1, got {batch_size}")
        if int(num_workers) < 0:
            raise LightcycleError(f"num_workers must be >= 0, got {num_workers}")
        self.device = resolve_device(device)
        self.models = [m.to(self.device).eval() for m in models]
        self.task: Task = self.models[0].task
        signature = (self.task.name, self.task.output_signature())
        for m in self.models[1:]:
            if (m.task.name, m.task.output_signature()) != signature:
                raise LightcycleError(f"{source}: the ensemble's models predict different tasks or classes")
        config: InferenceConfig = getattr(self.models[0], "inference_config", None) or InferenceConfig()
        input_size = int(size or config.size or 0)
        if input_size < 8 and not size:
            raise LightcycleError(
                f"{source} does not record the image size it was trained at (saved by an older lightcycle); pass size=N"
            )
        if not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE:
            raise LightcycleError(f"size={size}: the model input must be {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} pixels a side")
        self.normalization = config.normalization(self.models[0].hparams.get("backbone"))
        framing = config.framing
        if resize is not None and resize != framing.resize:
            framing = Framing(str(resize), framing.pad_mode, framing.min_scale)
            log.info("framing images with resize=%s instead of the checkpoint's %s", framing.resize, config.framing.resize)
        self.task.check_framing(framing, source)
        # How this predictor frames its inputs: the checkpoint's record with the size and framing asked for.
        self.inference = config.replace(size=input_size, framing=framing, mean=self.normalization.mean, std=self.normalization.std)
        self.n, self.beta, self.merge, self.seed = int(n), float(tta_beta), tta_merge, int(tta_seed)
        spatial = self.task.outputs_move_with_image
        self.views = ("flip_scale" if spatial else "augment") if tta_views == "auto" else tta_views
        if self.views == "augment" and spatial:
            raise LightcycleError(f"tta.views=augment cannot be undone for {self.task.name} outputs; use flip_scale")
        if spatial and self.normalization.crop_pct < 1.0:
            raise LightcycleError(f"{source}: a centre crop (crop_pct<1) cannot be mapped back to {self.task.name} outputs")
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        if engine is not None and (self.n or len(self.models) > 1):
            raise LightcycleError(f"{source}: an exported model serves one model without TTA (tta.n=0, no ensemble)")
        self.engine = engine

    @property
    def size(self) -> int:
        """The model input's side in pixels."""
        return int(self.inference.size or 0)

    @property
    def framing(self) -> Framing:
        """How a picture becomes the square input (crop, pad or squish)."""
        return self.inference.framing

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, ensemble: bool = False, **kwargs: Any
    ) -> "Predictor":
        """Load `path`; `ensemble=True` predicts with the `snapshot-cycle*.ckpt` files beside it instead
        (the checkpoint still supplies the image size and, for multi-label, the tuned thresholds)."""
        path = Path(path).expanduser()
        main = VisionModule.load(path)
        models = [main]
        if ensemble:
            snapshots = find_snapshots(path.parent)
            if not snapshots:
                raise LightcycleError(
                    f"ensemble=true: no snapshot-cycle*.ckpt beside {path} (train with schedule=sgdr snapshots.keep=M)"
                )
            models = [VisionModule.load(p) for p in snapshots]
            for m in models:  # decode with the main checkpoint's framing and tuned thresholds
                m.task = main.task
                m.inference_config = m.inference_config or main.inference_config
            models[0].inference_config = main.inference_config
            log.info("ensemble of %d snapshots: %s", len(models), ", ".join(p.name for p in snapshots))
        return cls(models, source=str(path), **kwargs)

    # --- public API --------------------------------------------------------------------------------
    def predict(self, item: Any) -> Prediction:
        """One image (path, PIL image or HxWx3 uint8 array) -> Prediction (`label, index, probs = ...`)."""
        return next(self.iter_predictions([item], num_workers=0))

    def predict_files(self, paths: Sequence[Any]) -> list[Prediction]:
        """Predictions for every item of `paths`, batched, in order."""
        return list(self.iter_predictions(paths))

    def iter_predictions(self, items: Sequence[Any], num_workers: int | None = None) -> Iterator[Prediction]:
        """Stream predictions batch by batch, in the order of `items` (memory: one batch)."""
        stacked = self.views == "augment" and self.n > 0
        norm, framing = self.normalization, self.framing
        augment = (
            train_transform(self.size, norm, self.inference.augment, self.inference.max_zoom, framing=framing, uint8=True) if stacked else None
        )
        dataset = PredictDataset(items, eval_transform(self.size, norm, framing=framing, uint8=True), augment, self.n, self.seed)
        workers = self.num_workers if num_workers is None else num_workers
        loader = ordered_loader(dataset, self.batch_size, workers, pin_memory=self.device.type == "cuda")
        position = 0
        for x, sizes in loader:
            merged = self.forward(x, stacked)
            for out, (width, height) in zip(merged, sizes.tolist()):
                item = items[position]
                position += 1
                file = str(item) if isinstance(item, (str, os.PathLike)) else None
                yield self.decode(out, (int(width), int(height)), file)

    def heatmap(self, item: Any, index: int | None = None) -> np.ndarray:
        """Where the model looks for one image: Grad-CAM of output `index` (default: the predicted
        class or most probable tag) as an [H, W] float array in [0, 1] at the image's original size,
        averaged over an ensemble's models. Image-level tasks only (segmentation, points refuse).

        The map explains the input `predict` sees (the same framing) and lies over the picture where
        that input came from: 0 over parts a centre crop cut off."""
        image = as_image(item)
        height, width = image.shape[:2]
        x = eval_transform(self.size, self.normalization, framing=self.framing, uint8=True)(image=image)["image"][None]
        x = normalize_batch(x, self.normalization)  # the pixels as `forward` normalises them
        cams = torch.stack([heatmaps.grad_cam(model, x, index)[0] for model in self.models]).mean(0)
        cam = heatmaps.to_original_frame(cams, (width, height), self.normalization.crop_pct, self.framing.window(width, height))
        return cam.clamp(0, 1).numpy()

    def forward(self, x: torch.Tensor, stacked: bool = False) -> torch.Tensor:
        """Activated outputs for one batch (uint8 pixels or normalised floats): TTA-merged per model,
        averaged over the ensemble, on the CPU."""
        x = normalize_batch(x.to(self.device, non_blocking=True), self.normalization)
        if self.engine is not None:
            return self.task.activation(self.engine(x).float()).cpu()
        total: torch.Tensor | None = None
        for model in self.models:
            for merged, _ in tta_batches(model, self.task, [x], self.n, self.merge, self.beta, stacked=stacked):
                total = merged.float() if total is None else total + merged.float()
        assert total is not None
        return (total / len(self.models)).cpu()

    def decode(self, out: torch.Tensor, size: tuple[int, int], file: str | None = None) -> Prediction:
        """One activated output -> Prediction in the original image's frame (the task says what that is)."""
        label, index = task_predictions(self.task).prediction(out, size, self.size, self.framing.window(*size))
        return Prediction(label, index, out, file, size)
