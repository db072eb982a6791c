"""Images from arrays (fastai 0.7's `ImageClassifierData.from_arrays`), for every task.

    from lightcycle.data import ArrayDataModule
    dm = ArrayDataModule(x_train, y_train, x_valid, y_valid, classes=["cat", "dog"], size=32)
    lightcycle-train data=arrays data.path=cifar.npz                  # keys x_train, y_train, x_valid, y_valid, classes

Images: N x H x W x C uint8 (C = 1 or 3) or N x C x H x W floats in [0, 1], numpy or torch. What y
is says the task (`task=auto`, the default; or name it):

| task | y | classes |
|---|---|---|
| classification | N class indices (integers) | class names (default "0", "1", ... up to the largest index) |
| multilabel | N x C multi-hot rows (0/1) | the C tag names (default "0".."C-1") |
| segmentation | N x H x W masks of code indices, the size of their images | the codes (default "0".."max") |
| points | N x K x 2 (x, y) pixel coordinates inside their images | the K point names (default p0..) |

Without x_valid/y_valid, `valid_pct` of the training arrays (seeded) validate. A sample's name is
where it came from, `x_train[17]` or `x_valid[3]`: interpretation's tables list it, and precompute's
cache is keyed by a hash of the arrays. Everything after loading is the task's own DataModule
behaviour (its encode, its Task, the same transforms), so TTA, precompute, interpretation,
prediction and export work as for files. An .npz is read with `allow_pickle=False`: nothing in it runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import albumentations as A
import numpy as np
import torch

from lightcycle.data.array_checks import (
    ARRAY_TASKS,
    as_images,
    as_numpy,
    check_labels,
    check_range,
    default_names,
    infer_task,
    load_npz,
    max_label,
    names_from,
)
from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.classification import _ClassificationBase
from lightcycle.data.framing import CLASSIFICATION_FRAMING, Framing
from lightcycle.data.multilabel import MultiLabelDataModule
from lightcycle.data.points import OutOfFrameReport, PointsDataModule, PointsTarget
from lightcycle.data.segmentation import encode_with_mask, resolve_void
from lightcycle.data.splits import split_by_pct
from lightcycle.data.transforms import eval_transform, train_transform
from lightcycle.errors import LightcycleError
from lightcycle.tasks import (
    ClassificationTask,
    MultiLabelTask,
    PointsTask,
    SegmentationTask,
)

log = logging.getLogger(__name__)


class ArrayImages:
    """A sample's picture from the arrays, by its name (`x_train[17]`): what the datasets `load`."""

    def __init__(self, images: dict[str, np.ndarray]) -> None:
        self.images = images

    def __call__(self, sample: Sample) -> np.ndarray:
        key, index = sample.path.name[:-1].split("[")
        return self.images[key][int(index)]


def _encode_mask(image: np.ndarray, sample: Sample, transform: A.Compose) -> tuple[torch.Tensor, torch.Tensor]:
    return encode_with_mask(image, sample.target, transform)


def _counted(labels: dict[str, np.ndarray], given: list[str] | None, what: str, noun: str) -> list[str]:
    """Names of integer labels: `given` (every label must index it) or "0".."max"; at least 2."""
    for key, y in labels.items():
        check_range(key, y, given, what)
    names = given if given is not None else default_names(max_label(list(labels.values())) + 1)
    if len(names) < 2:
        raise LightcycleError(f"y_train: needs at least 2 {noun}, found {names}")
    return names


def _columns(labels: dict[str, np.ndarray], given: list[str] | None, what: str, default: list[str]) -> list[str]:
    """Names of the C columns of multi-hot rows or the K points: `given` (one per column) or `default`."""
    count = len(default)
    for key, y in labels.items():
        if y.shape[1] != count:
            raise LightcycleError(f"{key}: has {y.shape[1]} {what} but y_train has {count}")
    if given is not None and len(given) != count:
        raise LightcycleError(f"classes: has {len(given)} names for {count} {what}")
    return given or default


class _Kind:
    """What one task's labels are: their names, one sample's target, the encode function, the Task,
    and the framing of the task's own DataModule (data/framing.py)."""

    encode: Callable[..., Any]
    framing: dict[str, Any] = Framing().to_config()

    def names(self, labels: dict[str, np.ndarray], given: list[str] | None) -> list[str]:
        raise NotImplementedError

    def target(self, y: np.ndarray, size: tuple[int, int], dm: "ArrayDataModule") -> Any:
        raise NotImplementedError

    def task(self, dm: "ArrayDataModule") -> Any:
        raise NotImplementedError


