"""albumentations pipelines: fastai-style augmentation presets plus the backbone's own normalization.

One pipeline moves the image, its mask and its keypoints together, so every task shares these
presets. How a picture becomes a square (crop, pad or squish) is data/framing.py's; normalization
comes from the backbone's timm pretrained config, because a pretrained backbone only sees the
statistics it was trained with.

Normalization runs in one of two places. `uint8=False`: the pipeline ends with `A.Normalize`, so a
worker hands over float32 tensors. `uint8=True` (lightcycle-train's `data.device_transforms`): the
pipeline ends with the uint8 pixels, a quarter of the bytes through the DataLoader's shared memory,
pinned memory and the host-to-device copy, and `normalize_batch` turns the batch into normalised
floats on the device after the transfer, as fastai's batch transforms do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import albumentations as A
import cv2
import torch
from albumentations.pytorch import ToTensorV2

from lightcycle.data.framing import EnlargeSmall, Framing

Augment = Literal["side_on", "top_down", "none"]
AUGMENT_PRESETS: tuple[str, ...] = ("side_on", "top_down", "none")
# fastai's defaults (get_transforms / aug_transforms): photos taken from the side, zoom up to 1.1x.
DEFAULT_AUGMENT = "side_on"
DEFAULT_MAX_ZOOM = 1.1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """What a backbone expects: channel statistics and how evaluation images are framed."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 1.0

    @classmethod
    def for_backbone(cls, name: str | None) -> "Normalization":
        """Read mean/std/crop_pct from timm's pretrained config of `name` (ImageNet defaults otherwise).

        The demo images are framed tightly, so crop_pct is only honoured when it is set explicitly;
        timm's 0.875 centre crop would cut shapes that touch the border.
        """
        if not name:
            return cls()
        # deferred: timm (and the model zoo it registers) loads only to look up a backbone's statistics
        import timm

        cfg = timm.get_pretrained_cfg(name)
        if cfg is None:
            return cls()
        mean = tuple(float(v) for v in (cfg.mean or IMAGENET_MEAN))
        std = tuple(float(v) for v in (cfg.std or IMAGENET_STD))
        return cls(mean=mean, std=std)  # type: ignore[arg-type]


def _check_augment(augment: str) -> None:
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"data.augment must be one of {', '.join(AUGMENT_PRESETS)}, got {augment!r}")


def _finish(norm: Normalization, uint8: bool = False) -> list[A.BasicTransform]:
    if uint8:  # CHW uint8 tensor; normalize_batch finishes the job on the device
        return [ToTensorV2()]
    return [A.Normalize(mean=norm.mean, std=norm.std, max_pixel_value=255.0), ToTensorV2()]


SQUISH = Framing()


@functools.lru_cache(maxsize=64)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with pixel * scale + shift = (pixel / 255 - mean) / std, made once per device."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(-1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(-1, 1, 1)
    return scale.to(device), shift.to(device)


def normalize_batch(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 images [..., C, H, W] -> float32 `(x / 255 - mean) / std` on x's device, memory format kept.

    Anything else (already normalised floats, cached features) is returned unchanged, so a loop can
    call it on every batch whichever way its DataModule normalises.
    """
    if x.dtype != torch.uint8:
        return x
    scale, shift = _affine(tuple(norm.mean), tuple(norm.std), x.device)
    return torch.addcmul(shift, x.float(), scale)


def eval_transform(
    size: int, norm: Normalization, *, keypoints: bool = False, framing: Framing = SQUISH, mask_fill: int = 0,
    uint8: bool = False, min_side: int = 0,
) -> A.Compose:
    """Deterministic framing for validation, prediction and the plain view of TTA.

    `framing` (data/framing.py) makes the picture square: squish (fastai's `Resize(method='squish')`,
    nothing cut off), a centre crop of the short side, or padding to the long side; then one
    area-averaging resize to size x size. `mask_fill`: the mask value of zero padding. `uint8`: leave
    normalisation to `normalize_batch` (module docstring). `min_side`: pictures with a shorter side are
    first enlarged smoothly to it (framing.EnlargeSmall; arrays smaller than the input size).
    """
    steps: list[A.BasicTransform] = _enlarge(min_side) + framing.eval_steps(mask_fill)
    if norm.crop_pct < 1.0:
        steps.append(A.Resize(round(size / norm.crop_pct), round(size / norm.crop_pct), interpolation=cv2.INTER_AREA))
        steps.append(A.CenterCrop(size, size))
    else:
        steps.append(A.Resize(size, size, interpolation=cv2.INTER_AREA))
    return _compose(steps + _finish(norm, uint8), keypoints)


def train_transform(
    size: int,
    norm: Normalization,
    augment: str = DEFAULT_AUGMENT,
    max_zoom: float = DEFAULT_MAX_ZOOM,
    max_rotate: float = 10.0,
    max_lighting: float = 0.2,
    *,
    keypoints: bool = False,
    framing: Framing = SQUISH,
    mask_fill: int = 0,
    uint8: bool = False,
    min_side: int = 0,
) -> A.Compose:
    """fastai's `aug_transforms` in albumentations: random framing (`framing.train_steps`: a random
    square crop, random padding, random-resized crop or squish), flips, small rotate/zoom, lighting.

    `side_on` suits photos taken from the side (only horizontal flips make sense); `top_down` suits
    satellite and microscope images, which look the same in every orientation (fastai's
    `flip_vert=True`, dihedral group).
    """
    _check_augment(augment)
    if max_zoom < 1.0:
        raise ValueError(f"data.max_zoom must be >= 1.0, got {max_zoom}")
    steps: list[A.BasicTransform] = _enlarge(min_side) + framing.train_steps(size, mask_fill)
    if augment != "none":
        steps.append(A.HorizontalFlip(p=0.5))
        if augment == "top_down":
            steps += [A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
        steps.append(
            A.Affine(
                scale=(1.0, max_zoom),
                rotate=(-max_rotate, max_rotate),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                # Reflected borders mirror objects near the edge; albumentations then copies every
                # keypoint into each mirrored tile, so point targets get a plain (black) border.
                border_mode=cv2.BORDER_CONSTANT if keypoints else cv2.BORDER_REFLECT_101,
                p=0.75,
            )
        )
        steps.append(A.RandomBrightnessContrast(brightness_limit=max_lighting, contrast_limit=max_lighting, p=0.75))
    return _compose(steps + _finish(norm, uint8), keypoints)


def _enlarge(min_side: int) -> list[A.BasicTransform]:
    return [EnlargeSmall(min_side)] if min_side > 0 else []


def _compose(steps: list[A.BasicTransform], keypoints: bool) -> A.Compose:
    if keypoints:
        # Keep points that leave the frame: the loss still needs them and the datamodule reports them.
        return A.Compose(steps, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    return A.Compose(steps)
