"""One sample and the Dataset that decodes, augments and encodes it: what every DataModule's loaders,
TTA's views and prediction share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lightcycle.data.checks import load_image
from lightcycle.data.streams import seed_in_worker, seed_stream
from lightcycle.errors import LightcycleError


@dataclass(frozen=True)
class Sample:
    """One item on disk: the image path and its target in the task's own form (index, tags, mask path, points)."""

    path: Path
    target: Any


class ImageDataset(Dataset):
    """Decode, augment and encode samples; the task-specific part is the `encode` function.

    `load` turns a sample into its HxWx3 uint8 picture (default: decode the file at `sample.path`;
    ArrayDataModule reads its arrays instead). The transform's random stream is seeded where the
    dataset runs (data/streams.py): per worker, or per epoch by `AugmentingLoader` without workers.
    """

    def __init__(
        self, samples: Sequence[Sample], transform: A.Compose, encode: Any, max_pixels: int | None = None,
        load: Callable[[Sample], np.ndarray] | None = None,
        decode_size: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.encode = encode
        self.max_pixels = max_pixels
        self.load = load
        self.decode_size = decode_size  # JPEGs decode at a reduced scale no smaller than this (checks.load_image)
        self.stream_seed: int | None = None  # the worker seed the transform was seeded from (data/streams.py)

    def reseed(self, *words: int) -> None:
        """Seed the transform's random stream from `words` (AugmentingLoader, once per epoch without workers)."""
        seed_stream(self.transform, *words)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> np.ndarray:
        """Sample `index`'s picture, decoded (HxWx3 uint8)."""
        sample = self.samples[index]
        if self.load is not None:
            return self.load(sample)
        return load_image(sample.path, self.max_pixels, decode_size=self.decode_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        one_thread_per_worker()
        self.stream_seed = seed_in_worker(self.transform, self.stream_seed)
        sample = self.samples[index]
        try:
            return self.encode(self.image(index), sample, self.transform)
        except LightcycleError:
            raise
        except Exception as exc:  # e.g. a file changed since setup checked it: name it, in one line
            raise LightcycleError(f"{sample.path}: cannot prepare this sample ({type(exc).__name__}: {exc})") from exc


_worker_threads_set = False


def one_thread_per_worker() -> None:
    """Inside a DataLoader worker, let OpenCV run on the worker's own thread: the workers already
    fill the cores, and an OpenCV thread pool in each of them would oversubscribe them (and take the
    training process's core on small machines). Called by the datasets; a no-op elsewhere."""
    global _worker_threads_set
    if _worker_threads_set or torch.utils.data.get_worker_info() is None:
        return

    cv2.setNumThreads(0)
    _worker_threads_set = True
