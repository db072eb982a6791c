"""With EMA, the best checkpoint (saved weights-only) holds the averaged weights that were validated: validating
it gives the val_loss that chose it, and predict, interpret and export read those weights."""

from __future__ import annotations

import lightning as L
import pytest
from hydra import compose, initialize_config_dir

from lightcycle.callbacks.ema import EMA
from lightcycle.module import VisionModule
from lightcycle.run import config_callbacks, config_dir
from lightcycle.run.callbacks import is_best_checkpoint
from tests.helpers import quick_trainer, tiny_datamodule


def checkpoint_callbacks(output_dir, stage_prefix: str = "") -> list[L.Callback]:
    """The run's checkpoints as lightcycle-train configures them (the best one weights-only)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={output_dir}"])
    callbacks = [cb for cb in config_callbacks(cfg, logger=False) if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint)]
    for cb in callbacks:
        if is_best_checkpoint(cb):
            cb.filename = stage_prefix + cb.filename  # as a recipe names its stages' best checkpoints
    return callbacks


@pytest.mark.parametrize("prefix", ["", "stage1-"])
def test_the_best_checkpoint_validates_at_the_loss_that_chose_it(tmp_path, prefix):
    L.seed_everything(0, verbose=False)
    dm = tiny_datamodule("classification", tmp_path)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    callbacks = checkpoint_callbacks(tmp_path, prefix)
    (best,) = [cb for cb in callbacks if is_best_checkpoint(cb)]
    assert best.save_weights_only
    quick_trainer(max_epochs=2, enable_checkpointing=True, callbacks=[EMA(decay=0.9), *callbacks]).fit(model, datamodule=dm)
    (path,) = (tmp_path / "checkpoints").glob(f"{prefix}best-*.ckpt")
    assert str(path) == best.best_model_path
    loaded = VisionModule.load(path)
    validated = quick_trainer().validate(loaded, datamodule=dm, verbose=False)[0]["val_loss"]
    assert validated == pytest.approx(float(best.best_model_score), rel=1e-5)
