"""How a picture becomes a square input: crop, pad or squish (fastai's `Resize(method=...)`), and
fastai's random-resized crop (`min_scale`).

fastai 0.7's course: "better to have a transformation which crops a square instead of squeezing,
since that distorts the image". The three framings, as in fastai 2:

- `squish`: resize the whole picture to size x size; nothing is cut, shapes are distorted.
- `crop`: a square of the short side, at a random position in training and in the centre for
  validation, TTA and prediction; nothing is distorted, the ends of the long side are cut.
- `pad`: the picture in the middle of a square of the long side, the border filled by reflection
  (`pad_mode=reflect`, fastai's default) or black (`pad_mode=zeros`); nothing is cut or distorted.
  In training the picture sits at a random place in the square, as in fastai.

Cropping and padding happen at the original resolution, then one area-averaging resize makes the
input, so the eval input shows a known `Window` of the original picture: prediction maps points
back through it exactly and masks back onto the original pixels, and a runner without lightcycle
(lightcycle/onnx_predict.py) can frame images the same way.

`min_scale < 1` (training only) replaces the framing's training step with a random-resized crop
(fastai's `RandomResizedCrop`): a random part of `min_scale` to all of the framed picture's area,
aspect ratio 3/4 to 4/3, resized to size x size. For `squish` the part's aspect ratio is relative
to the picture's, so what is squished stays as distorted as in validation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.core.transforms_interface import BaseTransformInitSchema

from lightcycle.errors import LightcycleError

RESIZE_METHODS: tuple[str, ...] = ("crop", "pad", "squish")
PAD_MODES: tuple[str, ...] = ("reflect", "zeros")
RATIO = (3 / 4, 4 / 3)  # fastai's RandomResizedCrop aspect ratios


@dataclass(frozen=True)
class Window:
    """The part of an original (width x height) picture that a size x size eval input shows.

    Input pixel (u, v) is original pixel (x0 + u * width / size, y0 + v * height / size), in
    albumentations' keypoint convention (no half-pixel shift). `x0`, `y0` are negative under `pad`
    (the input shows border beyond the picture) and positive under `crop`.
    """

    x0: int
    y0: int
    width: int
    height: int

    def to_original(self, points: Any, size: int) -> Any:
        """[..., 2] (x, y) pixels of the size x size input -> pixels of the original picture."""
        scale = np.asarray([self.width / size, self.height / size])
        offset = np.asarray([self.x0, self.y0], dtype=np.float64)
        if isinstance(points, np.ndarray):
            return points * scale + offset

        return points * torch.as_tensor(scale, dtype=points.dtype) + torch.as_tensor(offset, dtype=points.dtype)

    def covers(self, width: int, height: int) -> bool:
        """Whether the window shows all of a width x height picture (nothing was cropped away)."""
        return self.x0 <= 0 and self.y0 <= 0 and self.x0 + self.width >= width and self.y0 + self.height >= height


@dataclass(frozen=True)
class Framing:
    """`resize` (crop | pad | squish), `pad_mode` (reflect | zeros) and training's `min_scale`."""

    resize: str = "squish"
    pad_mode: str = "reflect"
    min_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_METHODS:
            raise LightcycleError(f"data.resize must be one of {', '.join(RESIZE_METHODS)}, got {self.resize!r}")
        if self.pad_mode not in PAD_MODES:
            raise LightcycleError(f"data.pad_mode must be one of {', '.join(PAD_MODES)}, got {self.pad_mode!r}")
        scale = self.min_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 < float(scale) <= 1.0:
            raise LightcycleError(f"data.min_scale must be in (0, 1] (1 = no random-resized crop), got {scale!r}")
        object.__setattr__(self, "min_scale", float(scale))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "Framing":
        """From a checkpoint's inference record; one saved before framing was recorded squished."""
        config = config or {}
        return cls(
            resize=str(config.get("resize", "squish")),
            pad_mode=str(config.get("pad_mode", "reflect")),
            min_scale=float(config.get("min_scale", 1.0)),
        )

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    def changes(self) -> dict[str, Any]:
        """The settings that differ from the default (squish): what a checkpoint records."""
        default = Framing().to_config()
        return {k: v for k, v in self.to_config().items() if v != default[k]}

    # --- geometry ---------------------------------------------------------------------------------
    def window(self, width: int, height: int) -> Window:
        """The region of a width x height picture that its eval input shows (see `Window`)."""
        if self.resize == "squish":
            return Window(0, 0, width, height)
        if self.resize == "crop":
            side = min(width, height)
            return Window((width - side) // 2, (height - side) // 2, side, side)
        side = max(width, height)  # pad: the picture starts (side - width) // 2 pixels into the square
        return Window(-((side - width) // 2), -((side - height) // 2), side, side)

    # --- albumentations steps ----------------------------------------------------------------------
    def _border(self) -> int:
        return cv2.BORDER_REFLECT_101 if self.pad_mode == "reflect" else cv2.BORDER_CONSTANT

    def eval_steps(self, mask_fill: int = 0) -> list[A.BasicTransform]:
        """Deterministic steps that make the picture square at its own resolution (none for squish)."""
        if self.resize == "crop":
            return [SquareCrop(random=False)]
        if self.resize == "pad":
            return [SquarePad(border_mode=self._border(), fill_mask=mask_fill, random=False)]
        return []

    def train_steps(self, size: int, mask_fill: int = 0) -> list[A.BasicTransform]:
        """Random framing for training, ending in a size x size picture."""
        resize = A.Resize(size, size, interpolation=cv2.INTER_AREA)
        if self.min_scale >= 1.0:
            if self.resize == "crop":
                return [SquareCrop(random=True), resize]
            if self.resize == "pad":
                return [SquarePad(border_mode=self._border(), fill_mask=mask_fill, random=True), resize]
            return [resize]
        scale = (self.min_scale, 1.0)
        if self.resize == "squish":
            return [RandomResizedSquish((size, size), scale=scale)]
        steps: list[A.BasicTransform] = []
        if self.resize == "pad":
            steps.append(SquarePad(border_mode=self._border(), fill_mask=mask_fill, random=True))
        steps.append(A.RandomResizedCrop((size, size), scale=scale, ratio=RATIO, area_for_downscale="image"))
        return steps


# Classification's framing (FolderDataModule, CsvDataModule, ArrayDataModule's class indices), measured
# on photos (docs/benchmarks.md, 13; bench/framing.py): random square crops of at least 35% of the
# picture in training (fastai's random-resized crop), the centre square in evaluation. The other tasks
# squish (`Framing()`), the measured best or within seed noise of it on their pictures.
CLASSIFICATION_FRAMING = Framing("crop", "reflect", 0.35)


# --- the transforms ---------------------------------------------------------------------------------
def _square_offset(room_x: int, room_y: int, random: bool, rng: Any) -> tuple[int, int]:
    """Where a square crop starts in the picture, or the picture in its padded square: anywhere in the
    room left over (training) or centred (evaluation), one rule for crop and pad."""
    if random:
        return rng.randint(0, room_x), rng.randint(0, room_y)
    return room_x // 2, room_y // 2


class SquareCrop(BaseCrop):
    """A square of the short side: at a random position (training) or in the centre (evaluation).

    The centre offset is (long - short) // 2, as `Window` and lightcycle/onnx_predict.py compute it.
    """

    class InitSchema(BaseCrop.InitSchema):
        random: bool

    def __init__(self, random: bool = False, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.random = random

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        side = min(height, width)
        x0, y0 = _square_offset(width - side, height - side, self.random, self.py_random)
        return {"crop_coords": (x0, y0, x0 + side, y0 + side)}


class SquarePad(A.Pad):
    """The picture inside a square of its long side: centred (evaluation) or at a random place (training).

    Keypoints only shift with the picture: under reflection albumentations would add a copy of every
    point in each mirrored tile, but a point's label belongs to the real picture only.
    """

    class InitSchema(BaseTransformInitSchema):
        border_mode: int
        fill_mask: float
        random: bool

    def __init__(self, border_mode: int = cv2.BORDER_REFLECT_101, fill_mask: int = 0, random: bool = False, p: float = 1.0) -> None:
        super().__init__(padding=0, fill=0, fill_mask=fill_mask, border_mode=border_mode, p=p)  # type: ignore[arg-type]
        self.random = random

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        side = max(height, width)
        left, top = _square_offset(side - width, side - height, self.random, self.py_random)
        return {"pad_top": top, "pad_bottom": side - height - top, "pad_left": left, "pad_right": side - width - left}

    def apply_to_keypoints(self, keypoints: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int,
                           pad_right: int, **params: Any) -> np.ndarray:
        return fgeometric.pad_keypoints(
            keypoints, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT, image_shape=params["shape"][:2]
        )


class EnlargeSmall(A.SmallestMaxSize):
    """Enlarge a picture whose short side is below `min_side` until it is `min_side` (bicubic, aspect
    kept; masks nearest, points scaled); larger pictures pass unchanged.

    An 8x8 array framed straight to 64 px is enlarged by the framing's own steps: area averaging (8x8
    blocks) in evaluation, a bilinear stretch of a crop of a few whole pixels in training, so training
    and validation see different pictures. Enlarged first, it is framed like the same picture saved as
    a larger file (docs/benchmarks.md, small arrays)."""

    def __init__(self, min_side: int) -> None:
        super().__init__(max_size=int(min_side), interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST)
        self.min_side = int(min_side)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        return {"scale": max(1.0, self.min_side / min(height, width))}

    def apply(self, img: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        return img if scale == 1.0 else super().apply(img, scale, **params)

    def apply_to_mask(self, mask: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        return mask if scale == 1.0 else super().apply_to_mask(mask, scale, **params)


class RandomResizedSquish(A.RandomResizedCrop):
    """fastai's random-resized crop for a squished picture: the part's aspect ratio is 3/4 to 4/3
    *relative to the picture's*, so after squishing it is as distorted as the validation input."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, float] = (0.08, 1.0)) -> None:
        super().__init__(size, scale=scale, ratio=RATIO, interpolation=cv2.INTER_LINEAR, area_for_downscale="image")

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        aspect = width / height
        for _ in range(10):
            area = self.py_random.uniform(*self.scale) * width * height
            ratio = aspect * math.exp(self.py_random.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
            w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < w <= width and 0 < h <= height:
                x0, y0 = self.py_random.randint(0, width - w), self.py_random.randint(0, height - h)
                return {"crop_coords": (x0, y0, x0 + w, y0 + h)}
        return {"crop_coords": (0, 0, width, height)}  # the whole picture always fits
