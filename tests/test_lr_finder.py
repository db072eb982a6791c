"""LR range test: fastai's suggestion maths on known curves, exact restore, and a sensible answer."""

from __future__ import annotations

import copy
import random

import lightning as L
import numpy as np
import pytest
import torch

from lightcycle.callbacks.lr_finder import LRFinder, lr_find
from lightcycle.lr_range import (
    LRFindResult,
    SmoothedLoss,
    minimum,
    slide,
    steep,
    suggest,
    suggestion_window,
    sweep_lr,
    valley,
)
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule

LRS = np.logspace(-7, 1, 13)


# --- pure suggestion maths ----------------------------------------------------------------------
def test_valley_takes_two_thirds_down_the_longest_valley():
    # fastai's loop: the valley starts 2 before its first decreasing point (4) -> start 2, end 10,
    # idx = 2 + int(8/3) + int(8/3/2) = 5
    losses = [1, 1, 1, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 1, 2]
    lr, (x, y) = valley(LRS, losses, 100)
    assert lr == pytest.approx(LRS[5]) and x == lr and y == pytest.approx(0.8)


def test_steep_is_the_largest_drop_per_log_lr():
    losses = [2.0, 1.95, 1.9, 1.2, 1.15, 1.1, 1.05, 1.0, 0.98, 0.97, 0.96, 1.5, 3.0]
    lr, (x, y) = steep(LRS, losses, 100)
    assert lr == pytest.approx(LRS[2]) and y == pytest.approx(1.9)


def test_minimum_is_a_tenth_of_the_lr_at_the_lowest_loss():
    losses = [2.0, 1.8, 1.5, 1.2, 1.0, 0.7, 0.5, 0.4, 0.6, 0.9, 1.5, 2.0, 3.0]
    lr, (x, y) = minimum(LRS, losses, 100)
    assert lr == pytest.approx(LRS[7] / 10) and x == pytest.approx(LRS[7]) and y == pytest.approx(0.4)


def test_slide_on_straight_and_curved_losses():
    lrs = np.logspace(-6, 0, 30)
    straight = np.linspace(2.0, 1.0, 30)  # constant gradient: the first interval already agrees
    assert slide(lrs, straight, 100)[0] == pytest.approx(lrs[-16])
    curved = (np.arange(30) / 3.0) ** 2  # gradients 15 apart always differ: slides to the start
    assert slide(lrs, curved, 100)[0] == pytest.approx(lrs[0])


def test_window_skips_head_and_tail_and_cuts_at_nan():
    lrs = list(range(1, 31))
    losses = [float(i) for i in range(30)]
    w_lrs, w_losses = suggestion_window(lrs, losses, num_it=30)  # skip 3 and last 5
    assert list(w_lrs) == lrs[3:-5]
    losses[12] = float("nan")
    w_lrs, w_losses = suggestion_window(lrs, losses, num_it=30)
    assert list(w_lrs) == lrs[3:12] and not np.isnan(w_losses).any()


def test_too_short_a_curve_is_a_clear_error():
    with pytest.raises(LightcycleError, match="too few usable points"):
        suggest([1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2], [1, 1, 1, 1, 9, 99], num_it=100)


def test_sweep_and_smoothing_match_fastai():
    assert sweep_lr(0, 1e-7, 10, 100) == pytest.approx(1e-7)
    assert sweep_lr(50, 1e-7, 10, 100) == pytest.approx(1e-3)
    smoother = SmoothedLoss(0.98)
    assert [smoother.update(2.0) for _ in range(3)] == pytest.approx([2.0] * 3)  # debiased: no warm-up bias
    smoother = SmoothedLoss(0.5)
    smoother.update(1.0)
    assert smoother.update(3.0) == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)


def test_result_round_trips_as_plain_data():
    lrs = list(np.logspace(-7, 1, 40))
    losses = list(np.concatenate([np.linspace(2, 0.5, 30), np.linspace(0.6, 5, 10)]))
    result = LRFindResult.from_curve(lrs, losses, num_it=40)
    assert set(result.suggestions) == {"valley", "steep", "minimum", "slide"}
    again = LRFindResult.from_dict(copy.deepcopy(result.to_dict()))
    assert again == result and again.suggestion == result.suggestions["valley"]


# --- against a real Trainer ---------------------------------------------------------------------
def _setup(root, **model_kwargs):
    dm = FolderDataModule(root=root, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, **model_kwargs)
    return dm, model