class _Classes(_Kind):
    encode = staticmethod(_ClassificationBase.encode)
    framing = CLASSIFICATION_FRAMING.to_config()

    def names(self, labels: dict[str, np.ndarray], given: list[str] | None) -> list[str]:
        return _counted(labels, given, "class indices", "classes")

    def target(self, y: np.ndarray, size: tuple[int, int], dm: "ArrayDataModule") -> Any:
        return int(y)

    def task(self, dm: "ArrayDataModule") -> Any:
        return ClassificationTask(class_names=list(dm.names))


class _Tags(_Kind):
    encode = staticmethod(MultiLabelDataModule.encode)

    def names(self, labels: dict[str, np.ndarray], given: list[str] | None) -> list[str]:
        return _columns(labels, given, "tags", default_names(labels["y_train"].shape[1]))

    def target(self, y: np.ndarray, size: tuple[int, int], dm: "ArrayDataModule") -> Any:
        return tuple(float(v) for v in y)

    def task(self, dm: "ArrayDataModule") -> Any:
        if not 0.0 < dm.thresh < 1.0:
            raise LightcycleError(f"data.thresh must be between 0 and 1, got {dm.thresh}")
        if dm.beta <= 0:
            raise LightcycleError(f"data.beta must be positive, got {dm.beta}")
        return MultiLabelTask(class_names=list(dm.names), thresh=dm.thresh, beta=dm.beta)


class _Masks(_Kind):
    encode = staticmethod(_encode_mask)

    def names(self, labels: dict[str, np.ndarray], given: list[str] | None) -> list[str]:
        return _counted(labels, given, "mask codes", "codes")

    def target(self, y: np.ndarray, size: tuple[int, int], dm: "ArrayDataModule") -> Any:
        return y

    def task(self, dm: "ArrayDataModule") -> Any:
        return SegmentationTask(class_names=list(dm.names), void_index=dm.void_index, loss=dm.loss)


class _Points(_Kind):
    encode = staticmethod(PointsDataModule.encode)

    def names(self, labels: dict[str, np.ndarray], given: list[str] | None) -> list[str]:
        return _columns(labels, given, "points", [f"p{i}" for i in range(labels["y_train"].shape[1])])

    def target(self, y: np.ndarray, size: tuple[int, int], dm: "ArrayDataModule") -> Any:
        return PointsTarget(tuple((float(px), float(py)) for px, py in y), size, dm.flip_pairs)

    def task(self, dm: "ArrayDataModule") -> Any:
        return PointsTask(
            len(dm.names), y_range=dm.y_range, flip_pairs=[list(p) for p in dm.flip_pairs],
            point_names=list(dm.names), head=dm.head,
        )


KINDS: dict[str, _Kind] = {"classification": _Classes(), "multilabel": _Tags(), "segmentation": _Masks(), "points": _Points()}


