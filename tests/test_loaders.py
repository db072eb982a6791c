"""Every DataLoader comes from data/: the DataModule's loaders for passes of one's own, and the
algorithms (TTA, ensembles, precomputed activations) live apart from their callbacks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.precomputed import PrecomputedFeatures, write_features

SRC = Path(__file__).resolve().parents[1] / "src" / "lightcycle"


def _sources(folder: Path):
    return [(p, p.read_text()) for p in sorted(folder.rglob("*.py"))]


def test_dataloaders_are_built_in_data_only():
    outside = [str(p.relative_to(SRC)) for p, text in _sources(SRC)
               if "DataLoader(" in text and p.relative_to(SRC).parts[0] != "data"]
    assert outside == []


IMPORTS_CALLBACKS = re.compile(r"^\s*(from|import) lightcycle\.callbacks", re.MULTILINE)


def test_prediction_uses_the_algorithms_not_their_callbacks():
    for package in ("predict", "serve", "interpretation"):
        for path, text in _sources(SRC / package):
            assert not IMPORTS_CALLBACKS.search(text), path
    for algorithm in ("tta.py", "ensemble.py", "precomputed.py", "lr_range.py"):
        assert not IMPORTS_CALLBACKS.search((SRC / algorithm).read_text()), algorithm


def _datamodule(root, **kwargs):
    dm = FolderDataModule(root, size=32, batch_size=5, num_workers=0, backbone="test_resnet", **kwargs)
    dm.setup("fit")
    return dm


def test_eval_loader_serves_every_sample_in_order(image_folder):
    dm = _datamodule(image_folder, device_transforms=True)
    loader = dm.eval_loader("train", sharded=False, batch_size=7)
    assert loader.batch_size == 7 and not loader.persistent_workers
    targets = torch.cat([y for _, y in loader]).tolist()
    assert targets == [s.target for s in dm.train_samples]  # sample order, no shuffling, nothing dropped
    x, y = next(iter(dm.eval_loader()))  # default: the validation set, the DataModule's batch size
    assert x.dtype == torch.uint8 and len(y) == 5
    assert y.tolist() == [s.target for s in dm.valid_samples[:5]]
    plain = dm.dataset(dm.valid_samples, train=False)
    assert torch.equal(x[0], plain[0][0])  # the eval transform: what validation sees
    with pytest.raises(LightcycleError, match="split must be train or valid, got 'test'"):
        dm.eval_loader("test")


def test_feature_loader_serves_what_the_feature_pass_wrote(image_folder, tmp_path):
    from lightcycle.module import VisionModule

    dm = _datamodule(image_folder)
    with pytest.raises(LightcycleError, match="no precomputed features are being served"):
        dm.feature_loader("train")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False)
    write_features(model.backbone, dm, tmp_path, batch_size=3)
    assert (tmp_path / "done").is_file() and model.backbone.training  # its mode given back
    dm.serve_features(PrecomputedFeatures(tmp_path))
    valid = dm.val_dataloader()
    features, targets = next(iter(valid))
    with torch.inference_mode():
        model.eval()
        expected = model.backbone(dm.batch_transform(next(iter(dm.eval_loader("valid")))[0]))
    np.testing.assert_allclose(features.numpy(), expected.numpy(), atol=1e-5)
    assert targets.tolist() == [s.target for s in dm.valid_samples[:5]]
    train = dm.train_dataloader()
    assert train.drop_last and len(train.dataset) == len(dm.train_samples)
    dm.serve_images()
    assert next(iter(dm.val_dataloader()))[0].shape[-1] == 32