def _trainer(callbacks, **kwargs):
    args = dict(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    args.update(kwargs)
    return L.Trainer(callbacks=callbacks, **args)


class _Before(L.Callback):
    """Give the optimizer real state (one step), then remember everything the finder must restore."""

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        x = torch.randn(4, 3, 32, 32)
        pl_module.task.loss(pl_module(x), torch.tensor([0, 1, 2, 0])).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.weights = copy.deepcopy(pl_module.state_dict())
        self.opt = copy.deepcopy(opt.state_dict())
        self.rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        self.modes = [m.training for m in pl_module.modules()]


class _After(L.Callback):
    def __init__(self, before):
        self.before = before

    def on_train_start(self, trainer, pl_module):
        b = self.before
        state = pl_module.state_dict()
        assert state.keys() == b.weights.keys()
        for k, v in b.weights.items():  # weights and BatchNorm running stats, bit-exact
            assert torch.equal(state[k], v), k
        assert any("running_mean" in k for k in state)
        opt = trainer.optimizers[0].state_dict()
        assert opt["param_groups"] == b.opt["param_groups"]
        assert opt["state"].keys() == b.opt["state"].keys() and opt["state"]
        for i, s in b.opt["state"].items():
            for name, value in s.items():
                assert torch.equal(opt["state"][i][name], value), (i, name)
        assert torch.equal(torch.get_rng_state(), b.rng[0])
        assert np.array_equal(np.random.get_state()[1], b.rng[1])
        assert random.getstate() == b.rng[2]
        assert [m.training for m in pl_module.modules()] == b.modes
        assert all(p.grad is None for p in pl_module.parameters())
        assert trainer.global_step == 0
        self.checked = True
        raise _Done()


class _Done(Exception):
    pass


def test_finder_restores_weights_optimizer_bn_and_rng_exactly(image_folder):
    dm, model = _setup(image_folder, lr=1e-3)
    before = _Before()
    finder = LRFinder(num_it=20, apply=False, plot=False)
    after = _After(before)
    with pytest.raises(_Done):
        _trainer([before, finder, after]).fit(model, datamodule=dm)
    assert after.checked and finder.result is not None and len(finder.result.lrs) >= 10


def test_frozen_backbone_sweep_keeps_group_ratios_and_is_not_repeated(image_folder, tmp_path):
    dm, model = _setup(image_folder, lr=1e-3, lr_mult=100)
    model.freeze_to(-1)
    finder = LRFinder(num_it=20, dirpath=tmp_path, exit_after=False)
    seen = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["lrs"] = [g["lr"] for g in trainer.optimizers[0].param_groups]
            seen["peaks"] = [g["initial_lr"] for g in trainer.optimizers[0].param_groups]
            raise _Done()

    with pytest.raises(_Done):
        _trainer([finder, Probe()], limit_train_batches=2).fit(model, datamodule=dm)
    lr = finder.result.suggestion
    assert model.hparams.lr == lr and finder.applied_lr == lr
    # every group scaled by the same factor: the peaks are what the module asks for at the new lr
    assert seen["peaks"] == pytest.approx([g["lr"] for g in model.param_groups()])
    assert max(seen["peaks"]) == pytest.approx(lr) and min(seen["peaks"]) == pytest.approx(lr / 100)
    assert not model.backbone.conv1[0].weight.requires_grad  # still frozen
    assert (tmp_path / "lr_find.png").is_file()

    # the stored result comes back from a checkpoint and the sweep does not run again
    restored = LRFinder(num_it=20)
    restored.load_state_dict(copy.deepcopy(finder.state_dict()))
    restored._sweep = lambda *a, **k: pytest.fail("swept again on resume")  # type: ignore[method-assign]
    _, fresh = _setup(image_folder, lr=1e-3)

    class Stop(L.Callback):
        def on_train_start(self, trainer, pl_module):
            raise _Done()

    with pytest.raises(_Done):
        _trainer([restored, Stop()], limit_train_batches=2).fit(fresh, datamodule=dm)
    assert fresh.hparams.lr == lr


def test_a_range_test_costlier_than_its_share_of_the_fit_keeps_the_lr(image_folder, tmp_path):
    """skip_share (a recipe stage's lr_find_share) is judged on the fit's plan: 3 epochs of 2 steps here."""
    dm, model = _setup(image_folder, lr=1e-3)
    finder = LRFinder(num_it=20, dirpath=tmp_path, skip_share=0.5)
    finder._sweep = lambda *a, **k: pytest.fail("swept although 20 iterations are more than half of 6 steps")  # type: ignore[method-assign]

    class Stop(L.Callback):
        def on_train_start(self, trainer, pl_module):
            raise _Done()

    with pytest.raises(_Done):
        _trainer([finder, Stop()], limit_train_batches=2, max_epochs=3).fit(model, datamodule=dm)
    assert model.fit_plan.total_steps == 6 and finder.too_costly(6) and not finder.too_costly(40)
    assert finder.result is None and finder.suggested_lr() is None and model.hparams.lr == 1e-3
    assert not (tmp_path / "lr_find.png").exists()
    with pytest.raises(LightcycleError, match="lr_find.skip_share must be > 0"):
        LRFinder(skip_share=0)


def test_lr_find_function_finds_a_sensible_lr_and_leaves_the_model_alone(image_folder, tmp_path):
    L.seed_everything(0)  # the initial weights otherwise depend on how much randomness earlier tests used
    dm, model = _setup(image_folder, lr=1e-3)
    weights = copy.deepcopy(model.state_dict())
    result = lr_find(model, dm, num_it=60, dirpath=tmp_path, trainer_kwargs={"accelerator": "cpu"})
    assert 1e-5 < result.suggestion < 1.0, result.suggestions
    assert len(result.lrs) <= 60 and result.lrs[0] == pytest.approx(1e-7)
    assert min(result.losses) < result.losses[0]  # it learned something before diverging
    if len(result.lrs) < 60:  # stopped on divergence: fastai's rule
        assert result.losses[-1] > 4 * min(result.losses) or np.isnan(result.losses[-1])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert model.hparams.lr == 1e-3  # apply=False by default
    assert (tmp_path / "lr_find.png").is_file()


def test_first_epoch_still_sees_every_batch_with_persistent_workers(image_folder, tmp_path):
    """Regression: sweeping over the trainer's own persistent-worker loader emptied training epoch 0."""
    dm = FolderDataModule(root=image_folder, size=32, batch_size=4, num_workers=1, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3)
    steps = len(dm.train_dataloader())
    finder = LRFinder(num_it=10, dirpath=tmp_path, plot=False)
    trainer = _trainer([finder], max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert finder.result is not None
    assert trainer.global_step == steps


def test_bad_settings_are_clear_errors():
    with pytest.raises(LightcycleError, match="start_lr"):
        LRFinder(start_lr=1.0, end_lr=0.1)
    with pytest.raises(LightcycleError, match="suggestion"):
        LRFinder(suggestion="best")
