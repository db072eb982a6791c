import pytest
import torch

from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask

TASK = ClassificationTask(["cat", "dog"])


def test_no_weight_decay_on_norm_and_bias():
    model = VisionModule(TASK, backbone="resnet18", wd=0.01)
    groups = model.param_groups()
    for g in groups:
        if g["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in g["params"])
        else:
            assert all(p.ndim <= 1 for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_discriminative_lrs_are_geometric():
    model = VisionModule(TASK, backbone="resnet18", lr=1e-2, lr_mult=100)
    lrs = model.group_lrs()
    assert len(lrs) == 6  # stem, 4 stages, head
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([100 ** (1 / 5)] * 5)


def test_freeze_keeps_batchnorm_trainable():
    model = VisionModule(TASK, backbone="resnet18")
    model.freeze_to(-1)
    assert not model.backbone.conv1.weight.requires_grad
    assert model.backbone.bn1.weight.requires_grad  # train_bn
    assert all(p.requires_grad for p in model.head.parameters())
    model.freeze_to(0)
    assert all(p.requires_grad for p in model.parameters())


def test_bad_lr_is_rejected():
    with pytest.raises(LightcycleError, match="model.lr"):
        VisionModule(TASK, lr="fast")


def test_checkpoint_keeps_class_names_and_loads_weights_only(tmp_path):
    import lightning as L

    model = VisionModule(TASK, backbone="resnet18")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    raw = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["task"]["class_names"] == ["cat", "dog"]
    loaded = VisionModule.load(tmp_path / "m.ckpt")
    assert loaded.task.class_names == ["cat", "dog"]
    x = torch.randn(2, 3, 32, 32)
    model.eval(), loaded.eval()
    assert torch.allclose(model(x), loaded(x))
