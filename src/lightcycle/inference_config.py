"""How a trained model's inputs are made: the one record that prediction, export and serving read.

Training knows how it framed its pictures (the DataModule's size, normalisation, framing and
augmentation preset); a checkpoint has to carry that to every consumer, which has no data config.
`VisionModule` writes an `InferenceConfig` into each checkpoint under `INFERENCE_KEY` as plain data
(`to_dict`: lists, numbers and strings, so `weights_only=True` reads it) and reads it back
(`from_dict`, bounds checked by `checkpoint_record` first); `Predictor`, `export` and `lightcycle-serve`
use the dataclass, never the dict.

The stored form is what lightcycle has always written: the framing settings that differ from squish
(a checkpoint saved before framing was recorded squishes), then size, mean, std, crop_pct, augment and
max_zoom. A record missing a key means its default: a checkpoint saved before the record existed has
only the size (from the DataModule's state), and mean and std then come from the backbone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from lightcycle.checkpoint_record import INFERENCE_KEY, check_inference_record
from lightcycle.data.framing import Framing
from lightcycle.data.transforms import DEFAULT_AUGMENT, DEFAULT_MAX_ZOOM, Normalization
from lightcycle.errors import LightcycleError

__all__ = ["INFERENCE_KEY", "InferenceConfig"]


@dataclass(frozen=True)
class InferenceConfig:
    """The eval input of a trained model.

    Args:
        size: the square input's side in pixels; None when not recorded (a caller passes `size=N`).
        mean, std: the normalisation (per RGB channel, of pixels in [0, 1]); None = the backbone's.
        crop_pct: the share of the picture a centre crop keeps (1 = none).
        framing: crop, pad or squish (data/framing.py); TTA's random views also use its `min_scale`.
        augment, max_zoom: the training augmentation, which TTA's augmented views reuse.
    """

    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float = 1.0
    framing: Framing = Framing()
    augment: str = DEFAULT_AUGMENT
    max_zoom: float = DEFAULT_MAX_ZOOM

    @classmethod
    def of_datamodule(cls, datamodule: Any) -> "InferenceConfig | None":
        """How `datamodule` frames evaluation images now (its current size: progressive resizing
        changes it); None for a DataModule that is not an ImageDataModule (no size or normalisation)."""
        norm = getattr(datamodule, "normalization", None)
        if norm is None or not hasattr(datamodule, "size"):
            return None
        return cls(
            size=int(datamodule.size),
            mean=tuple(float(v) for v in norm.mean),
            std=tuple(float(v) for v in norm.std),
            crop_pct=float(norm.crop_pct),
            framing=getattr(datamodule, "framing", None) or Framing(),
            augment=str(getattr(datamodule, "augment", DEFAULT_AUGMENT)),
            max_zoom=float(getattr(datamodule, "max_zoom", DEFAULT_MAX_ZOOM)),
        )

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], where: str = "checkpoint") -> "InferenceConfig":
        """The stored record -> the dataclass; a field out of bounds is one LightcycleError naming
        `where` and the field (`checkpoint_record.check_inference_record`); unknown keys are ignored."""
        if not isinstance(record, Mapping):
            raise LightcycleError(f"{where}: {INFERENCE_KEY} must be a mapping, got {type(record).__name__}")
        check_inference_record(record, where, f"{INFERENCE_KEY}.")

        def numbers(key: str) -> tuple[float, ...] | None:
            value = record.get(key)
            return None if value is None else tuple(float(v) for v in value)

        size = record.get("size")
        return cls(
            size=None if size is None else int(size),
            mean=numbers("mean"),
            std=numbers("std"),
            crop_pct=float(record.get("crop_pct") or 1.0),
            framing=Framing.from_config(record),
            augment=str(record.get("augment") or DEFAULT_AUGMENT),
            max_zoom=float(record.get("max_zoom") or DEFAULT_MAX_ZOOM),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored record (see the module docstring): plain data, fields not known left out."""
        record: dict[str, Any] = {**self.framing.changes()}
        if self.size is not None:
            record["size"] = int(self.size)
        if self.mean is not None:
            record["mean"] = [float(v) for v in self.mean]
        if self.std is not None:
            record["std"] = [float(v) for v in self.std]
        record.update(crop_pct=float(self.crop_pct), augment=self.augment, max_zoom=float(self.max_zoom))
        return record

    def normalization(self, backbone: str | None) -> Normalization:
        """The recorded statistics, or `backbone`'s pretrained ones where none were recorded."""
        default = Normalization.for_backbone(backbone) if self.mean is None or self.std is None else Normalization()
        return Normalization(
            mean=self.mean or default.mean, std=self.std or default.std, crop_pct=self.crop_pct,  # type: ignore[arg-type]
        )

    def replace(self, **changes: Any) -> "InferenceConfig":
        """A copy with `changes` (e.g. another `size` or `framing` for one prediction run)."""
        return dataclasses.replace(self, **changes)
