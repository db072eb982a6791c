import pytest
import torch

from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask

TASK = ClassificationTask(["cat", "dog"])


def test_no_weight_decay_on_norm_and_bias():
    model = VisionModule(TASK, backbone="resnet18", pretrained=False, wd=0.01)
    groups = model.param_groups()
    for g in groups:
        if g["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in g["params"])
        else:
            assert all(p.ndim <= 1 for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_discriminative_lrs_are_geometric():
    model = VisionModule(TASK, backbone="resnet18", pretrained=False, lr=1e-2, lr_mult=100)
    lrs = model.group_lrs()
    assert len(lrs) == 6  # stem, 4 stages, head
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([100 ** (1 / 5)] * 5)


def test_a_slice_of_one_lr_gives_every_body_group_a_tenth():
    # fastai's Optimizer.set_hyper for slice(lr): [lr / 10] * (groups - 1) + [lr], what fine_tune's frozen stage uses
    model = VisionModule(TASK, backbone="resnet18", pretrained=False, lr=2e-3, lr_mult=10, lr_spread="body")
    assert model.group_lrs() == pytest.approx([2e-4] * 5 + [2e-3])
    by_group = {g["name"]: g["lr"] for g in model.param_groups()}
    assert by_group["group0_decay"] == pytest.approx(2e-4) and by_group["group5_decay"] == pytest.approx(2e-3)
    with pytest.raises(LightcycleError, match="model.lr_spread must be one of geometric, body"):
        VisionModule(TASK, backbone="resnet18", pretrained=False, lr_spread="flat")


def test_freeze_keeps_batchnorm_trainable():
    model = VisionModule(TASK, backbone="resnet18", pretrained=False)
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

    model = VisionModule(TASK, backbone="resnet18", pretrained=False)
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


def _fit_one_epoch(image_folder, **module_args):
    import lightning as L

    from lightcycle.data import FolderDataModule

    dm = FolderDataModule(root=image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, **module_args)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_train_batches=2)
    trainer.fit(model, datamodule=dm)
    return model, trainer


def test_channels_last_trains_with_nhwc_weights(image_folder):
    model, trainer = _fit_one_epoch(image_folder, channels_last=True)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


@pytest.mark.slow
def test_compile_keeps_checkpoint_keys(image_folder):
    # backend=eager runs the torch.compile machinery (dynamo tracing) without minutes of codegen on CPU
    model, trainer = _fit_one_epoch(image_folder, compile={"backend": "eager"})
    assert model.backbone._compiled_call_impl is not None  # nn.Module.compile: compiled in place
    assert set(model.state_dict()) == set(VisionModule(model.task, backbone="test_resnet", pretrained=False).state_dict())
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_bad_compile_setting_is_rejected():
    with pytest.raises(LightcycleError, match="model.compile"):
        VisionModule(TASK, backbone="test_resnet", pretrained=False, compile=3)


def test_frozen_batchnorm_without_train_bn_keeps_its_statistics():
    """fastai 0.7's freeze (train_bn off): a frozen body's BatchNorm stays in eval mode, so a training step
    neither uses batch statistics nor moves the running ones (what precomputed activations were cached with)."""
    model = VisionModule(TASK, backbone="test_resnet", pretrained=False, train_bn=False, channels_last=False)
    model.freeze_to(-1)
    model.train()
    body_bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert body_bn and not any(m.training for m in body_bn)
    before = [m.running_mean.clone() for m in body_bn]
    eval_out = model.eval()(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    model.train()
    model.head.eval()  # dropout off: only BatchNorm could make the two passes differ
    train_out = model(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(train_out, eval_out, atol=1e-6)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, body_bn))

    model.freeze_to(0)  # unfrozen: BatchNorm trains again
    assert all(m.training for m in body_bn)
    model.bn_freeze = True  # fastai 0.7's learn.bn_freeze(True): statistics kept, weights still train
    model.train()
    assert not any(m.training for m in body_bn) and all(m.weight.requires_grad for m in body_bn)
    with_bn = VisionModule(TASK, backbone="test_resnet", pretrained=False, train_bn=True)
    with_bn.freeze_to(-1)
    with_bn.train()
    assert all(m.training for m in with_bn.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_carried_optimizer_state_is_copied_into_the_next_optimizer():
    from lightcycle.module import carry_optimizer_state

    model = VisionModule(TASK, backbone="test_resnet", pretrained=False)
    first = torch.optim.AdamW(model.param_groups(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    first.step()
    second = torch.optim.AdamW(model.param_groups(), lr=1e-3)
    assert carry_optimizer_state(second, first.state) == len(list(model.parameters()))
    p = next(model.parameters())
    assert torch.equal(second.state[p]["exp_avg"], first.state[p]["exp_avg"])
    second.step()  # the next optimizer's steps leave the carried state as it was (an LR range test's may not move it)
    assert int(first.state[p]["step"]) == 1 and int(second.state[p]["step"]) == 2
