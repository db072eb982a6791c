"""Precomputed activations, the algorithm: the backbone's outputs for every image, computed once and cached.

While a backbone is frozen its output for an image never changes, so the head can train on features
computed once (fastai 0.7's `precompute=True`): an epoch then costs a few matrix products instead of a
full forward (and, with `train_bn`, backward) pass through the backbone. `write_features` runs the frozen backbone over the
training and validation images with the eval transform (no augmentation, as in fastai 0.7) and
writes `{train,valid}_{features,targets}.npy`, memory-mapped so a large dataset need not fit in RAM,
then a `done` marker; `PrecomputedFeatures` reads them back for the DataModule to serve
(`ImageDataModule.serve_features`, `feature_loader`).

`cache_key` hashes the backbone's name and weights, the image size, the normalisation, the eval
framing and the exact samples (`ImageDataModule.data_signature`: paths, sizes, modification times and
targets of files; a hash of the arrays for ArrayDataModule), so a stale cache is never read.
When to train on the cache, and who computes it under DDP, is the `Precompute` callback's
(callbacks/precompute.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightcycle.data.base import batch_transform_of

SPLITS: tuple[str, ...] = ("train", "valid")
DONE = "done"  # written last: a folder without it is an interrupted computation


class FeatureDataset(Dataset):
    """(feature vector, target) pairs read from memory-mapped .npy files."""

    def __init__(self, features: np.ndarray, targets: np.ndarray) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self.features[index])), torch.from_numpy(np.array(self.targets[index]))


class PrecomputedFeatures:
    """The cached features of one (backbone, weights, size, file list), as datasets per split."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def dataset(self, split: str) -> FeatureDataset:
        features = np.load(self.folder / f"{split}_features.npy", mmap_mode="r")
        targets = np.load(self.folder / f"{split}_targets.npy", mmap_mode="r")
        return FeatureDataset(features, targets)


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds a finished computation (its `done` marker)."""
    return (Path(folder) / DONE).is_file()


def cache_key(backbone_name: str, backbone: torch.nn.Module, datamodule: Any) -> str:
    """sha256 over everything that determines the features; any change gives a new cache."""
    digest = hashlib.sha256()
    framing = getattr(datamodule, "framing", None)
    meta = {
        "backbone": backbone_name,
        "size": int(datamodule.size),
        "normalization": repr(getattr(datamodule, "normalization", None)),
        "framing": framing.to_config() if framing is not None else None,  # the eval framing shapes the features
        "data": datamodule.data_signature(),
        "version": 2,
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


@torch.inference_mode()
def write_features(backbone: torch.nn.Module, datamodule: Any, folder: Path, batch_size: int | None = None) -> None:
    """The features of every training and validation image into `folder`, then its `done` marker;
    `backbone` runs in eval mode (BatchNorm statistics untouched) and gets its mode back."""
    was_training = backbone.training
    backbone.eval()
    try:
        for split in SPLITS:
            write_split(backbone, datamodule, split, folder, batch_size)
        (Path(folder) / DONE).write_text("complete\n")
    finally:
        backbone.train(was_training)


def write_split(
    backbone: torch.nn.Module, datamodule: Any, split: str, folder: Path, batch_size: int | None = None, name: str | None = None,
) -> None:
    """`<name>_features.npy` and `<name>_targets.npy` (name: the split's) for the `split`'s images in
    sample order, from the DataModule's `eval_loader` (every sample in this process)."""
    folder, name = Path(folder), name or split
    samples = datamodule.train_samples if split == "train" else datamodule.valid_samples
    loader = datamodule.eval_loader(split, sharded=False, batch_size=batch_size)
    prepare = batch_transform_of(datamodule)  # uint8 pixels normalised on the device
    device = next(backbone.parameters()).device
    features = targets = None
    offset = 0
    for x, y in loader:
        out = backbone(prepare(x.to(device, non_blocking=True))).float().cpu().numpy()
        y = y.cpu().numpy()
        if features is None:
            features = np.lib.format.open_memmap(folder / f"{name}_features.npy", "w+", np.float32, (len(samples), *out.shape[1:]))
            targets = np.lib.format.open_memmap(folder / f"{name}_targets.npy", "w+", y.dtype, (len(samples), *y.shape[1:]))
        features[offset : offset + len(out)] = out
        targets[offset : offset + len(y)] = y
        offset += len(out)
    assert features is not None and targets is not None and offset == len(samples)
    features.flush(), targets.flush()
