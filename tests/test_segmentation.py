"""Segmentation (CamVid layout): masks, codes, void, bad masks, aligned augmentation, U-Net, metrics, a fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightcycle.data import SegmentationDataModule
from lightcycle.data.transforms import Normalization, train_transform
from lightcycle.errors import LightcycleError
from lightcycle.metrics import MeanIoU, PixelAccuracy
from lightcycle.models.backbone import backbone_layer_groups, create_encoder
from lightcycle.models.unet import UnetDecoder
from lightcycle.module import VisionModule
from lightcycle.tasks import SegmentationTask
from tests.helpers import CODES, make_camvid, quick_trainer

def test_camvid_layout_codes_void_and_split(tmp_path):
    dm = SegmentationDataModule(make_camvid(tmp_path / "camvid"), size=32, num_workers=0, void_code="Void")
    dm.setup("fit")
    assert dm.codes == list(CODES) and dm.void_index == 2
    assert len(dm.train_samples) == 9 and {s.path.name for s in dm.valid_samples} == {"img9.jpg", "img10.jpg", "img11.jpg"}
    x, y = dm.val_dataloader().dataset[0]
    assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.long
    assert set(y.unique().tolist()) <= {0, 1, 2}  # nearest interpolation: no blended codes
    task = dm.make_task()
    assert task.void_index == 2 and task.class_names == list(CODES)
    with pytest.raises(LightcycleError, match="void_code='sky' is not in"):
        SegmentationDataModule(tmp_path / "camvid", num_workers=0, void_code="sky").setup("fit")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("size", r"img3_P.png is 20x20 but the image is 44x36"),
        ("value", r"img3_P.png has value\(s\) \[7\] outside codes.txt"),
        ("missing", r"img3.jpg: no mask \(expected .*img3_P.png\)"),
    ],
)
def test_bad_masks_are_named_or_skipped(tmp_path, damage, message):
    root = make_camvid(tmp_path / "camvid")
    mask_path = root / "labels" / "img3_P.png"
    if damage == "size":
        Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(mask_path)
    elif damage == "value":
        arr = np.asarray(Image.open(mask_path)).copy()
        arr[0, 0] = 7
        Image.fromarray(arr, mode="L").save(mask_path)
    else:
        mask_path.unlink()
    with pytest.raises(LightcycleError, match=message):
        SegmentationDataModule(root, num_workers=0).setup("fit")
    dm = SegmentationDataModule(root, num_workers=0, on_bad="skip")
    dm.setup("fit")
    assert len(dm.train_samples) == 8 and len(dm.valid_samples) == 3


def _square_case() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    image[20:36, 8:24] = 255  # a white square left of centre
    mask[20:36, 8:24] = 1
    return image, mask


def test_flip_moves_mask_with_image_exactly():
    import albumentations as A

    image, mask = _square_case()
    out = A.Compose([A.HorizontalFlip(p=1.0)])(image=image, mask=mask)
    assert np.array_equal(np.argwhere(out["mask"] == 1), np.argwhere(out["image"][..., 0] == 255))
    assert out["mask"][20:36, 40:56].all() and not out["mask"][:, :32].any()  # mirrored: x 8..23 -> 40..55


def test_augmentation_keeps_mask_on_the_square():
    """Through the real training pipeline (flips, rotate, zoom, lighting), mask = bright pixels."""
    image, mask = _square_case()
    transform = train_transform(48, Normalization(), "top_down", max_zoom=1.3)
    for seed in range(12):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        x, m = out["image"], out["mask"].numpy()
        assert set(np.unique(m).tolist()) <= {0, 1}
        bright = (x[0] > x[0].min() + 0.5 * (x[0].max() - x[0].min())).numpy()
        iou = (bright & (m == 1)).sum() / max(1, (bright | (m == 1)).sum())
        assert iou > 0.85, (seed, iou)


def test_metrics_match_hand_computed_values():
    # 2x3 image, 3 codes, code 2 = void. Target and prediction per pixel:
    target = torch.tensor([[[0, 0, 1], [1, 1, 2]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 0]]])
    probs = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    acc, miou = PixelAccuracy(3, ignore_index=2), MeanIoU(3, ignore_index=2)
    acc.update(probs, target)
    miou.update(probs, target)
    # Non-void pixels: 5, right: (0,0), (0,2), (1,0) -> 3/5.
    assert float(acc.compute()) == pytest.approx(3 / 5)
    # class 0: target 2 px, predicted 2 px (non-void), both 1 -> 1 / (2 + 2 - 1) = 1/3;
    # class 1: target 3 px, predicted 3 px, both 2 -> 2 / (3 + 3 - 2) = 1/2; void left out.
    assert float(miou.compute()) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert torch.isnan(miou.per_class[2])
    task = SegmentationTask(list(CODES), void_index=2)
    assert task.unflip(probs).equal(probs.flip(-1))
    loss = task.loss(torch.randn(1, 3, 2, 3), target)
    assert torch.isfinite(loss)


def test_unet_output_size_and_layer_groups():
    encoder = create_encoder("resnet18")
    decoder = UnetDecoder(encoder.feature_info.channels(), num_classes=4)
    x = torch.randn(2, 3, 33, 45)  # odd sizes: each block upsamples to its skip's exact size
    assert decoder(encoder(x), size=x.shape[-2:]).shape == (2, 4, 33, 45)
    assert len(backbone_layer_groups(encoder)) == 5  # stem + 4 stages, like the pooled resnet
    model = VisionModule(SegmentationTask(list(CODES), void_index=2), backbone="resnet18", pretrained=False)
    assert len(model.layer_groups()) == 6
    assert model(torch.randn(1, 3, 40, 40)).shape == (1, 3, 40, 40)
    model.freeze_to(-1)
    assert not model.backbone.conv1.weight.requires_grad and model.head.classifier.weight.requires_grad


def test_short_fit_reports_metrics_and_per_class_iou(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    dm = SegmentationDataModule(make_camvid(tmp_path / "camvid"), size=32, batch_size=3, num_workers=0, void_code="void")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="resnet18", pretrained=False, lr=3e-3)
    logger = CSVLogger(tmp_path / "logs", name="seg")
    trainer = quick_trainer(max_epochs=2, logger=logger)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert set(metrics) == {"val_loss", "val_miou", "val_pixel_accuracy"}
    assert 0.0 <= metrics["val_miou"] <= 1.0 and 0.0 <= metrics["val_pixel_accuracy"] <= 1.0
    logged = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()[0]
    assert "val_iou/background" in logged and "val_iou/void" not in logged
