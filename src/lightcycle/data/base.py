"""The shared LightningDataModule: find samples, vet the files, split, and serve augmented batches.

Each task subclass only says how to find its samples on disk (`collect`), how to turn one decoded
sample into tensors (`encode`) and which Task object describes its outputs (`make_task`). Checking
files, splitting, transforms and loaders live here once.

With `device_transforms=True` (the default, in Python as in lightcycle-train) batches cross the
DataLoader as uint8 and `on_after_batch_transfer` normalises them on the device (`batch_transform`),
in every loop the Trainer runs; loops of lightcycle's own over these loaders (TTA, interpretation, precompute, snapshot
ensembles) call `batch_transform` after their own transfer. Loaders pin memory when a GPU trains.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import albumentations as A
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightcycle.cache import cache_root
from lightcycle.data.batching import (
    AUTO,
    auto_batch_size,
    parse_batch_size,
    resolve_auto,
)
from lightcycle.data.check_once import find_bad_images_once
from lightcycle.data.checks import pixel_limit
from lightcycle.data.dataset import ImageDataset, Sample, one_thread_per_worker  # noqa: F401  (public here too)
from lightcycle.data.demo import demo_root
from lightcycle.data.framing import Framing
from lightcycle.data.loaders import eval_sampler, ordered_loader
from lightcycle.data.problems import REPORT_NAME, report_bad
from lightcycle.data.streams import AugmentingLoader
from lightcycle.data.transforms import (
    DEFAULT_AUGMENT,
    DEFAULT_MAX_ZOOM,
    Normalization,
    eval_transform,
    normalize_batch,
    train_transform,
)
from lightcycle.data.verified import VerifiedFiles, root_file_name
from lightcycle.errors import LightcycleError, printable

log = logging.getLogger(__name__)


def _file_signature(samples: Sequence[Sample]) -> list[Any]:
    out = []
    for s in samples:
        stat = os.stat(s.path)
        target = s.target if isinstance(s.target, (int, float, str)) else repr(s.target)
        out.append([str(s.path), stat.st_size, stat.st_mtime_ns, target])
    return out


def batch_transform_of(datamodule: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """What turns `datamodule`'s batches into model inputs on the device, for loops of one's own:
    an ImageDataModule's `batch_transform`, the identity for any other DataModule."""
    transform = getattr(datamodule, "batch_transform", None)
    return transform if callable(transform) else _identity


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, as `nproc` counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers(processes: int = 1) -> int:
    """Every core but one per training process: a 2-core machine gets 1 worker, a 32-core one with
    4 GPU processes 7 each. Decoding JPEGs is what feeds a GPU, so there is no cap."""
    return max(0, available_cores() // max(1, int(processes)) - 1)


class ImageDataModule(L.LightningDataModule):
    """Base DataModule for every task. Subclasses implement `collect`, `encode` and `make_task`."""

    task_name: ClassVar[str] = "base"
    uses_keypoints: ClassVar[bool] = False
    # Targets independent of the pixel grid (labels, tags): training images may decode at reduced size.
    reduced_decoding: ClassVar[bool] = False

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        size: int = 224,
        batch_size: int | str = "auto",
        num_workers: int | None = None,
        augment: str = DEFAULT_AUGMENT,
        max_zoom: float = DEFAULT_MAX_ZOOM,
        valid_pct: float = 0.2,
        seed: int = 42,
        on_bad: str = "error",
        backbone: str | None = None,
        demo: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        check_images: bool = True,
        pin_memory: bool | None = None,
        max_pixels: int | None = None,
        verify_cache: bool = True,
        report_dir: str | os.PathLike | None = None,
        allow_outside_root: bool = False,
        resize: str = "squish",
        pad_mode: str = "reflect",
        min_scale: float = 1.0,
        device_transforms: bool = True,
    ) -> None:
        super().__init__()
        if root is None and demo is None:
            raise LightcycleError("data.root is not set: point it at your dataset folder")
        if int(size) < 8:
            raise LightcycleError(f"data.size must be at least 8 pixels, got {size}")
        self.root = Path(root).expanduser() if root is not None else None
        self.size = int(size)
        self.train_samples: list[Sample] = []
        self._ready = False
        self.batch_size = batch_size  # `auto` is decided in setup, from the number of training images
        self._num_workers = None if num_workers is None else int(num_workers)
        self.augment = augment
        self.max_zoom = float(max_zoom)
        self.valid_pct = float(valid_pct)
        self.seed = int(seed)
        self.on_bad = on_bad
        self.normalization = Normalization.for_backbone(backbone)
        self.framing = Framing(resize, pad_mode, min_scale)  # validates data.resize, data.pad_mode, data.min_scale
        self.demo = demo
        self.cache_dir = cache_dir
        self.check_images = check_images
        self._pin_memory = pin_memory
        self.device_transforms = bool(device_transforms)
        self.max_pixels = None if max_pixels is None else pixel_limit(max_pixels)
        # Skip decoding files verified good before and unchanged since (data/verified.py).
        self.verify_cache = bool(verify_cache)
        # Where bad_items.csv (every problem found at setup) goes: the run dir; None = the cache.
        self.report_dir = Path(report_dir).expanduser() if report_dir is not None else None
        # CSV and valid.txt names may resolve outside `root` only when allowed (data/files.py).
        self.allow_outside_root = bool(allow_outside_root)
        self.valid_samples: list[Sample] = []
        self._features: Any = None  # cached backbone activations served instead of images (serve_features)
        # Validate presets now so a typo fails before any data is read.
        train_transform(self.size, self.normalization, self.augment, self.max_zoom)

    # --- task-specific hooks -------------------------------------------------------------------
    def collect(self, root: Path) -> tuple[list[Sample], list[Sample], list[tuple[Path, str]]]:
        """Find (train, valid, problems) under `root`; problems are (path, reason) pairs."""
        raise NotImplementedError

    @staticmethod
    def encode(image: np.ndarray, sample: Sample, transform: A.Compose) -> tuple[torch.Tensor, Any]:
        """Turn a decoded image and its sample into (input tensor, target tensor)."""
        raise NotImplementedError

    def make_task(self) -> Any:
        """The Task object (head, loss, metrics) matching this data; valid after `setup`."""
        raise NotImplementedError

    def edits(self, root: Path) -> Any:
        """How cleaning removes and relabels images of this layout under `root` (data/edits.py)."""
        raise LightcycleError(f"{type(self).__name__} data cannot be cleaned in place (no files of its own to move)")

    def pad_mask_fill(self) -> int:
        """The mask value of zero padding (`data.resize=pad data.pad_mode=zeros`); masks only."""
        return 0

    def data_signature(self) -> dict[str, Any]:
        """What identifies every sample's picture and target (paths, sizes, modification times,
        targets): precompute's cache key, so a changed file never reads a stale cache."""
        return {"train": _file_signature(self.train_samples), "valid": _file_signature(self.valid_samples)}

    def companion_files(self, sample: Sample) -> list[Path]:
        """Files besides the picture that belong to `sample` (a segmentation mask): cleaning moves them with it."""
        return []

    # --- Lightning hooks -----------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.demo is not None:
            demo_root(self.demo, self.cache_dir)

    def resolve_root(self) -> Path:
        if self.demo is not None:
            return demo_root(self.demo, self.cache_dir)
        assert self.root is not None
        if not self.root.exists():
            raise LightcycleError(f"data.root {self.root} does not exist")
        if not self.root.is_dir():
            raise LightcycleError(f"data.root {self.root} is not a folder")
        if not any(self.root.iterdir()):
            raise LightcycleError(f"data.root {self.root} is empty")
        return self.root

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        root = self.resolve_root()
        train, valid, problems = self.collect(root)
        if self.check_images:
            # one process of a distributed launch checks, the others read its answer (data/check_once.py)
            bad = find_bad_images_once([s.path for s in train + valid], max_pixels=self.max_pixels,
                                       cache=self.verified_files(root), cache_dir=self.cache_dir)
            problems = problems + bad
            bad_paths = {p for p, _ in bad}
            train = [s for s in train if s.path not in bad_paths]
            valid = [s for s in valid if s.path not in bad_paths]
        report_bad(problems, self.on_bad, str(root), self.report_file(root))
        if len(train) < 2:
            raise LightcycleError(f"{root}: found {len(train)} training image(s); need at least 2")
        if not valid:
            raise LightcycleError(f"{root}: found no validation images")
        self.train_samples, self.valid_samples = train, valid
        self._ready = True
        log.info(
            "%s: %d training and %d validation images in %s", self.task_name, len(train), len(valid), printable(root)
        )
        if self._batch_size is None:
            self._batch_size = resolve_auto(len(train), self.task_name)

    # --- batch size: a number, or `auto` (lightcycle.data.batching) ------------------------------
    @property
    def batch_size(self) -> int:
        """Images per batch; with `auto`, known once `setup` has counted the training images."""
        if self._batch_size is None:
            raise LightcycleError("data.batch_size=auto is chosen from the number of training images: call setup() first")
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int | str) -> None:
        before = getattr(self, "_batch_size", None)
        self._batch_size = parse_batch_size(value)
        if self._batch_size is None and self._ready:
            n_train = len(self.train_samples)
            self._batch_size = resolve_auto(n_train, self.task_name, announce=before != auto_batch_size(n_train))

    def verified_files(self, root: Path) -> Any:
        """The cache of files verified before (`VerifiedFiles`), or None with `verify_cache=False`."""
        if not self.verify_cache:
            return None

        return VerifiedFiles(root, self.max_pixels, self.cache_dir)

    def report_file(self, root: Path) -> Path:
        """Where the full list of bad items goes: `report_dir`/bad_items.csv, else one file per root in the cache."""
        if self.report_dir is not None:
            return self.report_dir / REPORT_NAME

        return cache_root(self.cache_dir) / "reports" / root_file_name(root, None, f"-{REPORT_NAME}")

    # --- cached features instead of images (the Precompute callback) --------------------------
    def serve_features(self, features: Any) -> None:
        """Serve `features` (anything with `dataset(split)`, e.g. `precomputed.PrecomputedFeatures`) from
        the next loaders on (`feature_loader`)."""
        self._features = features

    def serve_images(self) -> None:
        """Serve images again from the next loaders on."""
        self._features = None

    @property
    def precomputed(self) -> Any:
        """The cached features being served, or None while the loaders serve images."""
        return self._features

    # --- loaders ---------------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        """`num_workers`, or every core but one per training process on this machine (None)."""
        if self._num_workers is not None:
            return self._num_workers
        return default_num_workers(self.trainer.num_devices if self.trainer is not None else 1)

    @num_workers.setter
    def num_workers(self, value: int | None) -> None:
        self._num_workers = None if value is None else int(value)

    @property
    def pin_memory(self) -> bool:
        """`pin_memory`, or (None) whether batches go to a CUDA device: pinned pages copy asynchronously."""
        if self._pin_memory is not None:
            return bool(self._pin_memory)
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    @pin_memory.setter
    def pin_memory(self, value: bool | None) -> None:
        self._pin_memory = value

    def train_transform(self) -> A.Compose:
        return train_transform(
            self.size, self.normalization, self.augment, self.max_zoom, keypoints=self.uses_keypoints,
            framing=self.framing, mask_fill=self.pad_mask_fill(), uint8=self.device_transforms,
        )

    def eval_transform(self) -> A.Compose:
        return eval_transform(
            self.size, self.normalization, keypoints=self.uses_keypoints, framing=self.framing,
            mask_fill=self.pad_mask_fill(), uint8=self.device_transforms,
        )

    def load_sample(self) -> Callable[[Sample], np.ndarray] | None:
        """How the datasets get a sample's picture; None = decode the file at `sample.path`."""
        return None

    def decode_size(self, train: bool) -> int | None:
        """The smallest side a training image needs before its transform (zoom included): JPEGs much
        larger decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), which cuts the decode time
        by up to the same factor. Only for targets that do not live in pixel coordinates; evaluation
        always decodes in full, so predictions match validation and the exported model's runner."""
        if not train or not self.reduced_decoding:
            return None
        return math.ceil(self.size * max(1.0, self.max_zoom))

    def dataset(self, samples: Sequence[Sample], train: bool) -> ImageDataset:
        transform = self.train_transform() if train else self.eval_transform()
        return ImageDataset(samples, transform, self.encode, self.max_pixels, self.load_sample(), self.decode_size(train))

    def batch_transform(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images on its device -> what the model takes: uint8 pixels normalised; anything
        else (floats normalised in the workers, cached features) as it is."""
        return normalize_batch(x, self.normalization)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning's hook after each batch reached the device: normalise the uint8 images there."""
        if isinstance(batch, torch.Tensor):
            return self.batch_transform(batch)
        if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            return [self.batch_transform(batch[0]), *batch[1:]]  # (images, targets): default_collate's list
        return batch

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool, sampler: Any = None) -> DataLoader:
        return AugmentingLoader(  # reseeds augmentation per epoch without workers (data/streams.py)
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        # Drop a ragged last batch (fastai does too): a batch of one breaks BatchNorm.
        drop_last = len(self.train_samples) > self.batch_size
        if self._features is not None:
            return self.feature_loader("train")
        return self._loader(self.dataset(self.train_samples, train=True), shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        if self._features is not None:
            return self.feature_loader("valid")
        dataset = self.dataset(self.valid_samples, train=False)
        return self._loader(dataset, shuffle=False, drop_last=False, sampler=eval_sampler(dataset))

    def eval_loader(
        self, split: str = "valid", *, dataset: Dataset | None = None, sharded: bool = True, batch_size: int | None = None,
    ) -> DataLoader:
        """A pass of one's own in sample order (TTA, interpretation, precompute's feature pass):
        `dataset`, by default the `split`'s (train | valid) samples with the eval transform, in batches
        of `batch_size` (default: the DataModule's) with its workers. `sharded`: under DDP each process
        its shard, no sample twice (metrics reduced across processes); False: every sample here."""
        self.setup("validate")
        if dataset is None:
            if split not in ("train", "valid"):
                raise LightcycleError(f"eval_loader: split must be train or valid, got {split!r}")
            dataset = self.dataset(self.train_samples if split == "train" else self.valid_samples, train=False)
        return ordered_loader(dataset, batch_size or self.batch_size, self.num_workers, self.pin_memory, sharded)

    def feature_loader(self, split: str) -> DataLoader:
        """The precomputed features being served (`serve_features`) of `split`: training batches shuffled
        (the ragged last one dropped, as for images), validation in order and sharded under DDP. No
        workers: reading a memory map is cheaper than starting them."""
        if self._features is None:
            raise LightcycleError("feature_loader: no precomputed features are being served (serve_features)")
        dataset = self._features.dataset(split)
        if split != "train":
            return ordered_loader(dataset, self.batch_size, sharded=True)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, drop_last=len(dataset) > self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def state_dict(self) -> dict[str, Any]:
        """The current image size and batch size; `auto` while setup has not chosen it (a command
        that reads a run's data settings before counting its images, e.g. lightcycle-interpret)."""
        return {"size": self.size, "batch_size": AUTO if self._batch_size is None else self._batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.size = int(state_dict.get("size", self.size))
        if "batch_size" in state_dict:  # what the interrupted run used (the number `auto` chose), or `auto`
            self.batch_size = state_dict["batch_size"]