def _digest(*arrays: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        if a is not None:
            digest.update(f"{a.dtype}{a.shape}".encode())
            digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()[:24]


class ArrayDataModule(OutOfFrameReport, ImageDataModule):
    """Train on arrays instead of files: classification, multi-label, segmentation or points.

    Args:
        x_train, y_train, x_valid, y_valid: images and labels (see the module docstring); the
            validation pair is optional (then `valid_pct` splits the training arrays with `seed`).
        classes: class names, tag names, codes or point names (default: numbered).
        path: an .npz with those keys instead (`data.path`); read without pickle.
        task: `auto` (from y_train's shape) | classification | multilabel | segmentation | points.
        void_code, loss: segmentation's (a code name or index ignored by loss and metrics; ce | dice | ce_dice).
        thresh, beta: multi-label's metric threshold and F-beta.
        flip_pairs, y_range, head: points' (see PointsDataModule).
        resize, pad_mode, min_scale: the framing; None = the task's own DataModule's default
            (FolderDataModule's for classification, ...).
        max_bytes: the most memory the .npz's arrays may take together (None = 4 GiB, and a
            compressed array may not inflate over 200x its size: a zip bomb); checked from the
            arrays' headers before any is loaded.
        Every other setting is ImageDataModule's (size, batch_size, augment, ...).
    """

    task_name = "arrays"

    def __init__(
        self,
        x_train: Any = None,
        y_train: Any = None,
        x_valid: Any = None,
        y_valid: Any = None,
        classes: Any = None,
        *,
        path: str | os.PathLike | None = None,
        task: str = "auto",
        void_code: str | int | None = None,
        loss: str = "ce",
        thresh: float = 0.5,
        beta: float = 2.0,
        flip_pairs: list[list[int]] | None = None,
        y_range: list[float] | None = None,
        head: str = "pooled",
        root: str | os.PathLike | None = None,
        resize: str | None = None,
        pad_mode: str | None = None,
        min_scale: float | None = None,
        max_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        source = path if path is not None else root
        if source is not None:
            if x_train is not None:
                raise LightcycleError("ArrayDataModule: pass arrays or data.path (an .npz), not both")
            arrays = load_npz(source, max_bytes)
            x_train, y_train = arrays["x_train"], arrays["y_train"]
            x_valid, y_valid = arrays.get("x_valid"), arrays.get("y_valid")
            classes = arrays.get("classes") if classes is None else classes
        elif x_train is None or y_train is None:
            raise LightcycleError(
                "data.path is not set: point it at an .npz with x_train, y_train[, x_valid, y_valid, classes] "
                "(or pass x_train and y_train to ArrayDataModule)"
            )
        if (x_valid is None) != (y_valid is None):
            raise LightcycleError("ArrayDataModule: give x_valid and y_valid together, or neither (valid_pct splits)")
        images = {"x_train": as_images("x_train", x_train)}
        if x_valid is not None:
            images["x_valid"] = as_images("x_valid", x_valid)
        y_raw = {"y_train": as_numpy("y_train", y_train), **({"y_valid": y_valid} if y_valid is not None else {})}
        if task == "auto":
            task = infer_task(y_raw["y_train"], images["x_train"])
            log.info("data.task=auto: %s (from y_train's shape %s)", task, y_raw["y_train"].shape)
        if task not in ARRAY_TASKS:
            raise LightcycleError(f"data.task must be one of auto, {', '.join(ARRAY_TASKS)}, got {task!r}")
        framing = {**KINDS[task].framing, **{k: v for k, v in
                   (("resize", resize), ("pad_mode", pad_mode), ("min_scale", min_scale)) if v is not None}}
        kwargs.setdefault("check_images", False)  # nothing to decode: the arrays are checked below
        super().__init__(root=Path(source).expanduser() if source is not None else Path("arrays"), **framing, **kwargs)
        self.task_name = task
        self.uses_keypoints = task == "points"
        self.labels = {k: check_labels(task, k, y, images["x" + k[1:]]) for k, y in y_raw.items()}
        self.images = images
        self.kind = KINDS[task]
        self.names = self.kind.names(self.labels, names_from(classes))
        self.void_index = resolve_void(void_code, self.names, Path("classes")) if task == "segmentation" else None
        self.loss, self.thresh, self.beta, self.y_range, self.head = loss, float(thresh), float(beta), y_range, head
        self.flip_pairs = tuple(tuple(int(i) for i in pair) for pair in (flip_pairs or []))
        self.make_task()  # bad task options (loss, head, flip pairs, thresh) fail now
        self._out_of_frame, self._epoch = [0, 0], -1

    def _samples(self, split: str) -> list[Sample]:
        y, images = self.labels[f"y_{split}"], self.images[f"x_{split}"]
        size = (images.shape[2], images.shape[1])
        return [Sample(Path(f"x_{split}[{i}]"), self.kind.target(y[i], size, self)) for i in range(len(y))]

    # --- ImageDataModule hooks -------------------------------------------------------------------
    def resolve_root(self) -> Path:
        assert self.root is not None
        return self.root

    def collect(self, root: Path) -> tuple[list[Sample], list[Sample], list[tuple[Path, str]]]:
        train = self._samples("train")
        valid = self._samples("valid") if "y_valid" in self.labels else None
        if valid is None:
            train, valid = split_by_pct(train, self.valid_pct, self.seed)
        return train, valid, []

    def load_sample(self) -> ArrayImages:
        return ArrayImages(self.images)

    @property
    def encode(self) -> Callable[..., Any]:  # type: ignore[override]
        return self.kind.encode

    def enlarge_to(self) -> int:
        """Pictures smaller than the input size are enlarged smoothly to it before framing, as if saved
        as files of that size: framed at 8 px, training's crops and validation's resize would show an
        8x8 picture two different ways (framing.EnlargeSmall)."""
        height, width = self.images["x_train"].shape[1:3]
        return int(self.size) if min(height, width) < int(self.size) else 0

    def train_transform(self) -> A.Compose:
        return train_transform(
            self.size, self.normalization, self.augment, self.max_zoom, keypoints=self.uses_keypoints,
            framing=self.framing, mask_fill=self.pad_mask_fill(), uint8=self.device_transforms, min_side=self.enlarge_to(),
        )

    def eval_transform(self) -> A.Compose:
        return eval_transform(
            self.size, self.normalization, keypoints=self.uses_keypoints, framing=self.framing,
            mask_fill=self.pad_mask_fill(), uint8=self.device_transforms, min_side=self.enlarge_to(),
        )

    def pad_mask_fill(self) -> int:
        return self.void_index if self.void_index is not None else 0

    def data_signature(self) -> dict[str, Any]:
        """A hash of the arrays and the split: the same arrays give the same precompute cache."""
        return {
            "arrays": _digest(*self.images.values(), *self.labels.values()),
            "train": [str(s.path) for s in self.train_samples],
            "valid": [str(s.path) for s in self.valid_samples],
        }

    def make_task(self) -> Any:
        return self.kind.task(self)
