"""Point coordinates: one convention and one pixel-error formula for training, metrics and interpretation."""

from __future__ import annotations

import numpy as np
import torch

from lightcycle.metrics import PointDistance
from lightcycle.point_coords import distances_px, scale_points, unscale_points


def test_pixels_round_trip_and_a_flip_is_a_sign_change():
    xy = np.array([[0.0, 0.0], [47.0, 39.0], [12.5, 7.25]])
    scaled = scale_points(xy, 48, 40)
    np.testing.assert_allclose(unscale_points(scaled, 48, 40), xy, atol=1e-12)
    flipped = xy.copy()
    flipped[:, 0] = 48 - 1 - flipped[:, 0]
    np.testing.assert_allclose(scale_points(flipped, 48, 40)[:, 0], -scaled[:, 0], atol=1e-12)
    as_tensor = unscale_points(torch.from_numpy(scaled), 48, 40)
    assert isinstance(as_tensor, torch.Tensor) and torch.allclose(as_tensor, torch.from_numpy(xy))


def test_the_metric_and_the_per_image_distances_are_one_formula():
    """Two pictures of different sizes: an error of 0.1 in [-1, 1] units is 0.05 of each picture's side."""
    true = torch.tensor([[[0.0, 0.0]], [[0.5, -0.5]]])
    sizes = torch.tensor([[[200.0, 100.0]], [[40.0, 40.0]]])
    target = torch.cat([true, sizes], 1)  # [B, K + 1, 2]
    pred = true + torch.tensor([[[0.1, 0.0]], [[0.0, 0.1]]])
    per_point = distances_px(pred.reshape(2, -1), target)
    torch.testing.assert_close(per_point, torch.tensor([[10.0], [2.0]]))
    metric = PointDistance()
    metric.update(pred, target)
    torch.testing.assert_close(metric.compute(), per_point.mean())
