"""Segmentation data in CamVid's layout: `images/*`, one mask per image, `codes.txt`, optional `valid.txt`.

A mask is a single-channel image (palette or greyscale) whose pixel values index `codes.txt`.
Every mask is read once at setup, so a wrong size or an unknown code fails before training with
the file named, instead of inside a DataLoader worker mid-epoch.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image

from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.checks import image_size, is_image_file
from lightcycle.data.edits import MaskedImageEdits
from lightcycle.data.files import FileResolver, read_name_list
from lightcycle.data.splits import split_samples
from lightcycle.errors import LightcycleError
from lightcycle.tasks import SegmentationTask

log = logging.getLogger(__name__)

MASK_MODES: tuple[str, ...] = ("P", "L", "I", "I;16", "I;16L", "I;16B", "1")


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Decode a mask into an HxW array of code indices (uint8 when they fit, else int32)."""
    try:
        with Image.open(path) as img:
            if img.mode not in MASK_MODES:
                raise LightcycleError(
                    f"{path}: mask must be single-channel (palette or greyscale) code indices, got mode {img.mode}"
                )
            arr = np.array(img)  # a writable copy: torch warns about read-only arrays
    except LightcycleError:
        raise
    except Exception as exc:
        raise LightcycleError(f"{path}: cannot read mask ({type(exc).__name__}: {exc})") from exc
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return arr if arr.dtype == np.uint8 else arr.astype(np.int32)


def encode_with_mask(image: np.ndarray, mask: np.ndarray, transform: A.Compose) -> tuple[torch.Tensor, torch.Tensor]:
    """Transform a picture and its HxW mask of code indices together -> (input tensor, [H, W] long mask)."""
    out = transform(image=image, mask=mask)
    return out["image"], torch.as_tensor(out["mask"]).long()


def check_mask(image: Path, mask: Path, num_codes: int) -> str | None:
    """Why `mask` cannot serve `image` (missing, unreadable, other size, unknown code), or None."""
    if not mask.is_file():
        return f"no mask (expected {mask})"
    try:
        arr = load_mask(mask)
        width, height = image_size(image)
    except LightcycleError as exc:
        return str(exc)
    if arr.shape[:2] != (height, width):
        return f"mask {mask.name} is {arr.shape[1]}x{arr.shape[0]} but the image is {width}x{height}"
    top = int(arr.max()) if arr.size else 0
    if top >= num_codes or (arr.size and int(arr.min()) < 0):
        bad = sorted(int(v) for v in np.unique(arr) if v < 0 or v >= num_codes)
        return f"mask {mask.name} has value(s) {bad[:5]} outside codes.txt (0..{num_codes - 1})"
    return None


def read_codes(path: Path) -> list[str]:
    """Class names, one per line, in mask-value order (CamVid's codes.txt)."""
    if not path.is_file():
        raise LightcycleError(f"{path}: codes file not found (one class name per line, in mask-value order)")
    codes = [name for _, name in read_name_list(path)]
    if len(codes) < 2:
        raise LightcycleError(f"{path}: need at least 2 codes, found {len(codes)}")
    if len(codes) > SegmentationTask.max_outputs:  # before a head and a [C, C] confusion matrix are sized by it
        raise LightcycleError(f"{path}: {len(codes):,} codes, more than the {SegmentationTask.max_outputs:,} "
                              "a segmentation model may have")
    repeated = sorted(name for name, n in Counter(codes).items() if n > 1)
    if repeated:
        raise LightcycleError(f"{path}: duplicate code names {repeated[:10]}")
    return codes


def resolve_void(void_code: str | int | None, codes: list[str], where: Path) -> int | None:
    """The index of the void code, given by name (case-insensitive) or index; None = no void."""
    if void_code is None or (isinstance(void_code, str) and void_code.strip().lower() in ("", "null", "none")):
        return None
    if isinstance(void_code, int) and not isinstance(void_code, bool):
        if not 0 <= void_code < len(codes):
            raise LightcycleError(f"data.void_code={void_code} is not an index of {where} (0..{len(codes) - 1})")
        return void_code
    lowered = [c.lower() for c in codes]
    name = str(void_code).strip().lower()
    if name not in lowered:
        raise LightcycleError(
            f"data.void_code={void_code!r} is not in {where} ({', '.join(codes[:10])}{'...' if len(codes) > 10 else ''}); "
            "pass its name or index, or data.void_code=null if there is none"
        )
    return lowered.index(name)


