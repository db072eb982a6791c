"""Top losses show the loss validation reports: with label smoothing on, each image's unsmoothed
cross-entropy (smoothing would lift every confident right answer), whose mean is val_loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightcycle.data import FolderDataModule
from lightcycle.interpretation.collect import collect
from lightcycle.module import VisionModule
from tests.helpers import quick_trainer


def test_top_losses_are_the_unsmoothed_losses_validation_reports(image_folder):
    torch.manual_seed(0)
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, label_smoothing=0.3).eval()
    result = collect(model, dm)
    outputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    assert torch.allclose(model.task.per_sample_loss(outputs, targets), F.cross_entropy(outputs, targets, reduction="none"))
    val_loss = quick_trainer().validate(model, datamodule=dm, verbose=False)[0]["val_loss"]
    assert float(result.losses.mean()) == pytest.approx(val_loss, rel=1e-4)
