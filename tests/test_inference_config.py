"""InferenceConfig: the checkpoint's record of how inputs are made, typed, and stored as it always was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightcycle.data import FolderDataModule, SegmentationDataModule
from lightcycle.data.framing import Framing
from lightcycle.data.transforms import Normalization
from lightcycle.errors import LightcycleError
from lightcycle.inference_config import INFERENCE_KEY, InferenceConfig

# What lightcycle wrote for a 32 px classifier before the record was a dataclass, key order included.
STORED = {"resize": "crop", "min_scale": 0.35, "size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
          "crop_pct": 1.0, "augment": "side_on", "max_zoom": 1.1}


def test_a_stored_record_reads_and_writes_back_byte_for_byte():
    config = InferenceConfig.from_dict(STORED)
    assert config.size == 32 and config.framing == Framing("crop", "reflect", 0.35) and config.mean == (0.485, 0.456, 0.406)
    assert json.dumps(config.to_dict()) == json.dumps(STORED)  # same keys, order, types


def test_the_record_of_a_datamodule_is_what_checkpoints_held():
    dm = FolderDataModule(Path("unused"), size=32)
    assert json.dumps(InferenceConfig.of_datamodule(dm).to_dict()) == json.dumps(STORED)
    squished = SegmentationDataModule(Path("unused"), size=48, augment="top_down", max_zoom=1.2).normalization
    record = InferenceConfig.of_datamodule(SegmentationDataModule(Path("unused"), size=48, augment="top_down", max_zoom=1.2)).to_dict()
    assert list(record) == ["size", "mean", "std", "crop_pct", "augment", "max_zoom"]  # squish: no framing keys
    assert record["augment"] == "top_down" and record["max_zoom"] == 1.2 and record["mean"] == list(squished.mean)
    assert InferenceConfig.of_datamodule(object()) is None  # not an ImageDataModule: nothing to record


def test_an_old_record_means_the_defaults_and_the_backbone_statistics():
    """A checkpoint saved before the record existed has only the size (from the DataModule's state)."""
    config = InferenceConfig.from_dict({"size": 64})
    assert (config.size, config.framing, config.augment, config.max_zoom, config.crop_pct) == (64, Framing(), "side_on", 1.1, 1.0)
    assert config.normalization("resnet18") == Normalization.for_backbone("resnet18")
    assert InferenceConfig.from_dict({}).size is None


@pytest.mark.parametrize("record, message", [
    ({"size": 12000}, f"{INFERENCE_KEY}.size is 12000, outside 8..4096"),
    ({"std": [0.2, 0.0, 0.2]}, f"{INFERENCE_KEY}.std entry 1 is 0, outside (0, 10]"),
    ({"resize": "zoom"}, f"{INFERENCE_KEY}.resize is 'zoom', not one of crop, pad, squish"),
    ("size=32", f"{INFERENCE_KEY} must be a mapping, got str"),
])
def test_a_record_out_of_bounds_is_one_line_naming_the_field(record, message):
    with pytest.raises(LightcycleError, match=f"^model.ckpt: {message}".replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        InferenceConfig.from_dict(record, where="model.ckpt")
