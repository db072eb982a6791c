"""Heatmaps explain what prediction sees: `Predictor.heatmap` frames the picture as `predict` does and lays the
map back over the part of the picture that input shows; channels-last feature maps (timm's NHWC backbones)
give the same Grad-CAM as the same features handed over channels-first."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lightcycle.data import FolderDataModule
from lightcycle.data.framing import Framing
from lightcycle.inference_config import InferenceConfig
from lightcycle.interpretation import heatmaps
from lightcycle.interpretation.heatmaps import channels_last_features, grad_cam
from lightcycle.module import VisionModule
from lightcycle.predict import Predictor
from lightcycle.predict.predictor import PredictDataset
from lightcycle.data.transforms import eval_transform, normalize_batch


class ChannelsFirst(torch.nn.Module):
    """The same channels-last backbone, its last feature map handed over as [N, C, H, W]."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_features(x).permute(0, 3, 1, 2)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_head(features.permute(0, 2, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_grad_cam_reads_channels_last_feature_maps(image_folder):
    torch.manual_seed(0)
    task = FolderDataModule(image_folder, num_workers=0).make_task()
    model = VisionModule(task, backbone="test_mambaout", pretrained=False, channels_last=False).eval()
    assert channels_last_features(model.backbone)  # timm's output_fmt: MambaOut's features are [N, H, W, C]
    reference = copy.deepcopy(model)
    reference.backbone = ChannelsFirst(reference.backbone)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)  # one model, two layouts of its features
    cams = grad_cam(model, x)
    assert cams.shape == (2, 128, 128)
    assert torch.allclose(cams, grad_cam(reference, x), atol=1e-5)


def trained_predictor(image_folder, resize: str) -> Predictor:
    dm = FolderDataModule(image_folder, size=32, num_workers=0, backbone="test_resnet", resize=resize)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False)
    model.inference_config = InferenceConfig(size=32, framing=Framing(resize))
    return Predictor([model])


@pytest.mark.parametrize("resize, inside", [("crop", (slice(0, 40), slice(4, 44))), ("pad", (slice(0, 40), slice(0, 48)))])
def test_the_heatmap_explains_the_input_predict_sees_and_lies_where_it_came_from(image_folder, monkeypatch, resize, inside):
    predictor = trained_predictor(image_folder, resize)
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)  # 48 wide, 40 high
    seen = {}

    def left_half(model, x, index=None):  # a known map: the input's left half
        seen["x"] = x
        cam = torch.zeros(1, *x.shape[-2:])
        cam[..., : x.shape[-1] // 2] = 1.0
        return cam

    monkeypatch.setattr(heatmaps, "grad_cam", left_half)
    cam = predictor.heatmap(image)
    predicted = PredictDataset([image], eval_transform(32, predictor.normalization, framing=predictor.framing, uint8=True))[0][0]
    assert torch.equal(seen["x"], normalize_batch(predicted[None], predictor.normalization))  # what predict sees
    assert cam.shape == (40, 48)
    outside = np.ones_like(cam, dtype=bool)
    outside[inside] = False
    assert (cam[outside] == 0).all()  # crop: the cut-off ends
    shown = cam[inside]
    middle = (inside[1].start + inside[1].stop) / 2 if resize == "crop" else 24  # pad: the square's middle is the picture's
    columns = np.arange(48)[inside[1]]
    assert (shown[:, columns < middle - 1] > 0.99).all() and (shown[:, columns > middle + 1] < 0.01).all()
