"""trainer=cpu|gpu|ddp|ddp_cpu|fp16|bf16: each preset composes to what Lightning needs, bf16 runs on CPU."""

from __future__ import annotations

import math
import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lightcycle.cli.common import config_dir
from lightcycle.data import FolderDataModule
from lightcycle.module import VisionModule


def _trainer_cfg(preset: str) -> dict:
    with initialize_config_dir(config_dir(), version_base=None):
        cfg = compose("train", overrides=[f"trainer={preset}"])
    return OmegaConf.to_container(cfg.trainer, resolve=False)  # paths need a live Hydra run


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("default", {"accelerator": "auto", "precision": "32-true"}),
        ("cpu", {"accelerator": "cpu", "devices": 1}),
        ("gpu", {"accelerator": "gpu", "devices": 1}),
        ("ddp", {"accelerator": "gpu", "strategy": "ddp_find_unused_parameters_true"}),
        ("ddp_cpu", {"accelerator": "cpu", "devices": 2, "strategy": "ddp_find_unused_parameters_true"}),
        ("fp16", {"precision": "16-mixed"}),
        ("bf16", {"precision": "bf16-mixed"}),
    ],
)
def test_presets_compose(preset: str, expected: dict) -> None:
    cfg = _trainer_cfg(preset)
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["_target_"] == "lightning.Trainer" and cfg["log_every_n_steps"] == 10


def test_bf16_mixed_precision_trains_on_cpu(image_folder) -> None:
    dm = FolderDataModule(root=image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3)
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    assert torch.bfloat16 in seen  # autocast really ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_lr_finder_sweeps_under_bf16_and_restores_the_weights(image_folder) -> None:
    from lightcycle.callbacks.lr_finder import LRFinder

    dm = FolderDataModule(root=image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    finder = LRFinder(num_it=12, apply=False, plot=False, exit_after=True)
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[finder],
    )
    trainer.fit(model, datamodule=dm)
    assert finder.result is not None and math.isfinite(finder.result.suggestion) and len(finder.result.lrs) >= 6
    assert torch.bfloat16 in seen
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # swept in bf16, restored exactly


@pytest.mark.parametrize("preset", ["default", "cpu", "gpu", "ddp", "ddp_cpu", "fp16", "bf16"])
def test_every_preset_takes_the_documented_keys_as_written(preset: str) -> None:
    # trainer.num_nodes and trainer.accumulate_grad_batches without "+": the README's commands use them so
    with initialize_config_dir(config_dir(), version_base=None):
        cfg = compose("train", overrides=[f"trainer={preset}", "trainer.num_nodes=2", "trainer.accumulate_grad_batches=3"])
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.accumulate_grad_batches == 3
