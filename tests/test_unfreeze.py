"""Gradual unfreezing: which groups train when, their learning rates, optimizer state, resume.

timm's `test_resnet` has resnet18's layout (stem, 4 stages; + head = 6 groups) at 4% of its weights.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightcycle.callbacks.unfreeze import GradualUnfreezing
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask

TASK = ClassificationTask(["a", "b"])




def loader(n: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 2), batch_size=2)


def model() -> VisionModule:
    return VisionModule(TASK, backbone="test_resnet", pretrained=False, lr=1e-2, lr_mult=1.0, schedule={"name": "constant"})


class Probe(L.Callback):
    """Per epoch: which groups have trainable non-BN params, group peak LRs, AdamW step counts."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module):
        groups = pl_module.layer_groups()
        trainable = [i for i, g in enumerate(groups) if any(p.requires_grad for p in g if id(p) not in pl_module._bn_params)]
        opt = trainer.optimizers[0]
        peaks = {}
        for g in opt.param_groups:
            peaks[int(g["name"].split("_")[0][5:])] = g["initial_lr"]
        state = opt.state
        self.epochs.append(
            {
                "trainable": trainable,
                "peaks": [peaks[i] for i in sorted(peaks)],
                "conv1_state": pl_module.backbone.conv1[0].weight in state,
                "bn1_trainable": pl_module.backbone.bn1.weight.requires_grad,
                "layer4_steps": int(state[pl_module.backbone.layer4[0].conv1.weight]["step"])
                if pl_module.backbone.layer4[0].conv1.weight in state
                else 0,
                "head_steps": int(state[next(pl_module.head.parameters())]["step"]) if next(pl_module.head.parameters()) in state else 0,
            }
        )


def fit(module, callbacks, max_epochs, ckpt_path=None):
    trainer = L.Trainer(
        max_epochs=max_epochs, limit_train_batches=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, accelerator="cpu",
    )
    trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer


def test_plan_mapping():
    cb = GradualUnfreezing([2, 4])
    assert [cb.freeze_index(e, 6) for e in range(6)] == [5, 5, 4, 4, 0, 0]  # head, +stage4, all
    cb = GradualUnfreezing([1, 2], last_unfreezes_all=False, per_milestone=2, initial_trainable=2)
    assert [cb.freeze_index(e, 6) for e in range(3)] == [4, 2, 0]
    cb = GradualUnfreezing([3])  # fastai v1: fit frozen, then unfreeze()
    assert [cb.freeze_index(e, 6) for e in (0, 2, 3)] == [5, 5, 0]


def test_groups_unfreeze_at_milestones_with_discriminative_lrs():
    probe = Probe()
    module = model()
    fit(module, [GradualUnfreezing([1, 3], lr_mult=100), probe], max_epochs=4)
    assert module.hparams.lr_mult == 100  # reached the module before its optimizer was built
    seen = [e["trainable"] for e in probe.epochs]
    assert seen == [[5], [4, 5], [4, 5], [0, 1, 2, 3, 4, 5]]
    for e in probe.epochs:  # one optimizer for all epochs: fastai's slice(lr/100, lr)
        assert e["peaks"] == pytest.approx([1e-2 / 100 ** ((5 - i) / 5) for i in range(6)])
        assert e["bn1_trainable"]  # train_bn: BatchNorm of the frozen stem still learns
    # AdamW moments: frozen params never get state, so a newly unfrozen group starts fresh.
    assert [e["conv1_state"] for e in probe.epochs] == [False, False, False, False]
    assert [e["head_steps"] for e in probe.epochs] == [0, 1, 2, 3]
    assert [e["layer4_steps"] for e in probe.epochs] == [0, 0, 1, 2]
    assert module.backbone.conv1[0].weight.requires_grad


def test_resume_restores_frozen_boundary(tmp_path):
    module = model()
    trainer = fit(module, [GradualUnfreezing([1, 3])], max_epochs=2)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]["GradualUnfreezing"] == {"frozen_to": 4}

    # state_dict round trip alone re-applies freeze_to on a fresh module
    fresh, cb = model(), GradualUnfreezing([1, 3])
    cb.load_state_dict({"frozen_to": 4})
    cb.on_fit_start(None, fresh)
    assert not fresh.backbone.layer3[0].conv1.weight.requires_grad
    assert fresh.backbone.layer4[0].conv1.weight.requires_grad

    probe = Probe()
    resumed = model()
    fit(resumed, [GradualUnfreezing([1, 3]), probe], max_epochs=4, ckpt_path=tmp_path / "last.ckpt")
    assert [e["trainable"] for e in probe.epochs] == [[4, 5], [0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"milestones": [3, 1]}, "increasing"),
        ({"milestones": []}, "empty"),
        ({"milestones": [1], "lr_mult": 0.5}, "lr_mult"),
        ({"milestones": [1], "initial_trainable": 0}, "initial_trainable"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(LightcycleError, match=message):
        GradualUnfreezing(**kwargs)


def test_cli_section():
    from omegaconf import OmegaConf

    from lightcycle.run.callbacks import unfreeze_section

    assert unfreeze_section(OmegaConf.create({"unfreeze": {"milestones": None, "lr_mult": 10}})) == []
    (cb,) = unfreeze_section(OmegaConf.create({"unfreeze": {"milestones": [2, 4], "lr_mult": 10}}))
    assert cb.milestones == [2, 4] and cb.lr_mult == 10
    with pytest.raises(LightcycleError, match="unknown setting"):
        unfreeze_section(OmegaConf.create({"unfreeze": {"milestones": [2], "lr_multi": 10}}))


def test_messages_count_epochs_from_one_like_the_epoch_log(caplog):
    """milestones=[1] unfreezes before the second epoch, which the epoch log calls `epoch 2/2`."""
    import logging

    with caplog.at_level(logging.INFO, logger="lightcycle"):
        fit(model(), [GradualUnfreezing([1])], max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unfreeze: epoch")]
    assert len(lines) == 1 and lines[0].startswith("unfreeze: epoch 2: groups 0-"), lines
