"""Points (BIWI layout): scaling to [-1, 1], bad rows, points following augmentation, flip pairs, metric, a fit."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from lightcycle.data import PointsDataModule
from lightcycle.data.base import Sample
from lightcycle.data.points import PointsTarget, scale_points, to_original_pixels, transform_points, unscale_points
from lightcycle.data.transforms import Normalization, eval_transform, train_transform
from lightcycle.errors import LightcycleError
from lightcycle.metrics import PointDistance
from lightcycle.module import VisionModule
from lightcycle.tasks import PointsTask
from tests.helpers import make_biwi, quick_trainer


def test_biwi_layout_and_scaling_per_image_size(tmp_path):
    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, num_workers=0)
    dm.setup("fit")
    assert dm.num_points == 2 and len(dm.train_samples) == 9 and len(dm.valid_samples) == 3
    dataset = dm.val_dataloader().dataset
    for sample, (x, y) in zip(dataset.samples, (dataset[i] for i in range(len(dataset)))):
        w, h = sample.target.size
        assert y.shape == (3, 2) and y[-1].tolist() == [w, h]
        xy = np.asarray(sample.target.xy)
        expected = scale_points(xy * [32 / w, 32 / h], 32, 32)  # squish resize, scaled with each image's size
        assert np.allclose(y[:-1].numpy(), expected, atol=1e-5)
        assert np.allclose(to_original_pixels(y[:-1].numpy(), (32, 32), (w, h)), xy, atol=1e-4)
    assert np.allclose(unscale_points(scale_points(np.array([[0.0, 0.0], [47.0, 39.0]]), 48, 40), 48, 40),
                       [[0, 0], [47, 39]])


@pytest.mark.parametrize("damage, message", [
    ("outside", r"face4.jpg: point 1 \(99, 12\) is outside the 32x32 image \(points.csv line 6\)"),
    ("missing", r"face4: file not found \(points.csv line 6\)"),
    ("text", r"face4.jpg: coordinates are not all numbers"),
])
def test_bad_rows_are_named_or_skipped(tmp_path, damage, message):
    root = make_biwi(tmp_path / "biwi")
    lines = (root / "points.csv").read_text().splitlines()
    if damage == "outside":
        lines[5] = "face4,10,12,99,12"
    elif damage == "missing":
        (root / "images" / "face4.jpg").unlink()
    else:
        lines[5] = "face4,ten,12,16,12"
    (root / "points.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LightcycleError, match=message):
        PointsDataModule(root, num_workers=0).setup("fit")
    dm = PointsDataModule(root, num_workers=0, on_bad="skip")
    dm.setup("fit")
    assert len(dm.train_samples) == 8


def _square(size: int = 64, centre: tuple[int, int] = (20, 28)) -> tuple[np.ndarray, PointsTarget]:
    image = np.zeros((size, size, 3), np.uint8)
    cx, cy = centre
    image[cy - 6 : cy + 7, cx - 6 : cx + 7] = 255
    return image, PointsTarget(((float(cx), float(cy)),), (size, size))


def test_flip_moves_point_exactly_and_swaps_pairs_only_when_mirrored():
    image, target = _square()
    _, points, mirrored = transform_points(image, target, A.Compose([A.HorizontalFlip(p=1)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False)))
    assert mirrored and points[0].tolist() == [63 - 20, 28]
    assert np.allclose(scale_points(points, 64, 64), -scale_points(np.array([[20.0, 28.0]]), 64, 64) * [1, -1])
    rotate180 = A.Compose([A.HorizontalFlip(p=1), A.VerticalFlip(p=1)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    assert not transform_points(image, target, rotate180)[2]  # a rotation is not a mirror image

    pair = PointsTarget(((10.0, 30.0), (50.0, 30.0)), (64, 64), flip_pairs=((0, 1),))
    flip = A.Compose([A.HorizontalFlip(p=1), A.Normalize(), A.pytorch.ToTensorV2()],
                     keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    _, y = PointsDataModule.encode(image, Sample(Path("x.jpg"), pair), flip)
    # Mirrored: the point now at x=53 is the old point 0, but keeps label 0's meaning ("left"), so the
    # label-0 slot holds the point at the image left (old point 1 at 63-50=13).
    assert unscale_points(y[:-1].numpy(), 64, 64).round(3).tolist() == [[13.0, 30.0], [53.0, 30.0]]


def test_augmentation_keeps_point_on_the_square():
    """Through the real training pipeline (flips, rotate, zoom, lighting), the point stays on the square."""
    image, target = _square()
    transform = train_transform(48, Normalization(), "top_down", max_zoom=1.3, keypoints=True)
    for seed in range(12):
        transform.set_random_seed(seed)
        x, y = PointsDataModule.encode(image, Sample(Path("x.jpg"), target), transform)
        bright = x[0] > x[0].min() + 0.5 * (x[0].max() - x[0].min())
        ys, xs = torch.nonzero(bright, as_tuple=True)
        centre = np.array([xs.float().mean(), ys.float().mean()])
        point = unscale_points(y[0].numpy(), 48, 48)
        assert np.abs(point - centre).max() < 1.0, (seed, point, centre)
    x, y = PointsDataModule.encode(image, Sample(Path("x.jpg"), target), eval_transform(32, Normalization(), keypoints=True))
    assert np.allclose(to_original_pixels(y[0].numpy(), (32, 32), (64, 64)), [20, 28], atol=1e-4)


def test_distance_metric_uses_each_original_size():
    # Two images: 100x50 and 20x20; errors of 0.1 in x (normalised) = 5 px and 1 px.
    target = torch.tensor([[[0.0, 0.0], [100.0, 50.0]], [[0.5, 0.5], [20.0, 20.0]]])
    pred = torch.tensor([[[0.1, 0.0]], [[0.5, 0.6]]])
    metric = PointDistance()
    metric.update(pred, target)
    assert float(metric.compute()) == pytest.approx((5.0 + 1.0) / 2)


@pytest.mark.parametrize("y_range", [None, (-1.2, 1.5)])
def test_unflip_negates_x_and_swaps_pairs(y_range):
    task = PointsTask(2, y_range=y_range, flip_pairs=[[0, 1]], head="pooled")
    raw = torch.randn(3, 4) * 0.5
    coords = task.activation(raw)
    back = task.activation(task.unflip(raw))
    expected = coords[:, [1, 0]].clone()
    expected[..., 0] *= -1
    if y_range is None:
        assert torch.allclose(back, expected)
    else:  # only values the range can express survive the round trip
        ok = (expected[..., 0] > y_range[0]) & (expected[..., 0] < y_range[1])
        assert torch.allclose(back[ok], expected[ok], atol=1e-4)


def test_short_fit_reports_metrics(tmp_path):
    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, batch_size=3, num_workers=0, y_range=[-1.1, 1.1], head="pooled")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="resnet18", pretrained=False, lr=3e-3)
    trainer = quick_trainer(max_epochs=2)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert set(metrics) == {"val_loss", "val_distance_px"}
    assert metrics["val_distance_px"] > 0