class SegmentationDataModule(ImageDataModule):
    """CamVid layout: `images/*`, masks at `mask_pattern` (relative to root; `{stem}`, `{name}` and
    `{suffix}` are the image's), `codes.txt`, and `valid.txt` (names relative to `images/`) or `valid_pct`.

    `void_code` (a code name or index, or null) marks pixels ignored by loss and metrics.
    `loss`: `ce_dice` (cross-entropy + soft Dice, the default), `ce` (cross-entropy) or `dice`.
    """

    task_name = "segmentation"

    def __init__(
        self,
        *args: Any,
        images: str = "images",
        mask_pattern: str = "labels/{stem}_P.png",
        codes_file: str = "codes.txt",
        valid_file: str | None = "valid.txt",
        void_code: str | int | None = None,
        loss: str = "ce_dice",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if "{" not in mask_pattern:
            raise LightcycleError(f"data.mask_pattern must contain {{stem}} or {{name}}, got {mask_pattern!r}")
        self.images, self.mask_pattern, self.codes_file, self.valid_file = images, mask_pattern, codes_file, valid_file
        self.void_code = void_code
        self.loss = loss
        self.codes: list[str] = []
        self.void_index: int | None = None
        SegmentationTask(["a", "b"], loss=loss)  # a bad loss name fails now, not after reading every mask

    def mask_path(self, root: Path, image: Path) -> Path:
        try:
            rel = self.mask_pattern.format(stem=image.stem, name=image.name, suffix=image.suffix)
        except (KeyError, IndexError) as exc:
            raise LightcycleError(f"data.mask_pattern {self.mask_pattern!r}: unknown field {exc}") from None
        return root / rel

    def collect(self, root: Path) -> tuple[list[Sample], list[Sample], list[tuple[Path, str]]]:
        self.codes = read_codes(root / self.codes_file)
        self.void_index = resolve_void(self.void_code, self.codes, root / self.codes_file)
        image_dir = root / self.images
        if not image_dir.is_dir():
            raise LightcycleError(f"{image_dir}: image folder not found")
        images = sorted(p for p in image_dir.rglob("*") if is_image_file(p) and not p.name.startswith("."))
        if not images:
            raise LightcycleError(f"{image_dir}: no images found")
        masks = [self.mask_path(root, p) for p in images]
        with ThreadPoolExecutor(max_workers=8) as pool:
            reasons = list(pool.map(lambda pair: check_mask(*pair, len(self.codes)), zip(images, masks)))
        problems = [(image, reason) for image, reason in zip(images, reasons) if reason is not None]
        samples = [Sample(image, str(mask)) for image, mask, reason in zip(images, masks, reasons) if reason is None]
        valid_path = root / self.valid_file if self.valid_file else None
        resolver = FileResolver(image_dir, root, self.allow_outside_root)
        train, valid, split_problems = split_samples(samples, valid_path, resolver, self.valid_pct, self.seed, problems)
        return train, valid, problems + split_problems

    def edits(self, root: Path) -> MaskedImageEdits:
        """Removed images move aside with their masks and leave valid.txt; no relabelling of a mask here."""
        return MaskedImageEdits(root, self.images, lambda image: self.mask_path(root, image), self.valid_file,
                                self.allow_outside_root)

    @staticmethod
    def encode(image: np.ndarray, sample: Sample, transform: A.Compose) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_with_mask(image, load_mask(sample.target), transform)

    def companion_files(self, sample: Sample) -> list[Path]:
        """The sample's mask."""
        return [Path(sample.target)]

    def pad_mask_fill(self) -> int:
        """Zero padding is labelled void (ignored by loss and metrics) when the data has a void code, else code 0."""
        return self.void_index if self.void_index is not None else 0

    def make_task(self) -> SegmentationTask:
        self.setup("fit")
        return SegmentationTask(class_names=list(self.codes), void_index=self.void_index, loss=self.loss)
