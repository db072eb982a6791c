"""Small data: a run with too few optimizer steps says so before training, and the LR range test is
bounded by the training it precedes (fewer iterations, a loss average that spans the same share)."""

from __future__ import annotations

import logging

import pytest

from lightcycle.callbacks.lr_finder import LRFinder, bounded_num_it, lr_find, shortened_beta
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from lightcycle.plan import MIN_LEARNING_STEPS, few_steps_warning
from tests.helpers import quick_trainer


def test_the_warning_gives_the_numbers_and_what_to_change():
    message = few_steps_warning(12, 6, images=160, batch_size=64)
    assert message.startswith("this run has only 12 optimizer steps (6 epochs of 2 steps: 160 training images in "
                              "batches of 64); with fewer than 100 a model usually ends far short")
    assert "more epochs (50 in all, about 100 steps: trainer.max_epochs)" in message
    assert "data.batch_size=8: about 96 steps" in message  # halved down to 8 at most
    assert "data.batch_size=16: about 176 steps" in few_steps_warning(44, 2, 1440, 64, "recipe.epochs")
    assert "recipe.epochs" in few_steps_warning(44, 2, 1440, 64, "recipe.epochs")
    assert "batch_size" not in few_steps_warning(4, 1, images=36, batch_size=8)  # no smaller batch to suggest
    assert few_steps_warning(MIN_LEARNING_STEPS, 8) is None
    assert few_steps_warning(176, 8, 1440, 64) is None  # the default demo: 22 steps x 8 epochs


def tiny_fit(image_folder, callbacks=(), **trainer_kwargs):
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3)
    quick_trainer(limit_val_batches=0, callbacks=list(callbacks), **trainer_kwargs).fit(model, datamodule=dm)
    return model


def test_a_short_fit_warns_once_before_its_first_step(image_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="lightcycle"):
        tiny_fit(image_folder, max_epochs=2)  # 36 images in batches of 8, ragged last dropped: 4 steps an epoch
    warnings = [r.getMessage() for r in caplog.records if "optimizer steps" in r.getMessage()]
    assert warnings == [few_steps_warning(8, 2, images=36, batch_size=8)]


def test_the_range_test_bound_keeps_a_floor_and_never_lengthens():
    assert bounded_num_it(100, fit_steps=24, max_share=0.5, min_num_it=30) == 30  # the floor
    assert bounded_num_it(100, fit_steps=120, max_share=0.5, min_num_it=30) == 60
    assert bounded_num_it(100, fit_steps=176, max_share=1.0, min_num_it=30) == 100
    assert bounded_num_it(12, fit_steps=4, max_share=0.5, min_num_it=30) == 12  # never more than asked
    assert bounded_num_it(100, fit_steps=4, max_share=None, min_num_it=30) == 100  # unbounded
    assert shortened_beta(0.98, 100, 100) == 0.98
    assert shortened_beta(0.98, 50, 100) == pytest.approx(0.96)
    assert shortened_beta(0.98, 30, 100) == pytest.approx(1 - 0.02 * 100 / 30)


def test_a_bounded_range_test_is_shortened_and_says_why(image_folder, tmp_path, caplog):
    finder = LRFinder(num_it=40, max_share=0.5, min_num_it=10, apply=False, plot=False)
    with caplog.at_level(logging.INFO, logger="lightcycle"):
        tiny_fit(image_folder, [finder], max_epochs=5)  # 20 steps: at most 10 iterations
    assert len(finder.result.lrs) <= 10 and finder.result.num_it == 10
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LR range test: 10 iterations")]
    assert said and "only 20 optimizer steps" in said[0] and "lr_find.max_share=0.5" in said[0]
    assert "beta 0.920" in said[0]


def test_bad_bounds_are_clear_errors(image_folder):
    with pytest.raises(LightcycleError, match="lr_find.max_share"):
        LRFinder(max_share=0)
    with pytest.raises(LightcycleError, match="lr_find.min_num_it"):
        LRFinder(min_num_it=2)
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    with pytest.raises(LightcycleError, match="pass fit_steps"):
        lr_find(VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False), dm, max_share=0.5)
