"""Test-time augmentation: merge maths, de-augmenting spatial outputs, streaming, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection

from lightcycle.callbacks.tta import TTA
from lightcycle.tta import (
    AugmentedViews,
    FlipScaleView,
    evaluate_tta,
    flip_scale_views,
    merge_views,
    predict_tta,
    resolve_views,
    tta_batches,
)
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.evaluation import score_batches
from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask, Task
from tests.helpers import quick_trainer




class SpatialTask(Task):
    """A dense task (like segmentation): outputs [B, C, H, W] that move with the image."""

    name = "spatial"
    outputs_move_with_image = True

    def activation(self, output):
        return output.sigmoid()

    def activated_loss(self, activated, target):
        return F.mse_loss(activated, target)

    def metrics(self):
        return MetricCollection({"mse": MeanSquaredError()})

    def unflip(self, output):
        return output.flip(-1)


def mirror_conv() -> nn.Conv2d:
    """A conv whose kernel is left-right symmetric: conv(flip(x)) == flip(conv(x))."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv


def test_merge_maths():
    plain = torch.tensor([[1.0, 0.0]])
    augmented = [torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])]
    # fastai: torch.lerp(mean(aug), plain, beta) = 0.75 * [0.25, 0.75] + 0.25 * [1, 0]
    assert merge_views(plain, augmented, "beta", 0.25) == pytest.approx(torch.tensor([[0.4375, 0.5625]]))
    assert merge_views(plain, augmented, "beta", 1.0) == pytest.approx(plain)
    assert merge_views(plain, augmented, "mean") == pytest.approx(torch.tensor([[0.5, 0.5]]))
    assert merge_views(plain, augmented, "max") == pytest.approx(torch.tensor([[1.0, 1.0]]))
    assert merge_views(plain, [], "beta") is plain


def test_views_are_fixed_and_invertible():
    assert flip_scale_views(4) == [
        FlipScaleView(True, 1.0), FlipScaleView(False, 1.25), FlipScaleView(True, 1.25), FlipScaleView(False, 1.5)
    ]
    x = torch.randn(2, 3, 16, 16)
    view = FlipScaleView(True, 1.5)
    assert view.apply(x).shape[-2:] == (24, 24)
    assert view.undo(view.apply(x), SpatialTask(), x).shape == x.shape


def test_spatial_outputs_are_unflipped_before_merging():
    torch.manual_seed(0)
    model, task = mirror_conv(), SpatialTask()
    x = torch.randn(4, 3, 12, 12)
    plain = task.activation(model(x)).detach()
    (merged, _), = list(tta_batches(model, task, [(x, None)], n=1, merge="mean"))  # the flip view
    assert torch.allclose(merged, plain, atol=1e-6)  # equivariant model + unflip = no change
    class Forgetful(SpatialTask):
        def unflip(self, output):
            return output

    (broken, _), = list(tta_batches(model, Forgetful(), [(x, None)], n=1, merge="mean"))  # no unflip
    assert not torch.allclose(broken, plain, atol=1e-3)
    smooth = F.interpolate(torch.randn(4, 3, 3, 3), size=12, mode="bilinear", align_corners=True)
    smooth_plain = task.activation(model(smooth)).detach()
    (scaled, _), = list(tta_batches(model, task, [(smooth, None)], n=4, merge="beta"))  # flips and zooms
    assert scaled.shape == smooth_plain.shape  # resized back onto the plain grid
    assert (scaled - smooth_plain).abs().mean() < 0.02


def test_streaming_reads_one_batch_per_merged_output():
    calls = {"model": 0, "batches": 0}

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = mirror_conv()

        def forward(self, x):
            calls["model"] += 1
            return self.conv(x)

    def batches():
        for _ in range(100):
            calls["batches"] += 1
            x = torch.randn(2, 3, 8, 8)
            yield x, torch.rand(2, 2, 8, 8)

    stream = tta_batches(Counting(), SpatialTask(), batches(), n=3)
    merged, target = next(stream)
    assert calls == {"model": 4, "batches": 1}  # n + 1 views of one batch, nothing more
    assert merged.shape == target.shape
    scores = score_batches(SpatialTask(), (next(stream) for _ in range(5)), "tta")
    assert calls["batches"] == 6 and set(scores) == {"tta_loss", "tta_mse"}


def test_predict_tta_returns_merged_probabilities():
    model = VisionModule(ClassificationTask(["a", "b", "c"]), backbone="test_resnet", pretrained=False)
    loader = [(torch.randn(3, 3, 32, 32), torch.zeros(3)) for _ in range(2)]
    probs = predict_tta(model, model.task, loader, n=2, merge="mean")
    assert probs.shape == (6, 3) and torch.allclose(probs.sum(1), torch.ones(6), atol=1e-5)
    assert model.training  # mode restored


def test_augmented_views_are_seeded_and_differ_from_plain(image_folder):
    dm = FolderDataModule(root=image_folder, size=32, batch_size=4, num_workers=0, max_zoom=1.5)
    dm.setup("fit")
    a = AugmentedViews(dm, dm.valid_samples[:3], n=3, seed=7)
    b = AugmentedViews(dm, dm.valid_samples[:3], n=3, seed=7)
    views, target = a[1]
    assert views.shape == (4, 3, 32, 32)
    assert torch.equal(views, b[1][0]) and torch.equal(views, a[1][0])  # reproducible, order-independent
    assert torch.equal(views[0], dm.dataset(dm.valid_samples[:3], train=False)[1][0])  # view 0 is plain
    assert not torch.equal(views[1], views[0]) and not torch.equal(views[1], views[2])
    assert resolve_views(dm.make_task(), "auto", dm) == "augment"
    assert resolve_views(SpatialTask(), "auto", dm) == "flip_scale"


def test_callback_reports_deterministic_tta_metrics(image_folder):
    dm = FolderDataModule(root=image_folder, size=32, batch_size=6, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False)
    cb = TTA(n=2, seed=3)
    trainer = quick_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[cb])
    trainer.fit(model, datamodule=dm)
    assert set(cb.final_metrics) == {"tta_loss", "tta_accuracy", "tta_error_rate"}
    again = evaluate_tta(model, model.task, dm, n=2, seed=3)
    assert again == cb.final_metrics
    assert cb.final_metrics["tta_accuracy"] + cb.final_metrics["tta_error_rate"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"merge": "median"}, "tta.merge"), ({"n": -1}, "tta.n"), ({"beta": 2.0}, "tta.beta"), ({"views": "x"}, "tta.views")],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(LightcycleError, match=message):
        TTA(**kwargs)


def test_cli_section():
    from omegaconf import OmegaConf

    from lightcycle.run.callbacks import tta_section

    base = {"beta": 0.25, "merge": "beta", "views": "auto", "seed": 1}
    assert tta_section(OmegaConf.create({"tta": {"n": 0, **base}})) == []
    (cb,) = tta_section(OmegaConf.create({"tta": {"n": 4, **base}}))
    assert (cb.n, cb.beta, cb.merge, cb.seed) == (4, 0.25, "beta", 1)
    (cb,) = tta_section(OmegaConf.create({"tta": True, "seed": 5}))  # the contract's `tta=true` (tta.n=4)
    assert (cb.n, cb.seed) == (4, 5)
    with pytest.raises(LightcycleError, match="tta.merge"):
        tta_section(OmegaConf.create({"tta": {"n": 2, **base, "merge": "vote"}}))
