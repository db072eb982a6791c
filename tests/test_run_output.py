"""What a run prints and keeps: no known library noise, a model summary without made-up FLOPs, the best
checkpoint without optimizer state (unless asked), last.ckpt complete and refreshed every epoch; the
README's first command, cut to two steps, prints none of that noise."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from lightcycle.callbacks import ModelSummary
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from lightcycle.quiet import quiet_known_noise
from lightcycle.run import config_callbacks, config_dir
from lightcycle.run.callbacks import is_best_checkpoint
from tests.helpers import quick_trainer, run_train


def train_config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_best_checkpoints_keep_optimizer_state_only_when_asked(tmp_path):
    callbacks = config_callbacks(train_config(f"paths.output_dir={tmp_path}"), logger=False)
    best = [cb for cb in callbacks if is_best_checkpoint(cb)]
    last = [cb for cb in callbacks if getattr(cb, "filename", None) == "last"]
    assert len(best) == 1 and best[0].save_weights_only and best[0].monitor == "val_loss"
    assert len(last) == 1 and not last[0].save_weights_only and last[0].monitor is None  # resume needs it whole
    kept = config_callbacks(train_config(f"paths.output_dir={tmp_path}", "checkpoints.save_optimizer=true"), logger=False)
    assert not [cb for cb in kept if is_best_checkpoint(cb)][0].save_weights_only
    with pytest.raises(LightcycleError, match="checkpoints.save_optimizer must be true or false"):
        config_callbacks(train_config(f"paths.output_dir={tmp_path}", "checkpoints.save_optimizer=sometimes"), logger=False)


class WorseEveryEpoch(L.Callback):
    """Report a validation loss that only grows, so the best checkpoint stays at the first epoch."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.callback_metrics["val_loss"] = torch.tensor(1.0 + trainer.current_epoch)


def test_last_ckpt_is_refreshed_every_epoch_even_when_the_best_is_not(image_folder, tmp_path):
    callbacks = [cb for cb in config_callbacks(train_config(f"paths.output_dir={tmp_path}"), logger=False)
                 if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint)]
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    model = VisionModule(FolderDataModule(image_folder, num_workers=0).make_task(), backbone="test_resnet",
                         pretrained=False)
    quick_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, enable_checkpointing=True,
                  callbacks=[WorseEveryEpoch(), *callbacks]).fit(model, datamodule=dm)
    ckpts = tmp_path / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and "optimizer_states" in last and "callbacks" in last
    (best_path,) = ckpts.glob("best-*.ckpt")
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    assert best["epoch"] == 0 and "optimizer_states" not in best
    assert {"state_dict", "hyper_parameters", "lightcycle_inference"} <= set(best)
    assert best_path.stat().st_size < 0.5 * (ckpts / "last.ckpt").stat().st_size
    assert VisionModule.load(best_path).task.class_names == model.task.class_names  # predict/interpret read it


def test_the_model_summary_leaves_out_flops_it_did_not_count(image_folder, caplog):
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    model = VisionModule(FolderDataModule(image_folder, num_workers=0).make_task(), backbone="test_resnet",
                         pretrained=False)
    with caplog.at_level(logging.INFO, logger="lightcycle"):
        quick_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[ModelSummary()]).fit(
            model, datamodule=dm)
    (summary,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model summary:")]
    assert "backbone" in summary and "trainable params" in summary and "FLOPs" not in summary


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_known_noise_is_filtered_one_message_at_a_time():
    quiet_known_noise()
    quiet_known_noise()  # idempotent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_known_noise()
        from lightning.pytorch.utilities._pytree import _tree_flatten

        _tree_flatten(1)  # builds torch's deprecated LeafSpec inside Lightning
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)  # elsewhere: still shown
    assert len([w for w in caught if "LeafSpec" in str(w.message)]) == 1
    rank_zero, kept = logging.getLogger("lightning.pytorch.utilities.rank_zero"), Keep()  # Lightning's own logger
    rank_zero.addHandler(kept)
    try:
        rank_zero.info("💡 Tip: try installing [litlogger](https://pypi.org/project/litlogger/) to enable LitLogger")
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("TPU available: False, using: 0 TPU cores")
        rank_zero.info("Loading `train_dataloader` to estimate number of stepping batches.")
        rank_zero.info("`Trainer.fit` stopped: `max_epochs=2` reached.")
    finally:
        rank_zero.removeHandler(kept)
    assert kept.messages == ["`Trainer.fit` stopped: `max_epochs=2` reached."]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_known_noise()
        warnings.warn("The number of training batches (2) is smaller than the logging interval Trainer(log_every_n_steps=10).")
        warnings.warn("The number of something else")
    assert [str(w.message) for w in caught] == ["The number of something else"]


# what the libraries printed on every run before lightcycle filtered or avoided it
KNOWN_NOISE = ("LeafSpec", "litlogger", "LitLogger", "Total FLOPs", "`weights_only` was not set",
               "exists and is not empty", "GPU available", "TPU available", "Loading `train_dataloader`",
               "smaller than the logging interval")


@pytest.mark.slow
def test_the_demo_run_prints_none_of_the_known_noise(tmp_path):
    """`lightcycle-train` as the README's first command runs it (demo data, bundled efficientnet_lite0,
    default callbacks, interpretation with the course's views), two training steps long."""
    run_dir = tmp_path / "demo"
    result = run_train(["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    log = (run_dir / "train.log").read_text()
    for noise in KNOWN_NOISE:
        assert noise not in output and noise not in log, noise
    assert "Warning:" not in output  # no Python warning of any library reaches the console
    assert "loaded 294 tensors" in output  # the bundled weights went through the weights_only load
    summary = output[output.index("model summary:"):output.index("in all (")]
    assert "EfficientNet" in summary and "trainable params" in summary and "FLOPs" not in output
    assert output.count("optimizer steps (") == 1  # the one warning this short run deserves
    assert "final metrics" in output and (run_dir / "interpret" / "most_uncertain.csv").is_file()
    ckpts = run_dir / "checkpoints"
    (best,) = ckpts.glob("best-*.ckpt")
    assert best.stat().st_size < 0.5 * (ckpts / "last.ckpt").stat().st_size  # no AdamW moments in the best


@pytest.mark.slow
def test_a_recipe_says_each_choice_once_and_never_an_lr_it_has_not_chosen(image_folder, tmp_path):
    """experiment=fine_tune with data.batch_size=auto and model.lr=auto: the automatic batch size is
    announced once, and no stage header shows a rate before the range test chose it."""
    import re

    run_dir = tmp_path / "ft"
    result = run_train(["data=folder", f"data.root={image_folder}", "data.size=32", "data.num_workers=0",
                        "model.backbone=test_resnet", "model.pretrained=false", "trainer.accelerator=cpu",
                        "experiment=fine_tune", "recipe.epochs=1", "model.lr=auto", "interpret.top_k=0",
                        "show_batch.n=0"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("data.batch_size=auto ->") == 1, output
    headers = [line for line in output.splitlines() if "recipe: stage" in line and "epoch(s)" in line]
    assert len(headers) == 2 and not any(re.search(r"lr [0-9.e-]+ \(auto\)", h) for h in headers), headers
    for noise in KNOWN_NOISE:
        assert noise not in output, noise
